from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mmray.config.training import ContrastiveLossConfig, InfoNceLossConfig, TripletLossConfig
from tests.support.ddp_grads import ddp_worker, single_process_gradients
from tests.support.ports import free_port

CONFIGS = [
    InfoNceLossConfig(kind="infonce"),
    TripletLossConfig(kind="triplet", mining="hardest"),
    TripletLossConfig(kind="triplet", mining="all"),
    ContrastiveLossConfig(kind="contrastive", negatives="sampled", negatives_per_positive=2),
    ContrastiveLossConfig(kind="contrastive"),
    ContrastiveLossConfig(kind="contrastive", negatives="semi_hard", margin=1.5),
    ContrastiveLossConfig(kind="contrastive", negatives="active"),
]


@pytest.fixture(scope="module")
def two_rank_gradients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every config's gradients from one two-process gloo run (one spawn: its start-up is most of the cost)."""
    out = tmp_path_factory.mktemp("ddp-grads")
    mp.spawn(ddp_worker, args=(2, free_port(), CONFIGS, str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize(
    "index",
    range(len(CONFIGS)),
    ids=[
        "infonce",
        "triplet",
        "triplet-all",
        "contrastive-sampled",
        "contrastive-weighted",
        "contrastive-semi-hard",
        "contrastive-active",
    ],
)
def test_two_rank_gradients_equal_single_process_on_the_global_batch(index: int, two_rank_gradients: Path) -> None:
    config = CONFIGS[index]
    expected = single_process_gradients(config)  # type: ignore[arg-type]
    for rank in range(2):
        got = torch.load(two_rank_gradients / f"{index}-rank{rank}.pt")
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Each rank computes its own rows' loss against the gathered batch; the value shown is the global one.
    assert ("log_logit_scale" in expected) == isinstance(config, InfoNceLossConfig)
