"""A finished search's results: the trials table (printed and saved as CSV), PNGs, and the best trial
exported as a ready-to-run training job with its model bundle."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from mmray import storage
from mmray.artifacts.manifests import BEST_MODEL, MANIFEST, run_pointer
from mmray.config.base import to_yaml
from mmray.errors import BundleError, TrainingError, json_object, reading
from mmray.tune.plots import objective_vs_key_png, trial_curves_png
from mmray.tune.schedulers import TIME_ATTR
from mmray.tune.space import trial_mapping
from mmray.tune.trial import PreparedSearch, trial_job


@dataclass
class TrialRow:
    trial_id: str
    status: str  # completed | stopped early | error
    iterations: int
    objective: float  # at the trial's last epoch
    best: float  # over its epochs
    values: dict[str, Any]
    curve: list[tuple[int, float]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # its Train runs in order (more than one under PBT)
    origins: list[str] = field(default_factory=list)  # "<trial>@<epoch>" each continued run started from


@dataclass
class SearchOutcome:
    metric: str
    mode: str
    rows: list[TrialRow]
    best: TrialRow
    best_job: str
    model_bundle: str
    results_csv: str
    figures: list[str]

    def table(self) -> str:
        keys = list(dict.fromkeys(k for row in self.rows for k in row.values))
        lineage = any(row.origins for row in self.rows)
        header = ["trial", "status", "epochs", self.metric, *keys, *(["continued from"] if lineage else [])]
        lines = [header]
        for row in self.rows:
            shown = [_cell(row.values.get(k, "-")) for k in keys]
            origins = [" > ".join(row.origins) or "-"] if lineage else []
            lines.append([row.trial_id, row.status, str(row.iterations), f"{row.objective:.4f}", *shown, *origins])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)

    def summary(self) -> dict[str, Any]:
        return {
            "best_job": self.best_job,
            "model_bundle": self.model_bundle,
            "results_csv": self.results_csv,
            "figures": self.figures,
            "metric": self.metric,
            "mode": self.mode,
            "best_objective": self.best.objective,
            "best_trial": self.best.trial_id,
            "best_values": self.best.values,
            "best_continued_from": self.best.origins,
            "trials": len(self.rows),
            "stopped_early": sum(1 for r in self.rows if r.status == "stopped early"),
            "errors": sum(1 for r in self.rows if r.status == "error"),
        }


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _row(result: Any, prepared: PreparedSearch) -> TrialRow:
    """A trial's row; values its trial did not use (a key of a kind it did not pick) are left out."""
    metric, mode, epochs = prepared.metric, prepared.mode, prepared.epochs
    frame = result.metrics_dataframe
    curve: list[tuple[int, float]] = []
    if frame is not None and metric in frame and TIME_ATTR in frame:
        curve = [(int(i), float(v)) for i, v in zip(frame[TIME_ATTR], frame[metric], strict=True)
                 if isinstance(v, int | float) and not math.isnan(v)]  # fmt: skip
    # The trial's own reports name it; a trial restored from another's checkpoint has that trial's last metrics.
    own_ids = _distinct(frame, "trial_id")
    trial_id = own_ids[-1] if own_ids else str(result.path.rstrip("/").rsplit("/", 1)[-1])
    runs = _distinct(frame, "train_run") or [f"trial-{trial_id}"]
    origins = [origin for origin in _distinct(frame, "continued_from") if origin]
    iterations = curve[-1][0] if curve else 0
    status = "error" if result.error else ("completed" if iterations >= epochs else "stopped early")
    measured = [v for _, v in curve]
    best = (max(measured) if mode == "max" else min(measured)) if measured else math.nan
    objective = measured[-1] if measured else math.nan
    sampled = dict(result.config["values"])
    unused = set(trial_mapping(prepared.plan.base, prepared.plan.fixed, sampled)[1])
    values = {key: value for key, value in sampled.items() if key not in unused}
    return TrialRow(trial_id, status, iterations, objective, best, values, curve, runs, origins)


