"""The caption decoder (image → text), model kind `caption_decoder`: a causal transformer over caption tokens
cross-attending to the image tower's feature-map cells (with learned positions) and its pooled vector."""

from __future__ import annotations

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.generation import CaptionDecoderConfig
from mmray.config.model import ModelSection
from mmray.data.processor import Processor
from mmray.models.conditioning import ENCODER_KINDS, conditioning_encoder, encoder_model_kind
from mmray.models.dual_encoder import DualEncoder
from mmray.models.registry import register_model


class CaptionDecoder(nn.Module):
    """A pre-norm transformer decoder over caption tokens; output logits tied to the token embeddings."""

    def __init__(self, encoder: DualEncoder, config: CaptionDecoderConfig, processor: Processor) -> None:
        super().__init__()
        tokenizer, width = processor.tokenizer, config.width
        self.encoder = encoder
        self.max_length = tokenizer.max_length
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        image_size = processor.image.size
        with torch.no_grad():
            probe = encoder.image_encoder.eval()(torch.zeros(1, 3, image_size, image_size))
        encoder.image_encoder.train()
        cells, cell_dim, pooled_dim = probe.tokens.shape[1], probe.tokens.shape[2], probe.pooled.shape[1]
        self.cell_projection = nn.Linear(cell_dim, width)
        self.pooled_projection = nn.Linear(pooled_dim, width)
        self.cell_positions = nn.Parameter(torch.randn(1, cells + 1, width) * 0.02)
        self.token_embedding = nn.Embedding(tokenizer.vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # tied to the output: logits start near 0
        self.token_positions = nn.Parameter(torch.randn(1, self.max_length, width) * 0.02)
        layer = nn.TransformerDecoderLayer(
            width, config.heads, 4 * width, config.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, config.layers, norm=nn.LayerNorm(width))
        self.output = nn.Linear(width, tokenizer.vocab_size, bias=False)
        self.output.weight = self.token_embedding.weight

    def memory(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) → memory (B, N + 1, W): the pooled slot, then the cells."""
        features = self.encoder.encode_image_features(images)
        cells = self.cell_projection(features.tokens)  # (B, N, W)
        pooled = self.pooled_projection(features.pooled).unsqueeze(1)  # (B, 1, W)
        return torch.cat([pooled, cells], dim=1) + self.cell_positions

    def decode(self, memory: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Memory (B, M, W) and token prefixes (B, T) → next-token logits at every position (B, T, V)."""
        length = ids.shape[1]
        tokens = self.token_embedding(ids) + self.token_positions[:, :length]  # (B, T, W)
        # causal mask (T, T), True above the diagonal: position i attends to positions ≤ i only
        hidden = self.decoder(
            tokens,
            memory.to(tokens.dtype),
            tgt_mask=torch.triu(torch.ones(length, length, dtype=torch.bool, device=ids.device), diagonal=1),
            tgt_key_padding_mask=ids == self.pad_id,
            tgt_is_causal=True,
        )
        return self.output(hidden)  # type: ignore[no-any-return]

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: images (B, 3, S, S), captions (B, L) from BOS → logits (B, L - 1, V) for ids[:, 1:]."""
        return self.decode(self.memory(images), ids[:, :-1])


def build_caption_decoder(config: ModelSection, processor: Processor) -> CaptionDecoder:
    caption = of_kind(config, CaptionDecoderConfig, "a caption_decoder")
    encoder = conditioning_encoder(caption.encoder, processor, "image", caption.train_image_tower)
    return CaptionDecoder(encoder, caption, processor)


register_model("caption_decoder", encoder_model_kind(build_caption_decoder, ("caption",), ENCODER_KINDS))
