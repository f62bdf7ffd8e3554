from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mmray.config.training import ContrastiveLossConfig, InfoNceLossConfig, TripletLossConfig
from tests.support.ddp_grads import ddp_worker, single_process_gradients


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "config",
    [
        InfoNceLossConfig(kind="infonce"),
        TripletLossConfig(kind="triplet", mining="hardest"),
        TripletLossConfig(kind="triplet", mining="all"),
        ContrastiveLossConfig(kind="contrastive", negatives="sampled", negatives_per_positive=2),
        ContrastiveLossConfig(kind="contrastive"),
        ContrastiveLossConfig(kind="contrastive", negatives="semi_hard", margin=1.5),
        ContrastiveLossConfig(kind="contrastive", negatives="active"),
    ],
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
def test_two_rank_gradients_equal_single_process_on_the_global_batch(config: object, tmp_path: Path) -> None:
    mp.spawn(ddp_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    expected = single_process_gradients(config)  # type: ignore[arg-type]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Each rank computes its own rows' loss against the gathered batch; the value shown is the global one.
    assert ("log_logit_scale" in expected) == isinstance(config, InfoNceLossConfig)
