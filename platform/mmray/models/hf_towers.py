"""The towers of a Hugging Face CLIP or SigLIP model as mmray towers, and the pair as a `DualEncoder` with
the checkpoint's own projections, logit scale and (SigLIP) logit bias."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmray.config.model import HfDualEncoderConfig
from mmray.errors import ConfigError
from mmray.models.dual_encoder import DualEncoder
from mmray.models.freezing import FreezableTower
from mmray.models.outputs import EncoderOutput

_BEFORE_BLOCKS = ("embeddings", "pre_layrnorm")


class HfTower(FreezableTower):
    """A Hugging Face transformer as a tower, frozen by depth: embeddings (and CLIP's pre-norm) before its blocks
    (`encoder.layer(s)`), final norms and heads after them."""

    def __init__(self, model: Any, trainable_blocks: int | None) -> None:
        super().__init__()
        self.model = model
        self.out_dim = int(model.config.hidden_size)
        encoder = getattr(model, "encoder", None)
        blocks = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        if blocks is None:
            raise ValueError(f"cannot find the transformer layers of {type(model).__name__} to freeze")
        children = dict(model.named_children())
        before = [children[name] for name in _BEFORE_BLOCKS if name in children]
        after = [module for name, module in children.items() if name not in (*_BEFORE_BLOCKS, "encoder")]
        self.freeze(list(blocks), trainable_blocks, before=before, after=after)


class HfVisionTower(HfTower):
    """A CLIP / SigLIP vision transformer. Pooled: CLIP's post-norm class token, or SigLIP's attention-pooling
    head; tokens: the patch cells in row-major order (CLIP's class token left out), so they form a square grid."""

    def forward(self, images: torch.Tensor) -> EncoderOutput:  # images: (B, 3, S, S)
        output = self.model(pixel_values=images)
        skip_class_token = hasattr(self.model, "pre_layrnorm")  # CLIP
        cells = output.last_hidden_state[:, 1:] if skip_class_token else output.last_hidden_state  # (B, N, D)
        mask = torch.ones(cells.shape[:2], dtype=torch.bool, device=cells.device)  # (B, N)
        return EncoderOutput(pooled=output.pooler_output, tokens=cells, mask=mask)


class HfTextTower(HfTower):
    """A CLIP / SigLIP text transformer without its projection. Pooled: CLIP's state at the first EOS, or
    SigLIP's at the last position; `use_mask`: False for SigLIP, which was trained attending to its padding."""

    def __init__(self, model: Any, trainable_blocks: int | None, use_mask: bool) -> None:
        super().__init__(model, trainable_blocks)
        self.use_mask = use_mask

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:  # ids, mask: (B, L)
        attention = mask.long() if self.use_mask else None
        output = self.model(input_ids=ids, attention_mask=attention)
        return EncoderOutput(pooled=output.pooler_output, tokens=output.last_hidden_state, mask=mask)  # (B, D)


class PretrainedDualEncoder(DualEncoder):
    """A pretrained image–text pair: its towers, projections (SigLIP's image side has none: its pooling head
    ends in the shared space), logit scale without mmray's clamp (SigLIP's exceeds 100) and optional bias;
    `hf_config` is the checkpoint's config, which bundles keep."""

    def __init__(self, model: Any, config: HfDualEncoderConfig, hf_config: Any) -> None:
        """`model`: the whole `CLIPModel` / `SiglipModel`, whose parts it takes over."""
        clip = hf_config.model_type == "clip"
        image_projection: nn.Module
        if clip:
            image_projection, text_projection, bias = model.visual_projection, model.text_projection, None
        else:
            if not model.vision_model.use_head:
                raise ConfigError("a SigLIP vision tower without its attention-pooling head (vision_use_head: false)")
            image_projection, text_projection, bias = nn.Identity(), model.text_model.head, model.logit_bias
            model.text_model.head = nn.Identity()
        image_encoder = HfVisionTower(model.vision_model, config.image.trainable_blocks)
        text_encoder = HfTextTower(model.text_model, config.text.trainable_blocks, use_mask=clip)
        learn = config.learn_temperature
        super().__init__(image_encoder, text_encoder, image_projection, text_projection, 0.07, learn)
        self.hf_config = hf_config
        with torch.no_grad():
            self.log_logit_scale.copy_(model.logit_scale.detach().reshape(()))
        if bias is not None:
            self.logit_bias = nn.Parameter(bias.detach().reshape(()).clone(), requires_grad=learn)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()

    def logits(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Image–text logits as the checkpoint computes them: scale · cosine (+ bias). -> (B_img, B_txt)"""
        logits = self.logit_scale * self.embed_images(images) @ self.embed_texts(ids, mask).T  # (B_img, B_txt)
        return logits + self.logit_bias if self.logit_bias is not None else logits
