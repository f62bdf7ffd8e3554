"""The closed-form start of a dual encoder's linear heads: each modality's frozen features reduced by PCA,
then the orthogonal map best carrying each image's components onto its captions' (orthogonal Procrustes):
the classic training-free retrieval baseline, where heads starting from it begin."""

from __future__ import annotations

import torch
from torch import nn

from mmray.errors import ConfigError
from mmray.models.dual_encoder import DualEncoder

AffineMap = tuple[torch.Tensor, torch.Tensor]
"""(weight (E, D), bias (E,)) of `x ↦ x @ weight.T + bias`: what an `nn.Linear` head computes."""


def _pca_basis(features: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (D,) and the top `components` principal directions (D, k) of the rows of `features`."""
    mean = features.mean(0)  # (D,)
    basis = torch.linalg.svd(features - mean, full_matrices=False).Vh[:components].T  # (D, k)
    return mean, basis


@torch.no_grad()
def procrustes_maps(
    image_features: torch.Tensor,  # (N, D_img): each training image once
    text_features: torch.Tensor,  # (C, D_txt): every training caption
    caption_image: torch.Tensor,  # (C,): each caption's image row
    embed_dim: int,
) -> tuple[AffineMap, AffineMap, int]:
    """Image and text maps into `embed_dim` dimensions and k: PCA of each modality to k components (at most
    the embedding's size and either centred feature matrix's rank), the image side then rotated onto the text
    side; dimensions past k are zero. ConfigError when fewer than 2 images or captions leave nothing to align."""
    images, texts = image_features.double(), text_features.double()
    k = min(embed_dim, images.shape[0] - 1, texts.shape[0] - 1, images.shape[1], texts.shape[1])
    if k < 1:
        raise ConfigError(
            f"model.init_projections=procrustes needs at least 2 training images and captions, "
            f"got {images.shape[0]} images and {texts.shape[0]} captions"
        )
    image_mean, image_basis = _pca_basis(images, k)  # (D_img,), (D_img, k)
    text_mean, text_basis = _pca_basis(texts, k)  # (D_txt,), (D_txt, k)
    a = nn.functional.normalize((images[caption_image] - image_mean) @ image_basis, dim=-1)  # (C, k)
    b = nn.functional.normalize((texts - text_mean) @ text_basis, dim=-1)  # (C, k)
    u, _, vh = torch.linalg.svd(a.T @ b)  # (k, k), (k,), (k, k)
    rotation = u @ vh  # (k, k): a @ rotation ≈ b
    image_weight = (image_basis @ rotation).T  # (k, D_img)
    text_weight = text_basis.T  # (k, D_txt)
    return (
        _padded(image_weight, -image_weight @ image_mean, embed_dim),
        _padded(text_weight, -text_weight @ text_mean, embed_dim),
        k,
    )


def _padded(weight: torch.Tensor, bias: torch.Tensor, embed_dim: int) -> AffineMap:
    """A (k, D) map grown to (embed_dim, D) with zero rows (they leave every cosine unchanged)."""
    rows = embed_dim - weight.shape[0]
    return nn.functional.pad(weight, (0, 0, 0, rows)).float(), nn.functional.pad(bias, (0, rows)).float()


def _linear_head(head: nn.Module, side: str, in_dim: int) -> nn.Linear:
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"model.init_projections=procrustes needs linear projection heads (model.projection: linear), "
            f"the {side} head is a {type(head).__name__}"
        )
    if head.bias is None:
        raise ConfigError(
            f"model.init_projections=procrustes needs heads with a bias (the features' mean), the {side} head has none"
        )
    if head.in_features != in_dim:
        raise ConfigError(f"the {side} head takes {head.in_features} features, the features given have {in_dim}")
    return head


@torch.no_grad()
def start_from_procrustes(
    model: DualEncoder,
    image_features: torch.Tensor,  # (N, D_img)
    text_features: torch.Tensor,  # (C, D_txt)
    caption_image: torch.Tensor,  # (C,)
) -> int:
    """Set the model's linear heads (else ConfigError) to the Procrustes maps of these (frozen, training)
    features as the heads read them (`model.head_input`); returns the number of aligned dimensions."""
    image_head = _linear_head(model.image_projection, "image", image_features.shape[1])
    text_head = _linear_head(model.text_projection, "text", text_features.shape[1])
    image_inputs, text_inputs = model.head_input(image_features), model.head_input(text_features)
    image_map, text_map, aligned = procrustes_maps(image_inputs, text_inputs, caption_image, model.embed_dim)
    for head, (weight, bias) in ((image_head, image_map), (text_head, text_map)):
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
    return aligned
