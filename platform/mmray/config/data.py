"""Config sections that describe where a job's image-text data comes from."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mmray.config.base import Section

ImageCheck = Literal["decode", "exists", "none"]


class CocoSplit(Section):
    """One split of a COCO-format dataset: annotation files and the image directory or prefix."""

    captions: str = Field(description="captions_*.json, a local path or s3:// URI")
    instances: str | None = Field(None, description="instances_*.json (categories, boxes), optional")
    images: str = Field(description="directory or s3:// prefix holding the split's image files")


class LoaderOptions(Section):
    """How a job reads its data; shared by every data source and no part of what the data is."""

    on_bad_record: Literal["skip", "error"] = Field(
        "skip", description="skip (with a warning listing ids) or error on bad records"
    )
    image_check: ImageCheck = Field(
        "exists",
        description="how images are checked while loading: decode, exists or none (exists and decode also find "
        "image files stored under several ids)",
    )
    merge_duplicate_files: bool = Field(
        False,
        description="image files with the same content under several ids become one image with all their "
        "captions (else the first id is kept and the others are bad records)",
    )
    captions_per_epoch: Literal["one", "all"] = Field(
        "one",
        description="training pairs per image and epoch: one (a caption drawn anew each epoch; an epoch is "
        "one pass over the images) or all (every caption is a pair, no image twice in a batch; "
        "train.loader=memory)",
    )
    prepared: str | None = Field(
        None,
        description="a directory or s3:// prefix written by `mmray data prepare JOB --shards URI`: each split's "
        "images are read from its decoded, resized shards (URI/train, URI/val) instead of decoded again",
    )

    def coco_options(self) -> dict[str, Any]:
        """The keyword arguments of `load_coco` these options set."""
        return self.model_dump(include={"on_bad_record", "image_check", "merge_duplicate_files"})


class CocoData(LoaderOptions):
    """A COCO-format dataset on local disk or S3; a job needs only the splits it reads."""

    source: Literal["coco"]
    train: CocoSplit | None = Field(None, description="the training split (train jobs)")
    val: CocoSplit | None = Field(None, description="the validation split (evaluation during training, index jobs)")

    @model_validator(mode="after")
    def _some_split(self) -> CocoData:
        if self.train is None and self.val is None:
            raise ValueError("no split given: set train and/or val (captions, images, optionally instances)")
        return self


class ShapesData(LoaderOptions):
    """The generated shapes dataset, written under `root` on first use."""

    source: Literal["shapes"]
    root: str = "data/shapes"
    images: int = Field(11000, ge=2, description="total images, train + val")
    val_images: int = Field(1000, ge=1)
    seed: int = 0
    image_size: int = Field(64, ge=32, le=512)
    captions_per_image: int = Field(3, ge=1, le=10)
    holdout_fraction: float = Field(
        0.05, ge=0.0, le=0.5, description="share of object combinations kept out of training"
    )
    presence_questions_per_image: int = Field(
        2, ge=0, le=20, description="yes/no questions per image in questions_*.json (balanced)"
    )
    count_questions_per_image: int = Field(2, ge=0, le=20, description="how-many questions per image")
    text: Literal["captions", "questions"] = Field(
        "captions",
        description="the text of each example: captions (describe the scene) or questions (with answers as targets)",
    )

    @model_validator(mode="after")
    def _val_smaller_than_total(self) -> ShapesData:
        if self.val_images >= self.images:
            raise ValueError(f"val_images ({self.val_images}) must be smaller than images ({self.images})")
        if self.text == "questions" and not self.presence_questions_per_image + self.count_questions_per_image:
            raise ValueError("text=questions needs presence_questions_per_image or count_questions_per_image above 0")
        return self


DataConfig = Annotated[CocoData | ShapesData, Field(discriminator="source")]

SPLITS = ("train", "val")


def require_split(data: CocoData | ShapesData, split: str, reader: str) -> CocoData | ShapesData:
    """`data` when it gives `split`, else a ValueError naming what `reader` needs and what there is."""
    given = [name for name in SPLITS if isinstance(data, ShapesData) or getattr(data, name) is not None]
    if split not in given:
        if split not in SPLITS:
            raise ValueError(f"{reader} reads split {split!r}, but a data section has only train and val")
        raise ValueError(
            f"no {split} split: {reader} reads data.{split} (captions, images), and this data section gives "
            f"only {', '.join(given)}"
        )
    return data
