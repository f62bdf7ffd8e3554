"""Config sections of training runs: representation losses and the distributed training settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from mmray.config.base import Section


class InfoNceLossConfig(Section):
    """Symmetric InfoNCE (CLIP) over the global batch, temperature from the model."""

    kind: Literal["infonce"]


class TripletLossConfig(Section):
    """Bidirectional triplet loss on cosine similarity with in-batch negatives (VSE++)."""

    kind: Literal["triplet"]
    margin: float = Field(0.2, gt=0.0)
    mining: Literal["hardest", "semi_hard", "all"] = Field(
        "semi_hard", description="hardest (VSE++) tends to collapse from random init; use it on pretrained towers"
    )


class ContrastiveLossConfig(Section):
    """The margin contrastive loss (Hadsell et al.) on L2-normalised embeddings, so distances lie in
    [0, 2] and random pairs start about √2 apart: 0.5·d² on each matching pair, 0.5·max(0, margin − d)²
    on non-matching pairs: every other pair of the global batch, in both directions, chosen or
    averaged by `negatives`."""

    kind: Literal["contrastive"]
    margin: float = Field(
        1.6,
        gt=0.0,
        le=2.0,
        description="distance non-matching pairs are pushed beyond; above √2, random pairs start inside it",
    )
    negatives: Literal["active", "all", "weighted", "semi_hard", "hardest", "sampled"] = Field(
        "weighted",
        description="weighted: every non-matching pair, weighted by softmax(-d²/0.1) so the closest count most; "
        "active: mean over the pairs still inside the margin; all: mean over every non-matching pair; "
        "semi_hard: per anchor the closest negative farther than its match; hardest: per anchor the closest "
        "negative (collapses from random init); sampled: negatives_per_positive random pairs per match",
    )
    negatives_per_positive: int = Field(1, ge=1, description="random non-matching pairs per match (sampled only)")


class SigmoidLossConfig(Section):
    """SigLIP's pairwise sigmoid loss over the global batch: −log σ(z·(s·cos + b)) for every image–text
    pair, z = 1 for a match and −1 otherwise, summed and divided by the batch size; the scale s and bias b
    are the model's (a SigLIP hf_dual_encoder's)."""

    kind: Literal["sigmoid"]


LossConfig = Annotated[
    InfoNceLossConfig | TripletLossConfig | ContrastiveLossConfig | SigmoidLossConfig, Field(discriminator="kind")
]


class AugmentSettings(Section):
    """Image augmentations drawn anew for every training batch (evaluation never augments)."""

    crop: Literal["none", "random_resized"] = Field(
        "none", description="random_resized: a random part of the image (area and aspect below) resized back"
    )
    crop_scale: tuple[float, float] = Field((0.35, 1.0), description="share of the image's area a crop keeps")
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="aspect ratios (width / height) of crops")
    flip: Literal["none", "unless_sides"] = Field(
        "none",
        description="unless_sides: mirror half of the images whose caption names no side (left, right); "
        "a caption that does keeps its image as it is",
    )

    @model_validator(mode="after")
    def _ranges(self) -> AugmentSettings:
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        return self

    @property
    def active(self) -> bool:
        return self.crop != "none" or self.flip != "none"


class CheckpointSettings(Section):
    """Which checkpoints a run keeps: the best `num_to_keep` by the task's score, and always the latest."""

    num_to_keep: int | None = Field(2, ge=1, description="None keeps every checkpoint")
    score_attribute: str | None = Field(
        None, description="metric ranking checkpoints; default: the task's score (e.g. recall_mean)"
    )
    score_order: Literal["max", "min"] | None = Field(None, description="default: the task's")


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads a bare `off` (in a file or an override) as false; here it is the choice "off"."""
    return "off" if value is False else value


PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16"]
AutoOrOff = Annotated[Literal["auto", "off"], BeforeValidator(_yaml_off)]


class TrainSettings(Section):
    """How the model is optimised and scaled across Ray Train workers."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2, description="global batch: split evenly across workers")
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps with linear warmup")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine decays to lr × this")
    tower_lr_scale: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="the image and text towers' trained blocks learn at lr × this, the heads and everything "
        "else at lr: below 1 to fine-tune pretrained blocks gently",
    )
    layer_lr_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="layer-wise lr decay in the towers: what follows a tower's last block learns at lr × "
        "tower_lr_scale, the last block at that × this, each block below at a further × this, the embeddings "
        "(or stem) lowest; 1: every tower parameter at lr × tower_lr_scale",
    )
    clip_grad_norm: float | None = Field(1.0, gt=0.0)
    precision: PrecisionSetting = Field(
        "auto",
        description="auto: on a CPU bf16 autocast where it computes bf16 natively (AMX or AVX-512 BF16), else "
        "fp32; on a GPU the first batch's step timed in each precision it computes natively (bf16, fp32, fp16; "
        "fp16 with a gradient scaler) and the first within 5 % of the fastest kept, the ranks agreeing; a resumed "
        "run keeps the precision it trained in; each worker decides for its own device",
    )
    eval_every: int = Field(1, ge=1, description="evaluate every N epochs (and after the last)")
    eval_at_start: bool | None = Field(
        None,
        description="evaluate the starting model before the first epoch, logged as epoch 0 (its zero-shot "
        "figures); None: when the model is a pretrained pair (model.kind hf_dual_encoder)",
    )
    eval_batch_size: int = Field(512, ge=1, description="rows per batch when evaluating during training")
    log_every_steps: int = Field(20, ge=1)
    seed: int = 0
    loader: Literal["auto", "memory", "shards", "ray_data"] = Field(
        "auto",
        description="memory: the driver decodes the split once into Ray's object store, shared by the workers; "
        "shards: each worker reads its share of the prepared split (data.prepared) itself; ray_data: streamed, "
        "decoded by Ray Data actors on the cluster; both streams reshuffled every epoch; auto: memory up to 2 GiB "
        "of decoded images (and wherever the job needs it), else shards with data.prepared, else ray_data",
    )
    decode_actors: int | None = Field(
        None,
        ge=1,
        description="ray_data: most actors decoding images; None: the cluster's CPUs the training workers leave",
    )
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how workers are placed on nodes (SPREAD: one per node where possible)"
    )
    threads_per_worker: int | None = Field(None, ge=1, description="torch threads; default cpus_per_worker")
    max_failures: int = Field(2, ge=-1, description="worker failures to recover from (-1: unlimited)")
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    feature_cache: AutoOrOff = Field(
        "auto",
        description="auto: a tower that never trains (trainable_blocks: 0) runs once per image and caption, its "
        "features kept under <storage_root>/feature-cache/ and the heads trained from them (train.loader=memory); "
        "off: it runs at every step",
    )

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainSettings:
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by num_workers ({self.num_workers})")
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision fp16 needs use_gpu: true; use auto (or bf16 where the CPU has native bf16)")
        return self
