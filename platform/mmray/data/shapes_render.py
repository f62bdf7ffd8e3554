"""Drawing shapes-dataset scenes into RGB images with their COCO polygons and boxes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mmray.data.shapes_scenes import COLOURS, Scene, ShapeObject

_SUPERSAMPLE = 4
_RADIUS_OF_SIZE = {"small": 0.22, "large": 0.40}
_VERTICES = {"circle": (0.0, 20), "square": (math.pi / 4, 4), "triangle": (-math.pi / 2, 3), "diamond": (0.0, 4)}
"""Per shape, the angle of its first vertex and its vertex count (a circle's polygon approximates it)."""


@dataclass(frozen=True)
class DrawnObject:
    """Where an object landed: its polygon (x0, y0, x1, y1, …), box (x, y, w, h) and area, in pixels."""

    obj: ShapeObject
    polygon: tuple[float, ...]
    bbox: tuple[float, float, float, float]
    area: float


def _polygon(obj: ShapeObject, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    start, vertices = _VERTICES[obj.shape]
    angles = [start + 2 * math.pi * i / vertices for i in range(vertices)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]


def _shoelace(points: list[tuple[float, float]]) -> float:
    total = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        total += x0 * y1 - x1 * y0
    return abs(total) / 2.0


def render_scene(scene: Scene, size: int, rng: np.random.Generator) -> tuple[Image.Image, list[DrawnObject]]:
    """Draw the scene on a noisy dark background; positions, sizes and colours are jittered."""
    cell = size / 3.0
    big = size * _SUPERSAMPLE
    background = int(rng.integers(25, 80))
    canvas = Image.new("RGB", (big, big), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    drawn = []
    for obj in scene:
        row, col = divmod(obj.cell, 3)
        radius = cell * _RADIUS_OF_SIZE[obj.size] * float(rng.uniform(0.9, 1.1))
        cx = (col + 0.5) * cell + float(rng.uniform(-0.08, 0.08)) * cell
        cy = (row + 0.5) * cell + float(rng.uniform(-0.08, 0.08)) * cell
        points = _polygon(obj, cx, cy, radius)
        colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[obj.colour])
        if obj.shape == "circle":
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            draw.ellipse([v * _SUPERSAMPLE for v in box], fill=colour)
            area = math.pi * radius * radius
        else:
            draw.polygon([(x * _SUPERSAMPLE, y * _SUPERSAMPLE) for x, y in points], fill=colour)
            area = _shoelace(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
        x1, y1 = min(float(size), max(xs)), min(float(size), max(ys))
        polygon = tuple(round(float(np.clip(v, 0, size)), 2) for point in points for v in point)
        drawn.append(
            DrawnObject(
                obj=obj,
                polygon=polygon,
                bbox=(round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)),
                area=round(area, 2),
            )
        )
    image = canvas.resize((size, size), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=np.float32)  # (S, S, 3)
    noisy = pixels + rng.normal(0.0, 6.0, size=pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), drawn
