"""Fusion modules: a `Modality` per tower (None when missing) → one fused vector (B, out_dim). Weighted sum,
gated fusion and the single-modality baselines accept one modality missing; concatenation and attention
raise `MissingModalityError`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mmray.config.fusion import (
    AttentionFusionConfig,
    ConcatFusionConfig,
    FusionConfig,
    GatedFusionConfig,
    SingleModalityConfig,
    WeightedSumFusionConfig,
)
from mmray.errors import MissingModalityError
from mmray.models.text_encoders import masked_mean


@dataclass
class Modality:
    """One tower's output for fusion: its L2-normalised embedding and its token / cell features."""

    embedding: torch.Tensor  # (B, E)
    tokens: torch.Tensor  # (B, N, D)
    mask: torch.Tensor  # (B, N) bool, True where real


@dataclass(frozen=True)
class FusionDims:
    """Sizes a fusion module is built for: the shared embedding and each tower's token features."""

    embed_dim: int
    image_token_dim: int
    text_token_dim: int


class Fusion(nn.Module):
    """Base: `out_dim` is the fused width; `modalities` names the towers whose outputs are read."""

    out_dim: int
    modalities: tuple[str, ...] = ("image", "text")

    def require_both(self, image: Modality | None, text: Modality | None) -> tuple[Modality, Modality]:
        if image is not None and text is not None:
            return image, text
        missing = [name for name, m in (("image", image), ("text", text)) if m is None]
        raise MissingModalityError(
            f"{type(self).__name__} fuses both modalities; the {' and '.join(missing)} input is missing "
            "(weighted_sum and gated fusion accept one modality)"
        )


def lone_modality(image: Modality | None, text: Modality | None) -> Modality:
    """The one modality given, for fusions that accept the other missing."""
    if image is not None:
        return image
    if text is not None:
        return text
    raise MissingModalityError("fusion needs at least one modality")


class WeightedSumFusion(Fusion):
    """α·z_img + (1 − α)·z_txt; a learned α is sigmoid(logit), so it stays in [0, 1]."""

    def __init__(self, config: WeightedSumFusionConfig, dims: FusionDims) -> None:
        super().__init__()
        self.out_dim = dims.embed_dim
        self.fixed_alpha: float | None = None if config.learn_alpha else config.alpha
        start = min(max(config.alpha, 1e-4), 1 - 1e-4)
        self.alpha_logit = nn.Parameter(torch.tensor(math.log(start / (1 - start))), requires_grad=config.learn_alpha)

    @property
    def alpha(self) -> torch.Tensor:
        """The image's weight, in [0, 1]. -> ()"""
        if self.fixed_alpha is not None:
            return torch.tensor(self.fixed_alpha, device=self.alpha_logit.device)
        return torch.sigmoid(self.alpha_logit)

    def forward(self, image: Modality | None, text: Modality | None) -> torch.Tensor:
        if image is None or text is None:
            return lone_modality(image, text).embedding  # (B, E)
        alpha = self.alpha.to(image.embedding.dtype)
        return alpha * image.embedding + (1 - alpha) * text.embedding  # (B, E)


