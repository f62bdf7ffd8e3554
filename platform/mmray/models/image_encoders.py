"""Image towers: a small CPU-friendly CNN and torchvision CNNs with their classifier removed."""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torchvision
from torch import nn

from mmray.config.model import SmallCnnConfig, TorchvisionConfig
from mmray.models.freezing import FreezableTower
from mmray.models.outputs import EncoderOutput
from mmray.models.weights import load_state_dict_strictly, read_state_dict


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def grid_output(features: torch.Tensor, pooled: torch.Tensor) -> EncoderOutput:
    """A feature map (B, C, h, w) as h*w tokens (B, h*w, C), all real, beside its pooled vector (B, C)."""
    tokens = features.flatten(2).transpose(1, 2)  # (B, h*w, C)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, h*w)
    return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)


class SmallCnn(FreezableTower):
    """Blocks of (stride-2 conv, conv), channels doubling; pooled = linear map of the flattened grid."""

    def __init__(self, config: SmallCnnConfig) -> None:
        super().__init__()
        grid = config.image_size // (2**config.blocks)  # ≥ 1: the config checks it
        channels = [3] + [config.width * 2**i for i in range(config.blocks)]
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(c_in, c_out, 2), _conv_bn_relu(c_out, c_out, 1))
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.out_dim = channels[-1]
        self.pool = nn.Linear(self.out_dim * grid * grid, self.out_dim)
        self.freeze(list(self.blocks), config.trainable_blocks, after=[self.pool])
        if config.weights:
            load_state_dict_strictly(self, read_state_dict(config.weights), source=config.weights)

    def forward(self, images: torch.Tensor) -> EncoderOutput:  # images: (B, 3, H, W)
        features = images
        for block in self.blocks:
            features = block(features)  # (B, C, h, w)
        return grid_output(features, self.pool(features.flatten(1)))


def _split_torchvision(name: str, model: Any) -> tuple[nn.Module, list[nn.Module], int]:
    """(feature extractor, its blocks in order, output channels) for a torchvision classifier."""
    if hasattr(model, "fc") and hasattr(model, "layer4"):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        blocks: list[nn.Module] = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
        return nn.Sequential(*blocks), blocks, int(model.fc.in_features)
    if hasattr(model, "features") and hasattr(model, "classifier"):
        features: nn.Module = model.features
        out = next(m for m in reversed(list(features.modules())) if isinstance(m, nn.Conv2d)).out_channels
        return features, list(features.children()), int(out)
    raise ValueError(
        f"torchvision model {name!r} is not supported: expected a ResNet-style (fc, layer4) or a "
        "features/classifier model (mobilenet, efficientnet, convnext, vgg, …)"
    )


class TorchvisionEncoder(FreezableTower):
    """A torchvision CNN by name; weights from a state dict file / s3:// or `torchvision:<ENUM>`."""

    def __init__(self, config: TorchvisionConfig) -> None:
        super().__init__()
        if config.name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown torchvision model {config.name!r}")
        weights = config.weights
        by_name = weights.split(":", 1)[1] if weights and weights.startswith("torchvision:") else None
        model = torchvision.models.get_model(config.name, weights=by_name)
        if weights and by_name is None:
            load_state_dict_strictly(
                model, read_state_dict(weights), source=weights, ignore_prefixes=("fc.", "classifier.")
            )
        self.features, blocks, self.out_dim = _split_torchvision(config.name, model)
        self.freeze(blocks, config.trainable_blocks)

    def forward(self, images: torch.Tensor) -> EncoderOutput:  # images: (B, 3, H, W)
        features = self.features(images)  # (B, C, h, w)
        return grid_output(features, features.flatten(2).transpose(1, 2).mean(dim=1))


def build_image_encoder(config: SmallCnnConfig | TorchvisionConfig) -> SmallCnn | TorchvisionEncoder:
    return SmallCnn(config) if isinstance(config, SmallCnnConfig) else TorchvisionEncoder(config)
