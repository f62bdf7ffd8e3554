"""Model configs, chosen by `model.kind`: the dual encoder and a pretrained CLIP / SigLIP pair used as one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, model_validator

from mmray.config.base import AttentionSection, Section
from mmray.config.registry import KindRegistry

Orientation = Literal["exif", "stored"]
LEGACY_ORIENTATION: Orientation = "stored"
"""What bundles, prepared splits and recorded jobs made before the orientation setting did."""
ORIENTATION: Any = Field(
    "exif",
    description="exif: turn each image as its EXIF orientation tag says (phone photos are stored sideways), as "
    "viewers show it; stored: the pixels as stored, as models saved before this setting read them",
)
HF_TRAINABLE_BLOCKS: Any = Field(
    None, ge=0, description="None: train everything; 0: freeze the tower; N: train its last N transformer blocks"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _ImageTower(Section):
    image_size: int = Field(64, ge=16, le=1024, description="input side length after resizing")
    resize: Literal["stretch", "center_crop"] = Field(
        "stretch",
        description="how images become image_size squares everywhere (training, evaluation, indexing, serving): "
        "stretch the whole image, or center_crop (short side to image_size, aspect kept, the centre cut out)",
    )
    orientation: Orientation = ORIENTATION
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str | None = Field(
        None,
        description="state dict path or s3:// URI, or torchvision:<WEIGHTS_ENUM> to load by name",
    )
    trainable_blocks: int | None = Field(
        None, ge=0, description="None: train everything; 0: freeze the tower; N: train its last N blocks"
    )


class SmallCnnConfig(_ImageTower):
    """A 4-block CNN for CPU work; its pooled vector keeps where things are (flattened grid)."""

    kind: Literal["small_cnn"]
    width: int = Field(32, ge=4, description="channels of the first block, doubled per block")
    blocks: int = Field(4, ge=1, le=6)

    @model_validator(mode="after")
    def _fits_the_blocks(self) -> SmallCnnConfig:
        if self.image_size < 2**self.blocks:
            raise ValueError(
                f"image_size {self.image_size} is too small for {self.blocks} blocks (it is halved per block; "
                f"at least {2**self.blocks})"
            )
        return self


class TorchvisionConfig(_ImageTower):
    """A torchvision CNN by name with its classifier removed."""

    kind: Literal["torchvision"]
    name: str = Field("resnet50", description="resnet18/34/50/101, mobilenet_v2, mobilenet_v3_large, …")


ImageEncoderConfig = Annotated[SmallCnnConfig | TorchvisionConfig, Field(discriminator="kind")]


class _TextTower(Section):
    max_length: int = Field(48, ge=4, le=512)
    pooling: Literal["cls", "mean"] = "mean"
    trainable_blocks: int | None = Field(None, ge=0)


class SmallTransformerConfig(_TextTower, AttentionSection):
    """A small transformer with its own word-level tokenizer built from the training captions."""

    kind: Literal["small_transformer"]
    width: int = Field(128, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    weights: str | None = None


class GruConfig(_TextTower):
    """A bidirectional GRU with the same word-level tokenizer."""

    kind: Literal["gru"]
    width: int = Field(128, ge=8)
    layers: int = Field(1, ge=1)
    weights: str | None = None


class HuggingFaceConfig(_TextTower):
    """A Hugging Face `AutoModel` encoder: pretrained from a folder / s3:// / hub name, or from a config."""

    kind: Literal["huggingface"]
    pretrained: str | None = Field(None, description="local folder, s3:// prefix or hub name (online only)")
    tokenizer: str | None = Field(None, description="tokenizer folder / s3:// / hub name; default: pretrained")
    architecture: dict[str, Any] | None = Field(
        None, description="AutoConfig.for_model kwargs (model_type, hidden_size, …) for random init"
    )
    pooling: Literal["cls", "mean"] = "cls"


TextEncoderConfig = Annotated[SmallTransformerConfig | GruConfig | HuggingFaceConfig, Field(discriminator="kind")]


class ModelSection(Section):
    """Base of every model config; `kind` selects the model in the registry."""

    kind: str


model_kinds: KindRegistry[ModelSection] = KindRegistry("model", ModelSection)


