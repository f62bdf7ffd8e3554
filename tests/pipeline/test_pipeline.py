"""`kind: pipeline` end to end, training in this process and serving on the session's Ray: a first run
promotes; a worse configuration is refused by the gate and the app keeps its pair; a better one is promoted
by hot reload while searches run (none fails, none mixes two models); rollback returns to the first; a
rerun skips every stage it has done."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mmray.config import PipelineJob
from mmray.data.image_files import decode_image
from mmray.errors import ConfigError
from mmray.pipeline.registry import ModelRegistry
from mmray.pipeline.run import run_pipeline
from mmray.retrieval.search import Searcher
from mmray.serving.auth import hash_key
from tests.support.cli import invoke_mmray
from tests.train.conftest import tiny_job, write_job

pytestmark = pytest.mark.slow
ADMIN = "pipeline-admin-key"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline-data")


def _pipeline(tmp_path: Path, data_root: Path, name: str, url: str | None = None, **train: Any) -> PipelineJob:
    """A pipeline `name` training the tiny job with `train` settings; its file and its train job's beside."""
    write_job(tmp_path / f"{name}-train.yaml", tiny_job(data_root, "unused", "candidate", **{"epochs": 1, **train}))
    holdout = {"source": "shapes", "root": str(data_root), "images": 140, "val_images": 100, "seed": 33}
    spec = {"kind": "pipeline", "name": name, "storage_root": str(tmp_path / "runs"), "train": f"{name}-train.yaml",
            "runner": "local", "index": {"split": "val", "type": "flat"}, "holdout": holdout,
            "gate": {"metric": "recall_mean", "margin": 0.0}, "promote": {"serve": url}}  # fmt: skip
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return PipelineJob.model_validate(spec)


def _serve(entry: Any, storage_root: Path) -> str:
    from mmray.serving.runner import check_serve_config, start_serving
    from tests.serving.conftest import free_port

    args = {"models": {"retrieval": entry.model_bundle}, "index": entry.index_bundle,
            "auth": {"admin_key_hashes": [hash_key(ADMIN)], "keys_env": "MMRAY_PIPELINE_NO_KEYS",
                     "admin_keys_env": "MMRAY_PIPELINE_NO_KEYS"},
            "allowed_roots": [str(storage_root)]}  # fmt: skip
    names = ("model_retrieval", "RetrieverDeployment", "Ingress")
    deployments = [{"name": name, "ray_actor_options": {"num_cpus": 0.1}} for name in names]
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": free_port()},
              "applications": [{"name": "pipeline", "route_prefix": "/pipeline", "args": args,
                                "import_path": "mmray.serving.app:build_app", "deployments": deployments}]}  # fmt: skip
    return start_serving(check_serve_config(config, "pipeline test config")) + "/pipeline"


