"""Search spaces over a training job's dotted keys: parsing, the job of one trial, and checks of every
key and value against the job's schema before any trial starts."""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmray.config.base import read_yaml_mapping
from mmray.config.jobs import TrainJob, validate_job
from mmray.config.kind_switch import field_accepted, merge_switching_kinds
from mmray.config.tuning import TuneJob
from mmray.errors import ConfigError

FORMS = ("uniform", "loguniform", "randint", "choice", "grid")
_EXPRESSION = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Distribution:
    """One key's distribution: `uniform(a, b)`, `loguniform(a, b)`, `randint(a, b)` (both ends
    included), `choice([...])` or `grid([...])` (every value, crossed with the other grid keys)."""

    form: str
    args: tuple[Any, ...]

    def candidates(self) -> list[Any]:
        """The values checked before searching: the bounds, or every listed value."""
        return list(self.args[0]) if self.form in ("choice", "grid") else [self.args[0], self.args[1]]

    def to_tune(self) -> Any:
        from ray import tune

        if self.form in ("uniform", "loguniform"):
            return getattr(tune, self.form)(*self.args)
        if self.form == "randint":
            return tune.randint(self.args[0], self.args[1] + 1)  # Tune's upper end is excluded
        return (tune.choice if self.form == "choice" else tune.grid_search)(list(self.args[0]))


def _number(value: Any) -> Any:
    """YAML reads 1e-4 (no dot) as text; such text becomes the number it spells."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def parse_distribution(key: str, text: str) -> Distribution:
    match = _EXPRESSION.match(text)
    if match is None or match.group(1) not in FORMS:
        raise ConfigError(f"space.{key}: {text!r} is not one of {', '.join(f + '(...)' for f in FORMS)}")
    form = match.group(1)
    try:
        args = yaml.safe_load(f"[{match.group(2)}]")
    except yaml.YAMLError as exc:
        raise ConfigError(f"space.{key}: cannot read the arguments of {text!r}: {exc}") from None
    if form in ("choice", "grid"):
        if len(args) != 1 or not isinstance(args[0], list) or not args[0]:
            raise ConfigError(f"space.{key}: {form} takes one non-empty list, e.g. {form}([a, b]); got {text!r}")
        return Distribution(form, (tuple(_number(a) for a in args[0]),))
    args = [_number(a) for a in args]
    if len(args) != 2 or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"space.{key}: {form} takes two numbers, e.g. {form}(1, 10); got {text!r}")
    low, high = args
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"space.{key}: {form} needs finite bounds, got {low} and {high}")
    if not low < high:
        raise ConfigError(f"space.{key}: {form} needs low < high, got {low} and {high}")
    if form == "loguniform" and low <= 0:
        raise ConfigError(f"space.{key}: loguniform needs positive bounds, got {low}")
    if form == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"space.{key}: randint takes integers, got {low} and {high}")
    return Distribution(form, (low, high))


def parse_space(space: Mapping[str, str]) -> dict[str, Distribution]:
    return {key: parse_distribution(key, text) for key, text in space.items()}


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    tree: dict[str, Any] = {}
    for key, value in dotted.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def base_mapping(job: TuneJob, directory: Path | None = None) -> dict[str, Any]:
    """The base training job as a mapping (a file is read relative to `directory`, default the cwd)."""
    if isinstance(job.base, dict):
        raw = dict(job.base)
    else:
        path = Path(job.base)
        raw = read_yaml_mapping(path if path.is_absolute() or directory is None else directory / path)
    if raw.get("kind") != "train":
        raise ConfigError(f"base: a tune job searches a 'train' job; {job.base!r} is of kind {raw.get('kind')!r}")
    return raw


def trial_mapping(
    base: Mapping[str, Any], fixed: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The training job of one trial: `fixed`, then the searched kinds, then the other values. A value
    whose section's kind is searched and does not take it is left out; those keys are returned."""
    mapping, _ = merge_switching_kinds(base, nest(fixed), TrainJob)
    kinds = {key: value for key, value in values.items() if key.endswith(".kind")}
    mapping, _ = merge_switching_kinds(mapping, nest(kinds), TrainJob)
    inactive, rest = [], {}
    for key, value in values.items():
        if key in kinds:
            continue
        searched_kind = any(key.startswith(kind[: -len("kind")]) for kind in kinds)
        if searched_kind and not field_accepted(TrainJob, mapping, key):
            inactive.append(key)
        else:
            rest[key] = value
    mapping, _ = merge_switching_kinds(mapping, nest(rest), TrainJob)
    return mapping, inactive


def check_space(base: Mapping[str, Any], fixed: Mapping[str, Any], space: dict[str, Distribution]) -> None:
    """Every value a trial can take must give a valid training job: each key's bounds or choices are
    tried (under each searched kind of its sections); the first rejection is an error naming it."""
    try:
        validate_job(trial_mapping(base, fixed, {})[0], "base with overrides")
    except ConfigError as exc:
        raise ConfigError(f"the base job with the tune job's overrides is not valid: {exc}") from None
    kind_keys = [key for key in space if key.endswith(".kind")]
    for key, distribution in space.items():
        ancestors = [k for k in kind_keys if k != key and key.startswith(k[: -len("kind")])]
        used = False
        for combo in itertools.product(*(space[k].candidates() for k in ancestors)):  # one () without ancestors
            for value in distribution.candidates():
                values = {**dict(zip(ancestors, combo, strict=True)), key: value}
                mapping, inactive = trial_mapping(base, fixed, values)
                if key in inactive:
                    continue
                used = True
                try:
                    validate_job(mapping, "trial")
                except ConfigError as exc:
                    reason = str(exc).splitlines()[0].split(": ", 1)[-1]
                    raise ConfigError(f"space.{key}: value {value!r} is rejected: {reason}") from None
        if not used:
            shown = ", ".join(f"{k}={list(space[k].candidates())}" for k in ancestors)
            raise ConfigError(f"space.{key}: no searched kind takes this key ({shown})")
