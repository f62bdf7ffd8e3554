"""The training feed at scale: one epoch of a small shapes model on 2 Ray Train workers, the split decoded into
memory (`train.loader=memory`) against streamed by Ray Data from the JPEGs (`ray_data`) and read from the split
prepared once as shards by the workers themselves (`shards`), at two split sizes.

Each run is a real `mmray train` (its own local Ray). While it runs, the peak resident memory of the driver
(the `mmray` process) and of each Ray Train worker is read from /proc (VmHWM, the kernel's own high-water
mark). samples/s and the time to the first batch are the run's own epoch metrics. The shapes splits are
generated once under --root and reused.

Targets, each measured in this run: the streaming driver's peak RSS grows < 300 MB from the small split to
the large one; streaming samples/s ≥ 0.9 × the memory loader's at the small split, both after their
first batch (`steady`: the stream's start-up left out as the memory loader's decoding on the driver is;
the epoch's own samples/s and the run's wall time are shown too); time to first batch < 30 s at the large
split.
The `shards` rows read the split prepared by `mmray data prepare --shards` (its time printed): pixels, not
JPEGs, and no Ray Data.
Usage: python benchmarks/data_scale.py [--sizes 10000 100000] [--root data/scale] [--out runs/data-scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mmray.config.data import ShapesData
from mmray.data.shapes import dataset_dir, generate_shapes

VAL_IMAGES = 256
LOADERS = ("memory", "ray_data", "shards")
"""`shards`: the split prepared once by `mmray data prepare --shards`, read by each worker (no JPEG decoding)."""


def shapes_config(root: str, train_images: int) -> ShapesData:
    return ShapesData(source="shapes", root=root, images=train_images + VAL_IMAGES, val_images=VAL_IMAGES, seed=0)


def job(config: ShapesData, storage_root: str, loader: str, workers: int, shards: str | None = None) -> dict[str, Any]:
    """One epoch of a small dual encoder; the validation split stays small so the feed dominates."""
    data = config.model_dump() | ({"prepared": shards} if loader == "shards" else {})
    return {
        "kind": "train",
        "name": f"scale-{config.images - VAL_IMAGES}-{loader}",
        "storage_root": storage_root,
        "data": data,
        "model": {
            "kind": "dual_encoder",
            "embed_dim": 32,
            "image": {"kind": "small_cnn", "width": 8, "blocks": 4},
            "text": {"kind": "small_transformer", "width": 32, "layers": 1, "heads": 2, "max_length": 40},
        },
        "task": {"kind": "retrieval", "loss": {"kind": "infonce"}},
        "train": {
            "epochs": 1,
            "batch_size": 128,
            "lr": 0.003,
            "num_workers": workers,
            "loader": loader,
            "log_every_steps": 100,
            "eval_batch_size": 256,
            "checkpoint": {"num_to_keep": 1},
        },
    }


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def train_worker_pids() -> list[int]:
    """Processes whose title names a Ray Train worker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"RayTrainWorker" in title:
            pids.append(int(entry.name))
    return pids


class PeakWatcher:
    """Polls the driver's and the training workers' peak RSS every half second while a run lasts."""

    def __init__(self, driver: int) -> None:
        self.driver, self.driver_peak = driver, 0.0
        self.worker_peaks: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stop.wait(0.5):
            self.driver_peak = max(self.driver_peak, peak_rss_mb(self.driver))
            for pid in train_worker_pids():
                self.worker_peaks[pid] = max(self.worker_peaks.get(pid, 0.0), peak_rss_mb(pid))

    def finish(self) -> tuple[float, float]:
        self.stop.set()
        self.thread.join()
        return self.driver_peak, max(self.worker_peaks.values(), default=0.0)


def mmray_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "mmray"), *args]


def prepare_shards(config: ShapesData, storage_root: str, shards: str, scratch: Path) -> float:
    """Seconds `mmray data prepare --shards` takes to write the split's shards (reused when there)."""
    if Path(shards, "train", "prepared.json").exists():
        return float("nan")
    path = scratch / "prepare.yaml"
    path.write_text(yaml.safe_dump(job(config, storage_root, "memory", 1)))
    began = time.perf_counter()
    subprocess.run(mmray_command("data", "prepare", str(path), "--shards", shards), check=True, capture_output=True)
    return time.perf_counter() - began


