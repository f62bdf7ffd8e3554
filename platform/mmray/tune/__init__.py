"""Hyperparameter search with Ray Tune: search spaces over training jobs, the per-trial driver that
runs a Ray Train run, and the search's results."""
