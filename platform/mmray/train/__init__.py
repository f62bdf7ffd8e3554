"""Distributed training on Ray Train: the per-worker loop, checkpoints and the trainer."""
