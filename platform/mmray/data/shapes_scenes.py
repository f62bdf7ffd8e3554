"""Scenes of the shapes dataset: objects with shape, colour, size and grid cell, and their captions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 50, 200),
    "cyan": (40, 210, 220),
}
SIZES = ("small", "large")
CELLS = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
OBJECTS_PER_IMAGE = (1, 2, 3)
OBJECT_COUNT_WEIGHTS = (0.2, 0.4, 0.4)

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_NUMBER_WORDS = {1: "one shape", 2: "two shapes", 3: "three shapes"}


@dataclass(frozen=True, order=True)
class ShapeObject:
    """One object: its attributes; the cell is an index into CELLS (row-major 3×3 grid)."""

    shape: str
    colour: str
    size: str
    cell: int


Scene = tuple[ShapeObject, ...]


def scene_key(scene: Scene) -> Scene:
    """The order-free identity of a scene: two scenes with equal keys fit the same captions."""
    return tuple(sorted(scene))


def choose_holdout(rng: np.random.Generator, fraction: float) -> frozenset[ShapeObject]:
    """Object combinations that never occur in training and occur in every validation scene."""
    objects = [
        ShapeObject(*combination) for combination in itertools.product(SHAPES, COLOURS, SIZES, range(len(CELLS)))
    ]
    picked = rng.choice(len(objects), size=round(fraction * len(objects)), replace=False)
    return frozenset(objects[int(i)] for i in picked)


def _random_object(rng: np.random.Generator, cell: int) -> ShapeObject:
    return ShapeObject(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        size=SIZES[rng.integers(len(SIZES))],
        cell=cell,
    )


def sample_scene(rng: np.random.Generator, holdout: frozenset[ShapeObject], for_validation: bool) -> Scene:
    """1-3 objects in distinct cells; a held-out object in every validation scene and in no training scene."""
    count = int(rng.choice(OBJECTS_PER_IMAGE, p=OBJECT_COUNT_WEIGHTS))
    cells = rng.choice(len(CELLS), size=count, replace=False)
    while True:
        scene = tuple(_random_object(rng, int(cell)) for cell in cells)
        if for_validation and holdout:
            held = sorted(holdout)
            replaced = held[rng.integers(len(held))]
            return (replaced, *(obj for obj in scene[1:] if obj.cell != replaced.cell))
        if not any(obj in holdout for obj in scene):
            return scene


_PLACE_WORDS = {
    "centre": ("in the centre", "in the middle"),
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "in the top middle"),
    "bottom": ("at the bottom", "in the bottom middle"),
}


def place_phrase(cell: int, rng: np.random.Generator) -> str:
    name = CELLS[cell]
    choices = _PLACE_WORDS.get(name, (f"in the {name}", f"at the {name}", f"in the {name} corner"))
    return str(rng.choice(choices))


def _object_phrase(obj: ShapeObject, rng: np.random.Generator, located: bool = False) -> str:
    """`a big red circle on the left`, or `located`: `on the left there is a big red circle`."""
    thing = f"{rng.choice(_SIZE_WORDS[obj.size])} {obj.colour} {obj.shape}"
    place = place_phrase(obj.cell, rng)
    return f"{place} there is a {thing}" if located else f"a {thing} {place}"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene, rng: np.random.Generator, style: int) -> str:
    """One caption naming every object's size, colour, shape and cell, in one of four wordings."""
    order = [scene[i] for i in rng.permutation(len(scene))]
    if style % 4 == 2:
        return "; ".join(_object_phrase(obj, rng, located=True) for obj in order)
    opening = ("", f"{_NUMBER_WORDS[len(scene)]}: ", "", "an image showing ")[style % 4]
    return opening + _join([_object_phrase(obj, rng) for obj in order])


def captions_for(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """`count` captions of the scene, each in a different wording where possible."""
    first_style = int(rng.integers(4))
    return [caption(scene, rng, first_style + i) for i in range(count)]