def mlp(in_dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """`layers` blocks of Linear → GELU → Dropout, the first from `in_dim`, the rest `hidden` wide."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*blocks)


class ConcatFusion(Fusion):
    """[z_img; z_txt] → LayerNorm → MLP (the norm lifts unit-length inputs to unit scale per dimension,
    where the MLP's non-linearities act)."""

    def __init__(self, config: ConcatFusionConfig, dims: FusionDims) -> None:
        super().__init__()
        self.out_dim = config.hidden
        self.norm = nn.LayerNorm(2 * dims.embed_dim)
        self.mlp = mlp(2 * dims.embed_dim, config.hidden, config.layers, config.dropout)

    def forward(self, image: Modality | None, text: Modality | None) -> torch.Tensor:
        image, text = self.require_both(image, text)
        fused: torch.Tensor = self.mlp(self.norm(torch.cat([image.embedding, text.embedding], dim=-1)))  # (B, H)
        return fused


def grid_positions(cells: int, width: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions of a square feature map's cells (row-major). -> (cells, width)"""
    side = math.isqrt(cells)
    if side * side != cells or width % 4:
        raise ValueError(f"2-D positions need a square grid and a width divisible by 4, got {cells} cells, {width}")
    quarter = width // 4
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))  # (W/4,)
    coords = torch.arange(side, device=device, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (side, side) each
    angles_r = rows.reshape(-1, 1) * frequencies  # (cells, W/4)
    angles_c = cols.reshape(-1, 1) * frequencies  # (cells, W/4)
    return torch.cat([angles_r.sin(), angles_r.cos(), angles_c.sin(), angles_c.cos()], dim=-1)  # (cells, W)


def _decoder(config: AttentionFusionConfig, layers: int) -> nn.TransformerDecoder:
    """Pre-norm decoder layers: self-attention, cross-attention to the other modality, MLP."""
    layer = nn.TransformerDecoderLayer(
        config.width,
        config.heads,
        dim_feedforward=2 * config.width,
        dropout=config.dropout,
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerDecoder(layer, layers)


class AttentionFusion(Fusion):
    """Cross-attention both ways between text tokens and image cells (2-D positions added) → [text side;
    cell mean; cell max; z_img; z_txt]. Text side (`layers`): the masked mean of text tokens attending to
    the cells; cell side (`cell_layers`): mean and max of cells attending to the text (whether any cell,
    and how many, match it)."""

    def __init__(self, config: AttentionFusionConfig, dims: FusionDims) -> None:
        super().__init__()
        cell_parts = 2 if config.cell_layers else 0
        self.out_dim = (1 + cell_parts) * config.width + 2 * dims.embed_dim
        self.image_in = nn.Linear(dims.image_token_dim, config.width)
        self.text_in = nn.Linear(dims.text_token_dim, config.width)
        self.text_side = _decoder(config, config.layers)
        self.cell_side = _decoder(config, config.cell_layers) if config.cell_layers else None
        self.text_norm = nn.LayerNorm(config.width)
        self.cell_norm = nn.LayerNorm(config.width) if config.cell_layers else None

    def forward(self, image: Modality | None, text: Modality | None) -> torch.Tensor:
        image, text = self.require_both(image, text)
        cells = self.image_in(image.tokens)  # (B, N, W)
        cells = cells + grid_positions(cells.shape[1], cells.shape[2], cells.device).to(cells.dtype)
        words = self.text_in(text.tokens)  # (B, L, W)
        no_cell, no_word = ~image.mask, ~text.mask  # (B, N), (B, L)
        attended = self.text_side(words, cells, tgt_key_padding_mask=no_word, memory_key_padding_mask=no_cell)
        parts = [masked_mean(self.text_norm(attended), text.mask)]  # [(B, W)]
        if self.cell_side is not None and self.cell_norm is not None:
            matched = self.cell_norm(
                self.cell_side(cells, words, tgt_key_padding_mask=no_cell, memory_key_padding_mask=no_word)
            )  # (B, N, W)
            parts.append(masked_mean(matched, image.mask))  # (B, W)
            parts.append(matched.masked_fill(no_cell.unsqueeze(-1), float("-inf")).amax(dim=1))  # (B, W)
        return torch.cat([*parts, image.embedding, text.embedding], dim=-1)  # (B, out_dim)


class GatedFusion(Fusion):
    """Gated multimodal unit (Arevalo et al., 2017): h = g·tanh(W_i x_img) + (1 − g)·tanh(W_t x_txt),
    g = σ(W_g [x_img; x_txt]) per dimension, x = √E·z (unit scale per dimension); with one modality
    missing, h is that modality's part."""

    def __init__(self, config: GatedFusionConfig, dims: FusionDims) -> None:
        super().__init__()
        self.out_dim = config.hidden
        self.scale = math.sqrt(dims.embed_dim)
        self.image = nn.Linear(dims.embed_dim, config.hidden)
        self.text = nn.Linear(dims.embed_dim, config.hidden)
        self.gate = nn.Linear(2 * dims.embed_dim, config.hidden)

    def part(self, layer: nn.Linear, modality: Modality) -> torch.Tensor:
        return torch.tanh(layer(self.scale * modality.embedding))  # (B, H)

    def forward(self, image: Modality | None, text: Modality | None) -> torch.Tensor:
        if image is None or text is None:
            return self.part(self.image if text is None else self.text, lone_modality(image, text))
        gate = torch.sigmoid(self.gate(self.scale * torch.cat([image.embedding, text.embedding], dim=-1)))  # (B, H)
        return gate * self.part(self.image, image) + (1 - gate) * self.part(self.text, text)  # (B, H)


class SingleModality(Fusion):
    """One modality's embedding as the fused vector (a baseline); the other input is ignored."""

    def __init__(self, config: SingleModalityConfig, dims: FusionDims) -> None:
        super().__init__()
        self.out_dim = dims.embed_dim
        self.modality = "image" if config.kind == "image_only" else "text"
        self.modalities = (self.modality,)

    def forward(self, image: Modality | None, text: Modality | None) -> torch.Tensor:
        chosen = image if self.modality == "image" else text
        if chosen is None:
            raise MissingModalityError(f"{self.modality}_only fusion needs the {self.modality} input")
        return chosen.embedding  # (B, E)


def build_fusion(config: FusionConfig, dims: FusionDims) -> Fusion:
    """The fusion module of `config.kind`."""
    if isinstance(config, WeightedSumFusionConfig):
        return WeightedSumFusion(config, dims)
    if isinstance(config, ConcatFusionConfig):
        return ConcatFusion(config, dims)
    if isinstance(config, AttentionFusionConfig):
        return AttentionFusion(config, dims)
    if isinstance(config, GatedFusionConfig):
        return GatedFusion(config, dims)
    return SingleModality(config, dims)
