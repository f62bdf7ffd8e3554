"""Frozen means frozen: no gradients and fixed normalisation statistics, whatever mode the model is in."""

from __future__ import annotations

import torch
from torch import nn

from mmray.config.model import SmallTransformerConfig, TorchvisionConfig
from mmray.models.image_encoders import TorchvisionEncoder
from mmray.models.text_encoders import SmallTransformer


def _norm_statistics(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k or "num_batches" in k}


def _train_steps(tower: nn.Module, steps: int = 3) -> None:
    head = nn.Linear(512, 1)
    trainable = [p for p in tower.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    tower.train()
    for _ in range(steps):
        loss = head(tower(torch.randn(4, 3, 64, 64) * 3 + 1).pooled).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_frozen_torchvision_tower_keeps_weights_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    tower = TorchvisionEncoder(TorchvisionConfig(kind="torchvision", name="resnet18", trainable_blocks=0))
    before, weights = _norm_statistics(tower), {k: v.clone() for k, v in tower.state_dict().items()}
    _train_steps(tower)
    assert not tower.training and not any(m.training for m in tower.modules()), "train() leaves it in eval mode"
    after = tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "batch-norm statistics did not move"
    assert all(torch.equal(weights[k], after[k]) for k in weights)


def test_partly_trainable_tower_freezes_early_blocks_only() -> None:
    torch.manual_seed(0)
    tower = TorchvisionEncoder(TorchvisionConfig(kind="torchvision", name="resnet18", trainable_blocks=1))
    before = _norm_statistics(tower)
    _train_steps(tower)
    after = tower.state_dict()
    changed = {k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"4"}, "only layer4 (the last block) updates its statistics"
    assert tower.features[4].training and not tower.features[0].training


def test_layers_after_the_last_block_train_with_it() -> None:
    config = SmallTransformerConfig(kind="small_transformer", width=16, heads=2, layers=2, trainable_blocks=1)
    tower = SmallTransformer(config, vocab_size=20)
    trainable = {name.split(".")[0] for name, p in tower.named_parameters() if p.requires_grad}
    assert trainable == {"layers", "norm"}, "the final norm above the trained block trains; embeddings do not"
    frozen_tower = SmallTransformer(config.model_copy(update={"trainable_blocks": 0}), vocab_size=20)
    assert not any(p.requires_grad for p in frozen_tower.parameters())
