"""A text → image task's sample evaluation is shared between ranks: each draws and embeds its share of the
R-precision samples (each row's noise from its own seeded generator), and every rank reports the figures of
one process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mmray.models.text_to_image import draw_noise
from tests.support.ports import free_port
from tests.support.sample_eval import evaluate, prepared, two_rank_worker


def test_a_rows_noise_does_not_depend_on_the_batch_it_is_drawn_in() -> None:
    generators = [torch.Generator().manual_seed(row) for row in range(5)]
    together = draw_noise(5, 3, torch.device("cpu"), generators)  # (5, 3)
    apart = [draw_noise(1, 3, torch.device("cpu"), [torch.Generator().manual_seed(row)]) for row in range(5)]
    assert torch.equal(together, torch.cat(apart))


def test_two_ranks_evaluate_samples_as_one_process_each_drawing_half(tmp_path: Path) -> None:
    data = prepared(tmp_path)
    alone, drawn_alone = evaluate(data, 0, 1)
    assert {"r_precision", "real_r_precision", "sample_diversity"} <= alone.keys()
    mp.spawn(two_rank_worker, args=(data, str(tmp_path), free_port()), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in ranks:
        assert rank["metrics"].keys() == alone.keys()
        for key, value in alone.items():  # losses summed in other batches: float rounding apart
            assert math.isclose(rank["metrics"][key], value, rel_tol=1e-4, abs_tol=1e-7), key
    grid = 2 * 2  # drawn on every rank
    assert drawn_alone == 21 + grid
    assert sorted(rank["drawn"] - grid for rank in ranks) == [10, 11], "each rank drew its share of the 21"
