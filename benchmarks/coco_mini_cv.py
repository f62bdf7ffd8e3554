"""Retrieval on real photos with folds large enough to tell settings apart: coco-mini's 80 COCO images
(5 captions each) halved at random, each half training heads on the frozen towers' features (40 images,
200 captions) and the other half measuring them (rsum = R@1 + R@5 + R@10 both ways, in %, at most 600).
Five halvings give ten folds; the report uses halvings 0–4, the search halvings 100–104.

Modes (the frozen features are computed once and kept under the storage root):
- default: the table, rows the shipped job (jobs/coco-mini-clip.yaml), orthogonal Procrustes on PCA of the
  features, linear InfoNCE, the job's earlier settings and (for a Procrustes start) the same heads from a
  random start; mean ± sd over the folds and the paired difference from Procrustes;
- `--search broad|procrustes|refine --samples N`: a Ray Tune search over the heads' settings on the search
  halvings, one trial at a time, the shipped setting and the earlier one evaluated first (for `procrustes`
  and `refine`, the previous stage's best three instead);
- `--confirm N`: the searches' best N settings scored again on 15 more halvings (30 folds) that no trial
  saw, paired with Procrustes there; the best of them is the one to ship;
- `--normalization`: the shipped setting with and without `model.normalize_features`, its neighbours
  with it, and Procrustes on normalised features, on the search and confirmation halvings (40 folds);
- `--check-trainer`: the shipped job through mmray's trainer (Ray Train) on report fold s0a, against this
  script's in-process loop on the same fold;
- `--costs`: an epoch with the towers at every step against one from cached features, and a 40-epoch
  run's stored checkpoints against one bundle.
Usage: python benchmarks/coco_mini_cv.py [--search broad --samples 60 | --normalization | --check-trainer | --costs]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch
from coco_mini.features import frozen_features
from coco_mini.folds import REPORT_SEEDS, halvings
from coco_mini.heads import HeadSetting
from coco_mini.report import EARLIER_JOB, print_report, report

from mmray.config import TrainJob, load_job

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "coco-mini-clip.yaml"
RESULTS = ROOT / "benchmarks" / "results"


def _write(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--search", choices=("broad", "procrustes", "refine"))
    mode.add_argument("--confirm", type=int, metavar="N", help="re-score the searches' best N on fresh halvings")
    mode.add_argument("--normalization", action="store_true", help="features L2-normalised before the heads or not")
    mode.add_argument("--check-trainer", action="store_true")
    mode.add_argument("--costs", action="store_true")
    parser.add_argument("--samples", type=int, default=40, help="random draws of a search")
    parser.add_argument("--storage-root", default=str(ROOT / "runs" / "bench-coco-mini"))
    args = parser.parse_args()
    root = Path(args.storage_root).resolve()
    torch.set_num_threads(1)
    started = time.perf_counter()
    spec = load_job(JOB)
    assert isinstance(spec, TrainJob)
    shipped = HeadSetting.from_job(spec)
    features = frozen_features(spec, root / "features")
    print(f"frozen features: {features.images.shape[0]} images, {features.texts.shape[0]} captions "
          f"({time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip

    if args.search:
        from coco_mini.baselines import procrustes
        from coco_mini.folds import SEARCH_SEEDS
        from coco_mini.protocol import scores, summary
        from coco_mini.search import run_search

        first = [shipped] + ([EARLIER_JOB] if shipped != EARLIER_JOB else [])
        before = {"procrustes": "broad", "refine": "procrustes"}.get(args.search)
        earlier = RESULTS / f"coco_mini_cv-search-{before}.json"
        if before and earlier.exists():  # go on from the previous search's best three
            trials = json.loads(earlier.read_text())["trials"]
            first = [HeadSetting(**t["setting"]) for t in trials[:3] if t["setting"]["projection"] == "linear"]
        rows = run_search(features, args.search, args.samples, root / "tune", first)
        baseline = summary(scores(procrustes, features, halvings(features.images.shape[0], SEARCH_SEEDS)))
        print(
            f"\nsearch '{args.search}' on the search halvings: {len(rows)} settings, the best 10 "
            f"(Procrustes there: {baseline[0]:.1f} ± {baseline[1]:.1f})"
        )
        for setting, mean, sd in rows[:10]:
            print(f"{mean:7.1f} ± {sd:4.1f}  {setting.describe()}")
        print("best as job overrides:", " ".join(rows[0][0].overrides()))
        result = {
            "space": args.search,
            "procrustes": baseline,
            "trials": [{"rsum": m, "sd": s, "setting": st.__dict__} for st, m, s in rows],
        }
    elif args.confirm:
        from coco_mini.confirm import confirm, leaders

        stages = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("coco_mini_cv-search-*.json"))]
        confirmed = confirm(features, leaders(stages, args.confirm))
        best = HeadSetting(**confirmed[0]["setting"])
        print("chosen as job overrides:", " ".join(best.overrides()))
        result = {"candidates": confirmed}
    elif args.normalization:
        from coco_mini.normalization import compare_normalization

        result = {"rows": compare_normalization(features, shipped)}
    elif args.check_trainer:
        from coco_mini.check_trainer import check_trainer

        fold = halvings(features.images.shape[0], REPORT_SEEDS)[0]
        check = check_trainer(JOB, features, fold, root / "check")
        print(f"\nfold {check.fold}: mmray's trainer rsum {check.trainer_rsum:.2f} ({check.trainer_seconds:.0f} s), "
              f"in-process loop {check.in_process_rsum:.2f} ({check.in_process_seconds:.1f} s)")  # fmt: skip
        result = check.__dict__
    elif args.costs:
        from coco_mini.costs import checkpoint_sizes, epoch_seconds

        slow, fast = epoch_seconds(JOB, str(root), "off"), epoch_seconds(JOB, str(root), "auto")
        sizes = checkpoint_sizes(JOB, str(root))
        print(f"\nepoch after the first: {slow:.2f} s with the towers at every step, {fast:.3f} s from cached "
              f"features: {slow / fast:.1f}× faster; a 40-epoch run stores {sizes['stored_mb']:.1f} MiB, "
              f"one bundle {sizes['bundle_mb']:.1f} MiB")  # fmt: skip
        result = {"epoch_seconds": {"towers": slow, "cached": fast}, "sizes": sizes}
    else:
        result = report(features, shipped)
        print_report(result)
    minutes = (time.perf_counter() - started) / 60
    print(f"({minutes:.1f} minutes)")
    modes = {
        "normalization": args.normalization,
        "check-trainer": args.check_trainer,
        "confirm": args.confirm,
        "costs": args.costs,
    }
    mode_name = f"search-{args.search}" if args.search else next((m for m, on in modes.items() if on), "report")
    _write(f"coco_mini_cv-{mode_name}.json", {**result, "minutes": minutes})


if __name__ == "__main__":
    main()
