"""Does fusion matter? Image-only, text-only and every fusion trained on the same shapes question task.

Each row is one training run of jobs/shapes-classify.yaml (yes/no questions, with its auxiliary
shapes head), the same seed, epochs, data and warm start (the representation of jobs/shapes-clip.yaml,
trained first when missing); only `model.fusion` changes. The baselines of the same run are the
image-only and text-only rows and the chance level the generator reports; the table prints each row's
accuracy and its margin over chance. The job's own figure (its full epochs) is in the README.
Usage: python benchmarks/fusion_compare.py [--epochs 2] [--only attention,gated] [--storage-root runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mmray.config import TrainJob, load_job
from mmray.config.base import read_yaml_mapping
from mmray.config.jobs import validate_job
from mmray.data.shapes import ensure_shapes
from mmray.train.trainer import run_training

ROOT = Path(__file__).resolve().parents[1]
CLASSIFY = ROOT / "jobs" / "shapes-classify.yaml"
REPRESENTATION = ROOT / "jobs" / "shapes-clip.yaml"
RESULTS = ROOT / "benchmarks" / "results"
FUSIONS: dict[str, dict[str, Any]] = {
    "image_only": {"kind": "image_only"},
    "text_only": {"kind": "text_only"},
    "weighted_sum": {"kind": "weighted_sum", "learn_alpha": True},
    "concat": {"kind": "concat", "hidden": 256, "layers": 2},
    "gated": {"kind": "gated", "hidden": 256},
    "attention": {"kind": "attention", "width": 128, "heads": 4, "layers": 2, "cell_layers": 2},
}


def representation(storage_root: str) -> str:
    """The shapes-clip run the fusion jobs start from: the project's own run, else one trained here."""
    own = ROOT / "runs" / "shapes-clip" / "best_model.json"
    if own.is_file():
        return str(own.parent)
    spec = load_job(REPRESENTATION, [f"storage_root={storage_root}"])
    assert isinstance(spec, TrainJob)
    print("training the representation (jobs/shapes-clip.yaml) first", flush=True)
    return run_training(spec).run_dir


def fusion_job(fusion: str, epochs: int, storage_root: str, init_from: str) -> TrainJob:
    raw = read_yaml_mapping(CLASSIFY)
    raw.update(name=f"fusion-{fusion}", storage_root=storage_root, init_from=init_from)
    raw["model"]["fusion"] = FUSIONS[fusion]
    raw["train"] = {**raw["train"], "epochs": epochs, "eval_every": epochs}
    spec = validate_job(raw, f"{CLASSIFY} ({fusion})")
    assert isinstance(spec, TrainJob)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", default=",".join(FUSIONS), help="comma-separated rows to run")
    parser.add_argument("--storage-root", default=str(ROOT / "runs" / "bench"))
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(FUSIONS)
    if unknown:
        sys.exit(f"unknown rows {sorted(unknown)}; rows: {', '.join(FUSIONS)}")
    init_from = representation(args.storage_root)
    summary, _ = ensure_shapes(fusion_job("attention", args.epochs, args.storage_root, init_from).data)  # type: ignore[arg-type]
    chance = summary.question_chance["val"]
    rows = []
    for fusion in args.only.split(","):
        spec = fusion_job(fusion, args.epochs, args.storage_root, init_from)
        started = time.perf_counter()
        metrics = run_training(spec).metrics
        rows.append(
            {
                "fusion": fusion,
                "present_accuracy": metrics["present_accuracy"],
                "present_f1_macro": metrics["present_f1_macro"],
                "minutes": (time.perf_counter() - started) / 60,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    presence_chance = chance["present"]["chance_accuracy"]
    print(f"\nshapes yes/no questions, {args.epochs} epochs, 2 DDP workers, same seed and warm start for every row")
    print(f"chance (majority answer of the validation questions): {presence_chance:.3f}")
    print(f"{'fusion':<14}{'accuracy':>10}{'− chance':>10}{'macro F1':>10}{'minutes':>9}")
    for row in rows:
        margin = row["present_accuracy"] - presence_chance
        print(
            f"{row['fusion']:<14}{row['present_accuracy']:>10.3f}{margin:>+10.3f}"
            f"{row['present_f1_macro']:>10.3f}{row['minutes']:>9.1f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fusion_compare.json").write_text(
        json.dumps({"epochs": args.epochs, "chance": chance, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
