"""What a Ray process that mmray starts costs before it does any work: the CPU seconds and peak memory of
importing (or unpickling) what it runs, each in a fresh Python, against the model replica's imports (the
baseline, which needs torch and the model code) measured in the same run.

Rows:
  model replica        serving/deployments.py (torch, torchvision, the model registry)
  http ingress         serving/ingress.py (FastAPI, the manifests; no torch)
  retriever            serving/retriever_deployment.py (faiss, the index; no torch)
  state keeper         serving/following.py
  train controller     mmray's Ray Train callbacks unpickled as the controller does
  train controller     the loop config's object itself unpickled, as the controller did before it got a
  (loop config)        reference (the spec, processor and task class: torch and the model code)
Every row is the median of --rounds fresh processes; ratios are row / model replica.
Usage: python benchmarks/process_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MEASURE = """
import json, resource, sys, time
start = time.process_time()
{code}
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"cpu_s": time.process_time() - start, "peak_mib": usage.ru_maxrss / 1024,
                  "torch": "torch" in sys.modules}}))
"""

CALLBACKS = (
    "import pickle, tempfile; from mmray.train.pointer_callback import PointAtKept; "
    "from mmray.tune.reporting import ReportChannel, ReportThroughChannel; "
    "data = pickle.dumps([PointAtKept(tempfile.gettempdir(), 'max'), ReportThroughChannel(ReportChannel(None, None))])"
)
ROWS = {
    "model replica": "from mmray.serving.deployments import ModelDeployment",
    "http ingress": "from mmray.serving.ingress import Ingress",
    "retriever": "from mmray.serving.retriever_deployment import RetrieverDeployment",
    "state keeper": "from mmray.serving.following import StateKeeper",
    "train controller": "import pickle, sys; pickle.loads(sys.stdin.buffer.read())",
    "train controller (loop config)": "import pickle, sys; pickle.loads(sys.stdin.buffer.read())",
}


def _pickled(code: str) -> bytes:
    """Bytes made in a separate process, so that the measured one imports only what unpickling needs."""
    made = subprocess.run([sys.executable, "-c", f"{code}; import sys; sys.stdout.buffer.write(data)"],
                          capture_output=True, check=True, env=os.environ.copy())  # fmt: skip
    return made.stdout


def _loop_config_pickle() -> bytes:
    """A retrieval job's loop config as the driver builds it (`driver.loop_config`), its arrays left out."""
    code = (
        "import pickle, tempfile; from mmray.config import load_job; "
        "from mmray.train.driver import loop_config, prepare_driver_data; "
        f"spec = load_job('jobs/shapes-clip.yaml', ['train.loader=memory', 'data.root={tempfile.mkdtemp()}', "
        "'data.images=400', 'data.val_images=40', 'train.batch_size=32']); "
        "config = {k: v for k, v in loop_config(prepare_driver_data(spec), lambda v: None).items() "
        "if not k.endswith('_arrays')}; data = pickle.dumps(config)"
    )
    return _pickled(code)


def measure(code: str, stdin: bytes, rounds: int) -> dict[str, float | bool]:
    runs = []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, "-c", MEASURE.format(code=code)], input=stdin, capture_output=True,
                              check=True, env=os.environ.copy())  # fmt: skip
        runs.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))
    return {
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_mib": statistics.median(r["peak_mib"] for r in runs),
        "torch": runs[-1]["torch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    inputs = {"train controller": _pickled(CALLBACKS), "train controller (loop config)": _loop_config_pickle()}
    results = {name: measure(code, inputs.get(name, b""), args.rounds) for name, code in ROWS.items()}
    base = results["model replica"]
    print(f"{'process':32} {'cpu s':>7} {'peak MiB':>9} {'torch':>6} {'cpu ratio':>10} {'memory ratio':>13}")
    for name, row in results.items():
        print(f"{name:32} {row['cpu_s']:7.2f} {row['peak_mib']:9.0f} {row['torch']!s:>6} "
              f"{row['cpu_s'] / base['cpu_s']:10.2f} {row['peak_mib'] / base['peak_mib']:13.2f}")  # fmt: skip
    print(json.dumps({"rounds": args.rounds, "results": results}))


if __name__ == "__main__":
    main()
