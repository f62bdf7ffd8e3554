from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmray.config import ConfigError, ShapesData, TrainJob, load_job, parse_overrides, to_yaml, validate_job
from mmray.config.base import of_kind
from mmray.config.data import CocoData
from mmray.config.generation import VaeTaskConfig
from mmray.config.tasks import RetrievalTaskConfig

SPEC = {
    "kind": "train",
    "name": "demo",
    "storage_root": "runs",
    "data": {"source": "shapes", "root": "data/shapes", "images": 200, "val_images": 50},
    "model": {"kind": "dual_encoder"},
    "task": {"kind": "retrieval"},
}


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_loads_typed_sections(spec_file: Path) -> None:
    job = load_job(spec_file)
    assert isinstance(job.data, ShapesData)
    assert (job.kind, job.data.images, job.data.val_images, job.data.seed) == ("train", 200, 50, 0)


def test_unknown_nested_key_names_key_place_and_valid_keys(spec_file: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_job(spec_file, ["data.imags=5"])
    message = str(err.value)
    assert "unknown key 'imags'" in message
    assert "did you mean 'images'" in message
    assert message.split(": ")[1] == "data"
    for key in ("images", "val_images", "seed", "root", "holdout_fraction"):
        assert key in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "trian": {}}))
    with pytest.raises(
        ConfigError,
        match=r"<top level>: unknown key 'trian' \(did you mean 'train'\?\); valid keys: continue_from, data, ",
    ):
        load_job(path)


def test_switching_the_data_source_drops_the_other_sources_keys(spec_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"data: no split given: set train and/or val"):
        load_job(spec_file, ["data.source=coco"])
    with pytest.raises(ConfigError, match=r"data: unknown key 'images'; valid keys: .*image_check"):
        load_job(spec_file, ["data={source: coco, train: {captions: c.json, images: i}, images: 3}"])
    job = load_job(spec_file, ["data.source=coco", "data.train.captions=c.json", "data.train.images=i"])
    assert job.data.source == "coco" and job.data.train.captions == "c.json"  # type: ignore[union-attr]


def test_wrong_type_and_range_name_the_value(spec_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.images: .*greater than or equal to 2 \(got 1\)"):
        load_job(spec_file, ["data.images=1"])
    with pytest.raises(ConfigError, match=r"top-level 'kind' is 'fly'; job kinds: train, index, evaluate"):
        load_job(spec_file, ["kind=fly"])
    with pytest.raises(ConfigError, match=r"val_images \(500\) must be smaller than images \(200\)"):
        load_job(spec_file, ["data.val_images=500"])


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        (["model.text.kind=small_transformer", "model.text.width=64", "model.text.heads=3"],
         r"model\.text: .*width 64 does not split into 3 heads"),
        (["model.image.kind=small_cnn", "model.image.image_size=16", "model.image.blocks=6"],
         r"model\.image: .*image_size 16 is too small for 6 blocks \(it is halved per block; at least 64\)"),
    ],
)  # fmt: skip
def test_tower_settings_that_cannot_be_built_are_refused(spec_file: Path, overrides: list[str], shown: str) -> None:
    with pytest.raises(ConfigError, match=shown):
        load_job(spec_file, overrides)


def test_overrides_parse_yaml_scalars_and_nest() -> None:
    tree = parse_overrides(["a.b=3", "a.c=0.5", "a.d=true", "e=[1, 2]", "f=hello", "a.g.h=null"])
    assert tree == {"a": {"b": 3, "c": 0.5, "d": True, "g": {"h": None}}, "e": [1, 2], "f": "hello"}


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", ".a=1"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_overrides([bad])


def test_override_cannot_replace_a_section_with_a_scalar(spec_file: Path) -> None:
    with pytest.raises(ConfigError, match="'data' is a section"):
        load_job(spec_file, ["data=3"])


def test_overrides_change_values(spec_file: Path) -> None:
    job = load_job(spec_file, ["data.seed=9", "name=other", "storage_root=s3://bucket/runs"])
    assert (job.data.seed, job.name, job.storage_root) == (9, "other", "s3://bucket/runs")


def test_off_is_a_choice_not_yaml_false(spec_file: Path, tmp_path: Path) -> None:
    job = load_job(spec_file, ["train.feature_cache=off"])
    assert isinstance(job, TrainJob) and job.train.feature_cache == "off"
    written = tmp_path / "off.yaml"
    written.write_text(spec_file.read_text() + "train:\n  feature_cache: off\n")
    job = load_job(written)
    assert isinstance(job, TrainJob) and job.train.feature_cache == "off"
    assert load_job(written, ["train.feature_cache=auto"]).train.feature_cache == "auto"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"train\.feature_cache"):
        load_job(spec_file, ["train.feature_cache=true"])