def test_a_pipeline_promotes_only_past_its_gate_under_load_and_rolls_back(
    ray_session: None, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmray.serving.runner import stop_serving

    monkeypatch.setenv("MMRAY_ADMIN_KEY", ADMIN)
    registry = ModelRegistry(str(tmp_path / "runs"))
    first = run_pipeline(_pipeline(tmp_path, data_root, "first"), tmp_path)
    assert first.promoted and first.served is None and registry.current().id == first.entry.id  # type: ignore[union-attr]

    url = _serve(first.entry, tmp_path / "runs")
    query = sorted(next(data_root.glob("n576-*")).joinpath("images", "val").glob("*.jpg"))[0]
    image = base64.b64encode(query.read_bytes()).decode()
    try:
        worse = run_pipeline(_pipeline(tmp_path, data_root, "worse", url, lr=1e-9), tmp_path)
        assert not worse.promoted and worse.candidate < first.candidate and "refused" in worse.reason
        assert f"{worse.candidate:.4f}" in worse.reason and f"{worse.served:.4f}" in worse.reason, "names both scores"
        served = requests.post(url + "/v1/search", json={"image": image, "target": "images", "k": 3}, timeout=60)
        assert served.json()["model_version"] == first.entry.model_version, "the served pair is untouched"

        answers: list[dict[str, Any]] = []
        stop = threading.Event()

        def searches() -> None:
            while not stop.wait(0.05):  # steady load that leaves the 2 cores to training most of the time
                response = requests.post(url + "/v1/search", json={"image": image, "target": "images", "k": 3},
                                         timeout=120)  # fmt: skip
                answers.append({"status": response.status_code, **(response.json() if response.ok else {})})

        clients = [threading.Thread(target=searches) for _ in range(3)]
        for client in clients:
            client.start()
        try:
            better = run_pipeline(_pipeline(tmp_path, data_root, "better", url, epochs=2), tmp_path)
            time.sleep(1.0)  # the searches go on past the promotion
        finally:
            stop.set()
            for client in clients:
                client.join()
        assert better.promoted and better.candidate > first.candidate, better.reason
        assert answers and all(a["status"] == 200 for a in answers), [a for a in answers if a["status"] != 200][:3]
        expected = {}
        for entry in (first.entry, better.entry):
            hits = Searcher.open(str(entry.index_bundle)).search(image=decode_image(query.read_bytes()), k=3,
                                                                   target="images")  # fmt: skip
            expected[entry.model_version] = [(h.id, round(h.score, 4)) for h in hits]
        for answer in answers:
            shown = [(h["id"], round(h["score"], 4)) for h in answer["hits"]]
            assert shown == expected[answer["model_version"]], "each answer is one pair's, whole"
        assert answers[-1]["model_version"] == better.entry.model_version

        back = invoke_mmray("models", "rollback", "--storage-root", str(tmp_path / "runs"), "--serve", url)
        assert back.returncode == 0, back.stderr
        assert back.last_json()["served"] == first.entry.id
        again = requests.post(url + "/v1/search", json={"image": image, "target": "images", "k": 3}, timeout=60)
        assert again.json()["model_version"] == first.entry.model_version
    finally:
        stop_serving(["pipeline"])

    listed = invoke_mmray("models", "list", "--storage-root", str(tmp_path / "runs"))
    assert listed.returncode == 0 and listed.last_json() == {"served": first.entry.id, "entries": 3}
    rerun = invoke_mmray("pipeline", str(tmp_path / "first.yaml"))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("done before for these inputs") >= 2, "train and index were not run again"
    assert rerun.last_json()["reason"] == "this pair is the one served already"


def test_a_pair_refused_once_and_promoted_later_is_listed_with_its_latest_evaluation(
    tmp_path: Path, data_root: Path
) -> None:
    """A pair the gate refused, evaluated again (other held-out data) and promoted, shows that evaluation's
    scores and `gate passed` in `mmray models list`, not the refusal it was first."""
    root = str(tmp_path / "runs")
    weak = _pipeline(tmp_path, data_root, "weak", lr=1e-9).model_dump(mode="json")
    assert run_pipeline(PipelineJob.model_validate({**weak, "index": None}), tmp_path).promoted
    strong = _pipeline(tmp_path, data_root, "strong", epochs=2).model_dump(mode="json")
    refused = run_pipeline(PipelineJob.model_validate({**strong, "index": None, "gate": {"margin": 1.0}}), tmp_path)
    assert not refused.promoted and not ModelRegistry(root).entry(refused.entry.id).passed_gate

    holdout = {**strong["holdout"], "seed": 34}
    again = run_pipeline(PipelineJob.model_validate({**strong, "index": None, "holdout": holdout}), tmp_path)
    assert again.promoted and again.entry.id == refused.entry.id and again.candidate != refused.candidate
    listed = invoke_mmray("models", "list", "--storage-root", root)
    served_line = next(line for line in listed.stdout.splitlines() if line.startswith("*"))
    assert f"{again.candidate:.4f}  gate passed" in served_line, served_line
    entry = ModelRegistry(root).entry(again.entry.id)
    assert entry.passed_gate and again.entry == entry
    assert (entry.metrics["candidate"], entry.metrics["served"]) == (again.candidate, again.served)


def test_a_promotion_made_while_a_pipeline_ran_is_not_overridden(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate compares with the entry served when the pipeline started; one a person promoted (or rolled
    back to) meanwhile is kept, and the rerun compares with it."""
    import mmray.pipeline.run as pipeline_run

    root = str(tmp_path / "runs")
    first = _pipeline(tmp_path, data_root, "first", lr=1e-9).model_dump(mode="json")
    assert run_pipeline(PipelineJob.model_validate({**first, "index": None}), tmp_path).promoted
    second = _pipeline(tmp_path, data_root, "second").model_dump(mode="json")
    other = run_pipeline(PipelineJob.model_validate({**second, "index": None, "gate": {"margin": 1.0}}), tmp_path)
    assert not other.promoted
    score = pipeline_run._score

    def score_while_a_person_promotes(spec: PipelineJob, bundle_uri: str, metric: str) -> float:
        if ModelRegistry(root).current() != ModelRegistry(root).entry(other.entry.id):
            ModelRegistry(root).record(other.entry.id, "promote", "mmray models promote")
        return score(spec, bundle_uri, metric)

    monkeypatch.setattr(pipeline_run, "_score", score_while_a_person_promotes)
    third = _pipeline(tmp_path, data_root, "third", epochs=2).model_dump(mode="json")
    outcome = run_pipeline(PipelineJob.model_validate({**third, "index": None}), tmp_path)
    assert not outcome.promoted and "the served entry changed from 1 to 2" in outcome.reason, outcome.reason
    assert ModelRegistry(root).current() == ModelRegistry(root).entry(other.entry.id)

    monkeypatch.setattr(pipeline_run, "_score", score)
    again = run_pipeline(PipelineJob.model_validate({**third, "index": None}), tmp_path)
    assert again.entry.metrics["served_entry"] == other.entry.id, "the rerun compares with the entry served now"


def test_splits_no_stage_can_read_are_refused_before_any_stage_runs(tmp_path: Path, data_root: Path) -> None:
    spec = _pipeline(tmp_path, data_root, "splits").model_dump(mode="json")
    with pytest.raises(ValueError, match=r"gate\.split reads split 'test', but a data section has only train and val"):
        PipelineJob.model_validate({**spec, "gate": {"split": "test"}})
    coco_train = tiny_job(data_root, "unused", "candidate", epochs=1)
    split = {"captions": str(data_root / "c.json"), "images": str(data_root)}
    coco_train["data"] = {"source": "coco", "train": split}  # no val split to index
    write_job(tmp_path / "splits-train.yaml", coco_train)
    with pytest.raises(ConfigError, match=r"index\.split: no val split"):
        run_pipeline(PipelineJob.model_validate(spec), tmp_path)
    assert not (tmp_path / "runs").exists(), "refused before the train stage"


def test_a_promotion_to_an_app_without_an_admin_key_is_refused_before_any_stage_runs(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMRAY_ADMIN_KEY", raising=False)
    spec = _pipeline(tmp_path, data_root, "keyless", url="http://127.0.0.1:9/app")
    with pytest.raises(ConfigError, match=r"promote\.serve is set but MMRAY_ADMIN_KEY holds no admin key"):
        run_pipeline(spec, tmp_path)
    assert not (tmp_path / "runs").exists(), "refused before the train stage"
