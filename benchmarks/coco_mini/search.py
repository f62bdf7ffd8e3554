"""A Ray Tune search over the heads' settings on the search halvings (not the reported ones): each trial
trains its setting on every search fold in its own process and reports the mean held-out rsum."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .features import Features
from .folds import SEARCH_SEEDS, halvings
from .heads import HeadSetting
from .protocol import heads_method, scores, summary

STARTS = {"procrustes-linear": ("procrustes", "linear"), "random-linear": ("random", "linear"),
          "random-mlp": ("random", "mlp")}  # fmt: skip


def spaces() -> dict[str, dict[str, Any]]:
    """`broad`: every knob the issue names; `procrustes`: finer steps around a Procrustes start; `refine`:
    around the `procrustes` search's best, the temperature past its edge (0.5) up to the config's 1.0."""
    from ray import tune

    return {
        "broad": {
            "start": tune.choice(list(STARTS)),
            "embed_dim": tune.choice([32, 64, 128, 256]),
            "init_temperature": tune.choice([0.02, 0.05, 0.1, 0.2, 0.3, 0.5]),
            "learn_temperature": tune.choice([True, False]),
            "epochs": tune.choice([10, 20, 40, 80]),
            "every_caption": tune.choice([True, False]),
            "weight_decay": tune.choice([0.0, 0.01, 0.1, 0.5]),
            "lr": tune.choice([3e-5, 1e-4, 3e-4, 1e-3, 3e-3]),
        },
        "procrustes": {
            "start": "procrustes-linear",
            "embed_dim": tune.choice([39, 64, 128, 256]),
            "init_temperature": tune.choice([0.1, 0.2, 0.3, 0.5]),
            "learn_temperature": tune.choice([True, False]),
            "epochs": tune.choice([10, 20, 40]),
            "every_caption": tune.choice([True, False]),
            "weight_decay": tune.choice([0.1, 0.5, 1.0, 2.0]),
            "lr": tune.choice([1e-4, 3e-4, 1e-3, 3e-3]),
        },
        "refine": {
            "start": "procrustes-linear",
            "embed_dim": tune.choice([64, 128]),
            "init_temperature": tune.choice([0.5, 0.7, 1.0]),
            "learn_temperature": tune.choice([True, False]),
            "epochs": tune.choice([20, 40, 80]),
            "every_caption": True,
            "weight_decay": tune.choice([0.5, 1.0]),
            "lr": tune.choice([1e-4, 3e-4, 1e-3]),
        },
    }


def setting_of(config: dict[str, Any]) -> HeadSetting:
    values = dict(config)
    init, projection = STARTS[values.pop("start")]
    return HeadSetting(init_projections=init, projection=projection, **values)  # type: ignore[arg-type]


def config_of(setting: HeadSetting) -> dict[str, Any]:
    start = f"{setting.init_projections}-{setting.projection}"
    return {"start": start, "embed_dim": setting.embed_dim, "init_temperature": setting.init_temperature,
            "learn_temperature": setting.learn_temperature, "epochs": setting.epochs,
            "every_caption": setting.every_caption, "weight_decay": setting.weight_decay, "lr": setting.lr}  # fmt: skip


def trial(config: dict[str, Any], features: Features) -> None:
    """One setting on every search fold, in a Tune trial."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    values = scores(heads_method(setting_of(config)), features, halvings(features.images.shape[0], SEARCH_SEEDS))
    mean, sd = summary(values)
    tune.report({"rsum": mean, "rsum_sd": sd, "folds": values})


def run_search(
    features: Features, space: str, samples: int, storage: Path, seeds_first: list[HeadSetting]
) -> list[tuple[HeadSetting, float, float]]:
    """`samples` random draws from `space` (after the `seeds_first` settings), one trial at a time (Ray
    is given one CPU); every trial's setting with its mean and spread, best first."""
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    here = str(Path(__file__).resolve().parents[1])  # trials import this package as the driver does
    os.environ["PYTHONPATH"] = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trial, features=features), {"cpu": 1}),
            param_space=spaces()[space],
            tune_config=tune.TuneConfig(
                metric="rsum",
                mode="max",
                num_samples=samples + len(seeds_first),
                reuse_actors=True,
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[config_of(s) for s in seeds_first], random_state=0
                ),
            ),
            run_config=tune.RunConfig(
                name=f"search-{space}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage.resolve()), verbose=0
            ),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    rows = [
        (setting_of(r.config), r.metrics["rsum"], r.metrics["rsum_sd"])
        for r in (results[i] for i in range(len(results)))
        if r.metrics and r.config
    ]
    return sorted(rows, key=lambda row: -row[1])