def test_round_trip_through_yaml(spec_file: Path, tmp_path: Path) -> None:
    job = load_job(spec_file, ["data.seed=3"])
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(to_yaml(job))
    again = load_job(dumped)
    assert again == job
    assert yaml.safe_load(dumped.read_text())["data"]["holdout_fraction"] == 0.05


def test_coco_data_round_trip(tmp_path: Path) -> None:
    spec = {
        "kind": "evaluate",
        "name": "coco",
        "checkpoint": "runs/coco-clip",
        "data": {
            "source": "coco",
            "train": {"captions": "s3://b/c.json", "images": "s3://b/img"},
            "val": {"captions": "v.json", "instances": "i.json", "images": "img"},
            "on_bad_record": "error",
        },
    }
    job = validate_job(spec, "inline")
    assert isinstance(job.data, CocoData)
    path = tmp_path / "job.yaml"
    path.write_text(to_yaml(job))
    assert load_job(path) == job


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_job(bad)
    bad.write_text(yaml.safe_dump({"name": "x"}))
    with pytest.raises(ConfigError, match="top-level 'kind' is missing; job kinds: train, index, evaluate"):
        load_job(bad)


def test_repository_job_specs_validate() -> None:
    for path in sorted(Path(__file__).resolve().parents[2].glob("jobs/*.yaml")):
        assert load_job(path).name


REPO_JOBS = Path(__file__).resolve().parents[2] / "jobs"


def test_an_override_that_changes_a_kind_keeps_only_the_keys_the_new_kind_takes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = load_job(REPO_JOBS / "shapes-clip.yaml", ["model.image.kind=torchvision", "model.image.name=mobilenet_v2"])
    image = spec.model.image  # type: ignore[attr-defined]
    assert image.kind == "torchvision" and image.name == "mobilenet_v2" and image.image_size == 64
    assert "model.image.width, model.image.blocks" in caplog.text
    loss = load_job(REPO_JOBS / "shapes-clip.yaml", ["task.loss.kind=triplet", "task.loss.margin=0.3"]).task.loss
    assert loss.kind == "triplet" and loss.margin == 0.3  # type: ignore[attr-defined]


def test_a_whole_section_can_be_set_on_the_command_line() -> None:
    spec = load_job(REPO_JOBS / "shapes-classify.yaml", ["model.fusion={kind: gated, hidden: 64}"])
    fusion = spec.model.fusion  # type: ignore[attr-defined]
    assert fusion.kind == "gated" and fusion.hidden == 64
    with pytest.raises(ConfigError, match="hiden"):
        load_job(REPO_JOBS / "shapes-classify.yaml", ["model.fusion={kind: gated, hiden: 64}"])


def test_a_train_job_starts_from_weights_or_from_a_whole_training_state_not_both(tmp_path: Path) -> None:
    from mmray.train.driver import resolve_training_checkpoint

    job = load_job(REPO_JOBS / "shapes-clip.yaml", [f"continue_from={tmp_path}"])
    assert isinstance(job, TrainJob) and job.continue_from == str(tmp_path)
    with pytest.raises(ConfigError, match=r"init_from .* or continue_from"):
        load_job(REPO_JOBS / "shapes-clip.yaml", [f"continue_from={tmp_path}", f"init_from={tmp_path}"])
    with pytest.raises(ConfigError, match=r"train_state\.pt is missing"):
        resolve_training_checkpoint(str(tmp_path))


def test_the_config_reference_in_docs_is_current_and_lists_every_section() -> None:
    from typer.testing import CliRunner

    from mmray.cli.app import app
    from mmray.config.jobs import JOB_CLASSES
    from mmray.config.reference import reference_markdown, sections_below

    # In a fresh process: test modules register probe kinds that the reference would list.
    command = [str(Path(sys.executable).parent / "mmray"), "config", "schema"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    assert (REPO_JOBS.parent / "docs" / "CONFIG.md").read_text() == printed, "run `make docs`"
    generated = reference_markdown(list(JOB_CLASSES.values()))
    for job in JOB_CLASSES.values():
        for section in sections_below(job):
            assert f'<a id="{section.__name__.lower()}"></a>' in generated
            assert all(f"| `{key}` |" in generated for key in section.model_fields)
    assert "[kind: pbt](#pbtscheduler)" in generated and "| `continue_from` |" in generated
    runner = CliRunner()
    train_only = runner.invoke(app, ["config", "schema", "train"])
    assert train_only.exit_code == 0 and "TrainJob" in train_only.output and "TuneJob" not in train_only.output
    assert runner.invoke(app, ["config", "schema", "trian"]).exit_code != 0


def test_of_kind_narrows_a_section_or_names_the_kind_it_got() -> None:
    retrieval = RetrievalTaskConfig()
    assert of_kind(retrieval, RetrievalTaskConfig, "a retrieval task") is retrieval
    with pytest.raises(TypeError, match="expected a vae task config, got kind 'retrieval'"):
        of_kind(retrieval, VaeTaskConfig, "a vae task")