def run(config: ShapesData, storage_root: str, loader: str, workers: int, scratch: Path, shards: str) -> dict[str, Any]:
    spec = job(config, storage_root, loader, workers, shards)
    path = scratch / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    command = mmray_command("train", str(path), "--force-new")
    with (scratch / f"{spec['name']}.log").open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        watcher = PeakWatcher(process.pid)
        stdout, _ = process.communicate()
    driver_mb, worker_mb = watcher.finish()
    if process.returncode != 0:
        raise SystemExit(f"{spec['name']} failed (exit {process.returncode}); see {scratch / spec['name']}.log")
    outcome = json.loads(stdout.strip().splitlines()[-1])
    epoch = json.loads(Path(outcome["run_dir"], "metrics.json").read_text())["history"][0]
    return {
        "images": config.images - VAL_IMAGES,
        "loader": loader,
        "driver_peak_mb": driver_mb,
        "worker_peak_mb": worker_mb,
        "samples_per_s": epoch["samples_per_s"],
        "steady_samples_per_s": steady_rate(epoch, spec["train"]["batch_size"]),
        "first_batch_s": epoch["first_batch_seconds"],
        "input_wait_fraction": epoch["input_wait_fraction"],
        "wall_s": time.perf_counter() - started,
    }


def steady_rate(epoch: dict[str, Any], batch_size: int) -> float:
    """samples/s after the first batch arrived (the stream's start-up, like the memory loader's decoding on
    the driver before the epoch, left out)."""
    samples = epoch["samples_per_s"] * epoch["epoch_seconds"]
    return float((samples - batch_size) / (epoch["epoch_seconds"] - epoch["first_batch_seconds"]))


def verdicts(rows: list[dict[str, Any]], small: int, large: int) -> list[str]:
    """Each target's figure and verdict, where this run measured the rows it needs."""
    found = {(row["images"], row["loader"]): row for row in rows}
    lines = []
    for loader, label in (("ray_data", "streaming"), ("shards", "streaming prepared shards")):
        if {(small, loader), (large, loader)} <= found.keys():
            growth = found[(large, loader)]["driver_peak_mb"] - found[(small, loader)]["driver_peak_mb"]
            lines.append(
                f"{label} driver peak RSS growth {small} → {large} images: {growth:.0f} MB (target < 300): "
                + ("met" if growth < 300 else "missed")
            )
    for loader, label in (("ray_data", "streaming"), ("shards", "streaming prepared shards")):
        if {(small, loader), (small, "memory")} <= found.keys():
            ratio = found[(small, loader)]["steady_samples_per_s"] / found[(small, "memory")]["steady_samples_per_s"]
            lines.append(
                f"{label} / memory steady samples/s at {small} images: {ratio:.2f} (target ≥ 0.9): "
                + ("met" if ratio >= 0.9 else "missed")
            )
    for loader, label in (("ray_data", "streaming"), ("shards", "streaming prepared shards")):
        if (large, loader) in found:
            first = found[(large, loader)]["first_batch_s"]
            lines.append(
                f"{label} time to first batch at {large} images: {first:.1f} s (target < 30): "
                + ("met" if first < 30 else "missed")
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000], help="the small and large split")
    parser.add_argument("--root", default="data/scale", help="where the shapes splits are generated once")
    parser.add_argument("--storage-root", default="runs/data-scale")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/data-scale.json")
    parser.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmray-data-scale-") as scratch:
        for size in args.sizes:
            config = shapes_config(args.root, size)
            began = time.perf_counter()
            generate_shapes(config, dataset_dir(config))
            print(f"{size} images ready in {time.perf_counter() - began:.0f} s", file=sys.stderr)
            shards = os.path.join(args.root, f"prepared-{size}")
            if "shards" in args.loaders:
                seconds = prepare_shards(config, args.storage_root, shards, Path(scratch))
                print(f"{size} images prepared as shards in {seconds:.0f} s", file=sys.stderr)
            for loader in args.loaders:
                row = run(config, args.storage_root, loader, args.workers, Path(scratch), shards)
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
    columns = ("images", 8), ("loader", 9), ("driver MB", 10), ("worker MB", 10), ("samples/s", 10), ("steady", 7)
    print(" ".join(f"{name:>{width}}" for name, width in columns) + " 1st batch s   wait   wall s")
    for row in rows:
        print(
            f"{row['images']:>8} {row['loader']:>9} {row['driver_peak_mb']:>10.0f} {row['worker_peak_mb']:>10.0f} "
            f"{row['samples_per_s']:>10.0f} {row['steady_samples_per_s']:>7.0f} {row['first_batch_s']:>11.1f} "
            f"{row['input_wait_fraction']:>6.2f} {row['wall_s']:>8.0f}"
        )
    lines = verdicts(rows, *args.sizes)
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "verdicts": lines}, indent=2))


if __name__ == "__main__":
    main()
