"""Questions about shapes scenes whose answers need both the image and the text.

Presence questions ("is there a small red circle in the top left?") are balanced by construction:
the answer is drawn independently of the scene, and the attributes a question names are drawn the
same way for both answers, so the image alone and the text alone carry no information about it.
Count questions ("how many blue shapes are there?") ask how many objects share an attribute.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmray.data.shapes_scenes import CELLS, Scene, ShapeObject, place_phrase

PRESENCE_ATTRIBUTES: tuple[tuple[str, ...], ...] = (
    ("shape",),
    ("colour",),
    ("cell",),
    ("colour", "shape"),
    ("size", "shape"),
    ("shape", "cell"),
    ("colour", "cell"),
    ("size", "colour", "shape"),
    ("colour", "shape", "cell"),
    ("size", "colour", "shape", "cell"),
)
"""Attribute sets a presence question names; each holds shape, colour or cell, so that with at most
three objects a question with the answer "no" always exists."""

COUNT_ATTRIBUTES: tuple[tuple[str, ...], ...] = (("colour",), ("shape",), ("size",), ("size", "colour"))
_MAX_DRAWS = 200


@dataclass(frozen=True)
class Question:
    """A question's text, what it asks about, and its answer as named targets."""

    text: str
    kind: str
    attributes: dict[str, Any]
    targets: dict[str, int]

    def annotation(self) -> dict[str, Any]:
        return {"question": {"kind": self.kind, "attributes": self.attributes}, "targets": self.targets}


def _spec(obj: ShapeObject, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


def _matches(obj: ShapeObject, spec: dict[str, Any]) -> bool:
    return all(getattr(obj, name) == value for name, value in spec.items())


def _noun_phrase(spec: dict[str, Any], plural: bool = False) -> str:
    words = [spec[name] for name in ("size", "colour") if name in spec]
    noun = spec.get("shape", "shape")
    return " ".join([*words, noun + ("s" if plural else "")])


def presence_question(scene: Scene, pool: list[ShapeObject], rng: np.random.Generator) -> Question:
    """A yes/no question about `scene`; "no" questions name attributes of an object from `pool`
    (objects of the split's other scenes) that no object of the scene has."""
    names = PRESENCE_ATTRIBUTES[rng.integers(len(PRESENCE_ATTRIBUTES))]
    present = int(rng.integers(2))
    if present:
        spec = _spec(scene[rng.integers(len(scene))], names)
    else:
        for _ in range(_MAX_DRAWS):
            spec = _spec(pool[rng.integers(len(pool))], names)
            if not any(_matches(obj, spec) for obj in scene):
                break
        else:
            raise ValueError(f"no absent object with attributes {names} found for scene {scene}")
    noun = _noun_phrase(spec)
    article = "an" if noun[0] in "aeiou" else "a"
    place = f" {place_phrase(spec['cell'], rng)}" if "cell" in spec else ""
    attributes = {**spec, **({"cell": CELLS[spec["cell"]]} if "cell" in spec else {})}
    return Question(f"is there {article} {noun}{place}?", "present", attributes, {"present": present})


def count_question(scene: Scene, pool: list[ShapeObject], rng: np.random.Generator) -> Question:
    """How many objects of `scene` share the attributes of one of its objects or of a pool object
    (half each, so that zero is a common answer but not the only one)."""
    names = COUNT_ATTRIBUTES[rng.integers(len(COUNT_ATTRIBUTES))]
    source = scene[rng.integers(len(scene))] if rng.integers(2) else pool[rng.integers(len(pool))]
    spec = _spec(source, names)
    count = sum(_matches(obj, spec) for obj in scene)
    wording = ("how many {} are there?", "how many {} can you see?", "count the {}")[rng.integers(3)]
    return Question(wording.format(_noun_phrase(spec, plural=True)), "count", spec, {"count": count})


def questions_for(
    scene: Scene, pool: list[ShapeObject], rng: np.random.Generator, presence: int, counts: int
) -> list[Question]:
    return [presence_question(scene, pool, rng) for _ in range(presence)] + [
        count_question(scene, pool, rng) for _ in range(counts)
    ]


def chance_levels(questions: list[Question]) -> dict[str, dict[str, float]]:
    """What a model seeing neither modality scores: the majority answer's share for presence, and for
    counts the majority share, the mean answer and the answers' variance (R² 0 predicts the mean)."""
    levels: dict[str, dict[str, float]] = {}
    present = [q.targets["present"] for q in questions if "present" in q.targets]
    if present:
        share = sum(present) / len(present)
        levels["present"] = {"questions": len(present), "share_yes": share, "chance_accuracy": max(share, 1 - share)}
    counts = [q.targets["count"] for q in questions if "count" in q.targets]
    if counts:
        tally = Counter(counts)
        values = np.asarray(counts, dtype=np.float64)
        levels["count"] = {
            "questions": len(counts),
            "chance_accuracy": max(tally.values()) / len(counts),
            "mean": float(values.mean()),
            "variance": float(values.var()),
            **{f"share_{answer}": tally[answer] / len(counts) for answer in sorted(tally)},
        }
    return levels
