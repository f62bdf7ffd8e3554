"""A continued run keeps another run's optimizer moments and step count under its own settings."""

from __future__ import annotations

import pytest
import torch

from mmray.train.loop import optimizer_for
from mmray.train.schedule import group_settings, retarget, warmup_cosine


def _trained(lr: float, weight_decay: float, steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    weight, bias = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(3))
    optimizer = optimizer_for([weight, bias], lr, weight_decay)
    schedule = warmup_cosine(optimizer, total_steps=20, warmup_steps=4, min_ratio=0.0)
    for _ in range(steps):
        (weight.sum() + bias.square().sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
    return optimizer, schedule


def test_retarget_applies_the_new_lr_and_decay_at_the_restored_step() -> None:
    donor, donor_schedule = _trained(lr=1e-2, weight_decay=0.05, steps=7)
    optimizer, schedule = _trained(lr=3e-4, weight_decay=0.2, steps=0)
    fresh = group_settings(optimizer)
    optimizer.load_state_dict(donor.state_dict())
    schedule.load_state_dict(donor_schedule.state_dict())
    assert optimizer.param_groups[0]["lr"] == donor.param_groups[0]["lr"], "loading brings the donor's settings"

    retarget(optimizer, schedule, fresh)

    factor = donor.param_groups[0]["lr"] / 1e-2  # the schedule's multiplier after 7 of 20 steps
    assert schedule.last_epoch == 7 and 0.0 < factor < 1.0
    assert [g["lr"] for g in optimizer.param_groups] == [3e-4 * factor] * 2
    assert schedule.get_last_lr() == [3e-4 * factor] * 2 and schedule.base_lrs == [3e-4, 3e-4]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]
    donor_moments = [donor.state[p]["exp_avg"] for p in donor.param_groups[0]["params"]]
    moments = [optimizer.state[p]["exp_avg"] for p in optimizer.param_groups[0]["params"]]
    assert all(torch.equal(a, b) for a, b in zip(donor_moments, moments, strict=True))

    schedule.step()
    donor_schedule.step()
    assert abs(optimizer.param_groups[0]["lr"] / donor.param_groups[0]["lr"] - 3e-4 / 1e-2) < 1e-9


def test_towers_learn_at_their_own_scale_of_the_lr() -> None:
    from mmray.config.model import DualEncoderConfig
    from mmray.models.factory import build_dual_encoder, build_dual_encoder_processor
    from mmray.train.loop import layer_lr_scales

    config = DualEncoderConfig(embed_dim=16)
    model = build_dual_encoder(config, build_dual_encoder_processor(config, ["a red circle"]))
    towers = set(layer_lr_scales(model, 1.0, 1.0))
    assert towers == {id(p) for p in [*model.image_encoder.parameters(), *model.text_encoder.parameters()]}
    assert not towers & {id(p) for p in model.image_projection.parameters()}

    parameters = list(model.parameters())
    plain = optimizer_for(parameters, 1e-3, 0.05, lr_scales=layer_lr_scales(model, 1.0, 1.0))
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3], "scale 1: the groups of before"
    gentle = optimizer_for(parameters, 1e-3, 0.05, lr_scales=layer_lr_scales(model, 0.1, 1.0))
    by_lr: dict[float, set[int]] = {}
    for group in gentle.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert by_lr == {1e-3: {id(p) for p in parameters} - towers, 1e-3 * 0.1: towers}
    schedule = warmup_cosine(gentle, total_steps=10, warmup_steps=0, min_ratio=0.0)
    gentle.step()
    schedule.step()
    assert gentle.param_groups[2]["lr"] / gentle.param_groups[0]["lr"] == pytest.approx(0.1)
