"""Text towers: a small transformer, a GRU, and Hugging Face `AutoModel` encoders."""

from __future__ import annotations

import torch
from torch import nn

from mmray.config.model import GruConfig, SmallTransformerConfig
from mmray.models.freezing import FreezableTower
from mmray.models.outputs import EncoderOutput


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: tokens (B, L, D), mask (B, L) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # (B, D)


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`cls`: the first token; `mean`: the mean of real tokens. (B, L, D) -> (B, D)."""
    return tokens[:, 0] if pooling == "cls" else masked_mean(tokens, mask)


class SmallTransformer(FreezableTower):
    """Token + position embeddings, pre-norm transformer layers, final layer norm."""

    def __init__(self, config: SmallTransformerConfig, vocab_size: int) -> None:
        super().__init__()
        self.pooling = config.pooling
        self.out_dim = config.width
        self.embed = nn.Embedding(vocab_size, config.width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(config.max_length, config.width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            config.width,
            config.heads,
            dim_feedforward=4 * config.width,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        self.freeze(list(self.layers.layers), config.trainable_blocks, before=[self.embed], after=[self.norm])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:  # ids, mask: (B, L)
        hidden = self.embed(ids) + self.position[: ids.shape[1]]  # (B, L, D)
        hidden = self.layers(hidden, src_key_padding_mask=~mask)  # (B, L, D)
        tokens = self.norm(hidden)  # (B, L, D)
        return EncoderOutput(pooled=pool_tokens(tokens, mask, self.pooling), tokens=tokens, mask=mask)


class GruEncoder(FreezableTower):
    """A bidirectional GRU over word embeddings; `cls` pooling uses the final hidden states."""

    def __init__(self, config: GruConfig, vocab_size: int) -> None:
        super().__init__()
        if config.width % 2:
            raise ValueError(f"GRU width must be even (two directions), got {config.width}")
        self.pooling = config.pooling
        self.out_dim = config.width
        self.embed = nn.Embedding(vocab_size, config.width, padding_idx=0)
        self.gru = nn.GRU(
            config.width, config.width // 2, num_layers=config.layers, batch_first=True, bidirectional=True
        )
        self.freeze([self.embed, self.gru], config.trainable_blocks)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:  # ids, mask: (B, L)
        lengths = mask.sum(dim=1).clamp_min(1).cpu()  # (B,)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        output, final = self.gru(packed)  # final: (layers*2, B, D/2)
        tokens, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=ids.shape[1])
        if self.pooling == "cls":
            pooled = torch.cat([final[-2], final[-1]], dim=-1)  # (B, D)
        else:
            pooled = masked_mean(tokens, mask)  # (B, D)
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)
