"""The caption task's evaluation is shared between ranks (each decodes and encodes its share) with the
figures of one process, and a frozen image tower encodes the training images for the nearest-neighbour
baseline once per run, not at every evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import torch.multiprocessing as mp

from tests.support.caption_eval import evaluate, prepared, read_rank, two_rank_worker
from tests.support.ports import free_port


def test_two_ranks_evaluate_as_one_process_each_doing_half(tmp_path: Path) -> None:
    data = prepared(tmp_path / "data", tmp_path / "runs", train_image_tower=True)
    alone, encoded_alone = evaluate(data, 0, 1)
    mp.spawn(two_rank_worker, args=(data, str(tmp_path), free_port()), nprocs=2, join=True)
    ranks = [read_rank(tmp_path, rank) for rank in (0, 1)]
    for rank in ranks:
        assert rank["metrics"].keys() == alone.keys() and "nn_cider_d" in alone
        for key, value in alone.items():  # the loss summed in other batches: float rounding apart
            assert math.isclose(rank["metrics"][key], value, rel_tol=1e-3 if key == "val_loss" else 1e-9), key
    assert sum(rank["encoded"] for rank in ranks) == encoded_alone, "every image encoded once over the ranks"
    assert max(rank["encoded"] for rank in ranks) <= encoded_alone // 2 + 10


def test_a_frozen_image_tower_encodes_the_training_images_once(tmp_path: Path) -> None:
    data = prepared(tmp_path / "data", tmp_path / "runs", train_image_tower=False)
    assert data.train_tensors is not None
    once, encoded_once = evaluate(data, 0, 1, times=1)
    twice, encoded_twice = evaluate(data, 0, 1, times=2)
    assert twice == once
    assert encoded_twice == 2 * encoded_once - data.train_tensors.num_images

    trained = prepared(tmp_path / "data", tmp_path / "runs", train_image_tower=True)
    _, trained_once = evaluate(trained, 0, 1, times=1)
    _, trained_twice = evaluate(trained, 0, 1, times=2)
    assert trained_twice == 2 * trained_once, "a training tower's vectors change: encoded at each evaluation"
