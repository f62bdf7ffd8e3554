"""The README's "Your own data in five minutes", as written: its commands run in order in a scratch project
(in this process, none starting Ray: data, inspect, train --local, index, search), the jobs it shows are
the files, and its `mmray query` line gets from the app its `mmray serve` line configures the hits that
`mmray search` gives. The app is checked in this process, through the classes its Serve replicas hold, on
the walk's bundles: a Serve start costs over a minute here (`make test-readme` runs the real server)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mmray.data.coco import load_coco
from mmray.serving.calls import EmbedCall, EmbedResult, SearchCall
from mmray.serving.model_service import ModelService
from mmray.serving.retrieval_service import RetrievalService
from mmray.serving.runner import check_serve_config
from mmray.serving.state import resolve_state
from tests.support.cli import Outcome, invoke_mmray, ray_never_started

pytestmark = pytest.mark.slow  # it trains (in this process, a few seconds of epochs)
REPO = Path(__file__).resolve().parents[1]
TITLE = "## Your own data in five minutes"


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(TITLE)
    return text[start : text.index("\n## ", start + len(TITLE))]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), re.DOTALL)


def commands() -> list[list[str]]:
    (block,) = blocks("bash")
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Outcome]]]:
    """Every command up to `mmray serve`, run in order in a project holding the repository's jobs/ and serve/."""
    project = tmp_path_factory.mktemp("own-data") / "project"
    for name in ("jobs", "serve"):
        shutil.copytree(REPO / name, project / name)
    here = Path.cwd()
    os.chdir(project)
    outcomes: dict[str, Outcome] = {}
    try:
        with ray_never_started() as calls:
            for args in commands():
                if args[1] in ("serve", "query"):
                    continue
                outcomes[args[1] if args[1] != "data" else f"data {args[2]} {len(outcomes)}"] = invoke_mmray(*args[1:])
        assert not calls, "a step started Ray"
        yield project, outcomes
    finally:
        os.chdir(here)


def test_the_walk_runs_every_command_as_written(walk: tuple[Path, dict[str, Outcome]]) -> None:
    project, outcomes = walk
    assert [args[1] for args in commands()] == ["data", "data", "data", "train", "index", "search", "serve", "query"]
    for step, result in outcomes.items():
        assert result.returncode == 0 and "Traceback" not in result.stderr, (step, result.stderr[-3000:])
    for step in ("data inspect 1", "data inspect 2"):
        summary = outcomes[step].last_json()
        assert summary["usable"] and summary["strict"] and summary["problem_count"] == 0, summary
    trained = outcomes["train"].last_json()
    assert trained["epoch"] == 6 and trained["run_dir"] == str(project / "runs" / "my-data-clip")
    assert "in this process on cpu (no Ray Train)" in outcomes["train"].stderr
    indexed = outcomes["index"].last_json()
    assert indexed["sizes"] == {"images": 40, "captions": 120} and indexed["failed"] == {"images": 0, "captions": 0}
    assert "embedding val in this process (no Ray" in outcomes["index"].stderr
    hits = outcomes["search"].stdout.strip().splitlines()
    assert len(hits) == 3 and all(" image " in line for line in hits), hits
    with ray_never_started() as calls:
        again = invoke_mmray(*commands()[3][1:])
    assert again.returncode == 0 and not calls and "run my-data-clip is finished" in again.stderr
    assert again.last_json() == trained


def test_the_served_app_answers_the_query_as_search_does(walk: tuple[Path, dict[str, Outcome]]) -> None:
    project, _ = walk
    serve_line, query_line = commands()[6], commands()[7]
    raw = yaml.safe_load((project / serve_line[2]).read_text())
    config = check_serve_config(raw, serve_line[2], base=project)
    args = config["applications"][0]["args"]
    state = resolve_state(args["models"], args["index"])
    assert state.index is not None and state.index.model == "retrieval"
    text, k = query_line[query_line.index("--text") + 1], int(query_line[query_line.index("--k") + 1])
    (embedded,) = ModelService.open(args["models"]["retrieval"]).embed_many([EmbedCall(texts=[text])])
    assert isinstance(embedded, EmbedResult)
    served = RetrievalService.open(args["index"]).search(SearchCall(text=text, k=k), embedded)
    searched = invoke_mmray("search", str(project / "runs" / "my-data-index" / "index"), "--text", text, "--k", str(k),
                            "--json")  # fmt: skip
    assert [hit["id"] for hit in served.hits] == [hit["id"] for hit in searched.last_json()["hits"]]
    assert len(served.hits) == k


def test_the_jobs_and_the_format_it_shows_are_the_real_ones(tmp_path: Path) -> None:
    index_job, data_section = blocks("yaml")
    assert index_job == (REPO / "jobs" / "my-data-index.yaml").read_text()
    assert yaml.safe_load(data_section) == {
        "data": yaml.safe_load((REPO / "jobs" / "my-data-clip.yaml").read_text())["data"]
    }
    (example,) = blocks("json")
    (tmp_path / "captions.json").write_text(example)
    dataset = load_coco(str(tmp_path / "captions.json"), str(tmp_path), image_check="none", on_bad_record="error")
    assert [(r.file_name, len(r.captions)) for r in dataset.records] == [("beach.jpg", 2)]
