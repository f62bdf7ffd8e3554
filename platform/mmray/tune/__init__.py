"""Hyperparameter search with Ray Tune: spaces over training jobs, per-trial drivers of Ray Train runs, results."""