@model_kinds.register
class DualEncoderConfig(ModelSection):
    """Two towers projected into one L2-normalised embedding space, with a learnable temperature."""

    kind: Literal["dual_encoder"] = "dual_encoder"
    embed_dim: int = Field(128, ge=2)
    projection: Literal["linear", "mlp"] = "linear"
    image: ImageEncoderConfig = Field(default_factory=lambda: SmallCnnConfig(kind="small_cnn"))
    text: TextEncoderConfig = Field(default_factory=lambda: SmallTransformerConfig(kind="small_transformer"))
    init_temperature: float = Field(0.07, gt=0.0, le=1.0)
    learn_temperature: bool = True
    normalize_features: bool = Field(
        False,
        description="L2-normalise each tower's pooled features before its projection head (and before the "
        "procrustes start): frozen pretrained towers' features differ in norm from input to input, which then "
        "carries no meaning for matching",
    )
    init_projections: Literal["random", "procrustes"] = Field(
        "random",
        description="how the heads start: random, or procrustes (linear heads on frozen towers only): orthogonal "
        "Procrustes on PCA of the training split's frozen features, computed before the first step",
    )

    @model_validator(mode="after")
    def _procrustes_applies(self) -> DualEncoderConfig:
        if self.init_projections != "procrustes":
            return self
        if self.projection != "linear":
            raise ValueError(f"init_projections=procrustes needs projection: linear, got {self.projection!r}")
        trainable = {side: tower.trainable_blocks for side, tower in (("image", self.image), ("text", self.text))}
        unfrozen = {side: blocks for side, blocks in trainable.items() if blocks != 0}
        if unfrozen:
            got = ", ".join(f"{side}.trainable_blocks={blocks}" for side, blocks in unfrozen.items())
            raise ValueError(
                "init_projections=procrustes aligns frozen features, so both towers need trainable_blocks: 0; "
                f"got {got}"
            )
        return self


ModelConfig = Annotated[SerializeAsAny[ModelSection], BeforeValidator(model_kinds.validate)]


class HfImageSide(Section):
    """The vision tower of a pretrained pair; its input size is the checkpoint's."""

    trainable_blocks: int | None = HF_TRAINABLE_BLOCKS
    resize: Literal["stretch", "center_crop"] | None = Field(
        None,
        description="None: as the folder's preprocessor_config.json does (center_crop where it crops, as CLIP's; "
        "else stretch, as SigLIP's)",
    )
    orientation: Orientation = ORIENTATION
    mean: tuple[float, float, float] | None = Field(
        None, description="None: the folder's preprocessor_config.json image_mean, else the family's default"
    )
    std: tuple[float, float, float] | None = Field(
        None, description="None: the folder's preprocessor_config.json image_std, else the family's default"
    )


class HfTextSide(Section):
    """The text tower of a pretrained pair, with the tokenizer saved beside it."""

    trainable_blocks: int | None = HF_TRAINABLE_BLOCKS
    max_length: int | None = Field(
        None, ge=4, le=512, description="tokens per text; None: the text tower's max_position_embeddings"
    )


HF_DUAL_ENCODER_TYPES = ("clip", "siglip")


@model_kinds.register
class HfDualEncoderConfig(ModelSection):
    """A pretrained Hugging Face `CLIPModel` or `SiglipModel` as a dual encoder: its vision and text towers,
    its own projections and logit scale (and SigLIP's logit bias), its processor's image size, mean / std
    and tokenizer. Nothing is downloaded at run time unless `pretrained` is a hub name."""

    kind: Literal["hf_dual_encoder"] = "hf_dual_encoder"
    pretrained: str | None = Field(
        None,
        description="folder written by save_pretrained (config.json, weights, tokenizer, preprocessor_config.json), "
        "s3:// prefix, pkg:<package>/<path>, or hub name (online only)",
    )
    tokenizer: str | None = Field(None, description="tokenizer folder / s3:// / pkg:; default: pretrained")
    architecture: dict[str, Any] | None = Field(
        None,
        description="CLIPConfig / SiglipConfig kwargs (model_type clip or siglip, text_config, vision_config, ...) "
        "for random init; bundles record it so they rebuild without the folder",
    )
    image: HfImageSide = Field(default_factory=HfImageSide)
    text: HfTextSide = Field(default_factory=HfTextSide)
    learn_temperature: bool = Field(True, description="whether the logit scale (and SigLIP's bias) train")

    @model_validator(mode="after")
    def _source(self) -> HfDualEncoderConfig:
        if not self.pretrained and not self.architecture:
            raise ValueError("hf_dual_encoder needs pretrained (a CLIP or SigLIP folder) or architecture")
        if self.architecture is not None and self.architecture.get("model_type") not in HF_DUAL_ENCODER_TYPES:
            received = self.architecture.get("model_type")
            raise ValueError(f"architecture.model_type must be one of {HF_DUAL_ENCODER_TYPES}, got {received!r}")
        return self


encoder_kinds: KindRegistry[ModelSection] = KindRegistry("encoder", ModelSection)
encoder_kinds.register(DualEncoderConfig)
encoder_kinds.register(HfDualEncoderConfig)


def _dual_encoder_by_default(data: Any) -> Any:
    """An encoder section without a `kind` is a `dual_encoder` (as before pretrained pairs existed)."""
    if isinstance(data, dict) and "kind" not in data:
        return {"kind": "dual_encoder", **data}
    return data


EncoderConfig = Annotated[
    DualEncoderConfig | HfDualEncoderConfig,
    BeforeValidator(encoder_kinds.validate),
    BeforeValidator(_dual_encoder_by_default),
]
"""The dual encoder inside another model (fusion, caption decoder): `dual_encoder` or `hf_dual_encoder`."""