def _distinct(frame: Any, column: str) -> list[str]:
    """A text column's values in the order they first appear."""
    if frame is None or column not in frame:
        return []
    return list(dict.fromkeys(str(v) for v in frame[column] if isinstance(v, str)))


def best_trial_bundle(run_dir: str, metric: str, mode: str) -> str:
    """The run's best-model pointer, else its kept checkpoint (a model bundle) with the best `metric`: a
    scheduler may stop a trial after its last report, before the run writes its pointers."""
    best = run_pointer(run_dir, BEST_MODEL)
    if best is not None:
        return best
    scored = []
    for manifest in storage.list_files(run_dir):
        if manifest.endswith("/" + MANIFEST) and "/checkpoint_" in manifest:
            with reading(manifest, BundleError):
                value = json_object(storage.read_text(manifest)).get("metrics", {}).get(metric)
            if isinstance(value, int | float) and not math.isnan(value):
                scored.append((float(value), manifest.rsplit("/", 1)[0]))
    if not scored:
        return ""
    return (max(scored) if mode == "max" else min(scored))[1]


def _csv(rows: list[TrialRow], metric: str) -> str:
    keys = sorted({k for row in rows for k in row.values})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial_id", "status", "iterations", metric, f"best_{metric}", *keys])
    for row in rows:
        writer.writerow([row.trial_id, row.status, row.iterations, row.objective, row.best,
                         *(row.values.get(k) for k in keys)])  # fmt: skip
    return buffer.getvalue()


def summarise(prepared: PreparedSearch, grid: Any) -> SearchOutcome:
    """Write results.csv, trials.png, objective_vs_<key>.png and best_job.yaml under the experiment."""
    metric, mode = prepared.metric, prepared.mode
    rows = sorted((_row(r, prepared) for r in grid), key=lambda r: r.trial_id)
    completed = [r for r in rows if r.status == "completed" and not math.isnan(r.objective)]
    if not completed:
        errors = [str(r.error).splitlines()[0] for r in grid if r.error][:3]
        raise TrainingError(f"search {prepared.job.name}: no trial completed; errors: {errors or 'none reported'}")
    best = (max if mode == "max" else min)(completed, key=lambda r: r.objective)
    root = prepared.experiment_uri
    results_csv = storage.join(root, "results.csv")
    storage.write_text(results_csv, _csv(rows, metric))
    figures = [storage.join(root, "trials.png")]
    stopped = {r.trial_id for r in rows if r.status == "stopped early"}
    storage.write_bytes(figures[0], trial_curves_png({r.trial_id: r.curve for r in rows}, metric, stopped))
    for key in prepared.space:
        measured = [r for r in rows if key in r.values and not math.isnan(r.objective)]
        figure = storage.join(root, f"objective_vs_{key.replace('.', '_')}.png")
        png = objective_vs_key_png(key, [r.values[key] for r in measured], [r.objective for r in measured], metric)
        storage.write_bytes(figure, png)
        figures.append(figure)
    exported = trial_job(prepared.plan, best.values, f"{prepared.job.name}-best")
    exported = exported.model_copy(update={"storage_root": prepared.job.storage_root})
    best_job = storage.join(root, "best_job.yaml")
    header = f"# best trial {best.trial_id} of tune job {prepared.job.name}: {metric} {best.objective:.4f}\n"
    if best.origins:
        header += (f"# its values changed as it trained (population-based training): these are its last; it "
                   f"continued from {' > '.join(best.origins)} (trial@epoch)\n")  # fmt: skip
    storage.write_text(best_job, header + to_yaml(exported))
    model_bundle = best_trial_bundle(storage.join(prepared.plan.trials_root, best.runs[-1]), metric, mode)
    return SearchOutcome(metric, mode, rows, best, best_job, model_bundle, results_csv, figures)
