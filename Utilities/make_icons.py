"""Draw the extension and module icons: a stylised spine (sagittal view) with one red, wedged vertebra.

Run from the repository root: ``python Utilities/make_icons.py``. Writes
``Resources/VertebralFracture.png`` (extension icon) and
``VertebralFracture/Resources/Icons/VertebralFracture.png`` (module icon), both 128×128 RGBA.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from VertebralFractureLib.anatomy import FRACTURED_COLOR, NORMAL_COLOR

SIZE = 128
SCALE = 4  # drawn 4× larger, then downsampled: smooth edges
ROOT = Path(__file__).resolve().parents[1]


def _rgb(color: tuple[float, float, float]) -> tuple[int, int, int, int]:
    return (*(int(round(255 * c)) for c in color), 255)


def _rotated(points: list[tuple[float, float]], centre: tuple[float, float], angle: float) -> list[tuple[float, float]]:
    cx, cy = centre
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def draw_spine(size: int = SIZE, fractured_index: int = 2) -> Image.Image:
    """Five vertebrae on a gently curved column; the ``fractured_index``-th is red and wedge-shaped."""
    n = 5
    big = size * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    outline = (60, 60, 70, 255)
    disc = (150, 170, 200, 255)
    bone, red = _rgb(NORMAL_COLOR), _rgb(FRACTURED_COLOR)
    top, bottom = 0.06 * big, 0.96 * big
    pitch = (bottom - top) / n
    width, height = 0.26 * big, 0.76 * pitch
    line = max(2, big // 48)
    for k in range(n):
        t = (k + 0.5) / n
        cx = big * (0.41 + 0.06 * math.sin(math.pi * (t - 0.2)))  # gentle lordosis
        cy = top + (k + 0.5) * pitch
        angle = 0.10 * math.cos(math.pi * t)  # follow the curve
        x0, x1, y0, y1 = cx - width / 2, cx + width / 2, cy - height / 2, cy + height / 2
        if k == fractured_index:  # anterior (left) height lost: a wedge
            body = [(x0, y0 + 0.22 * height), (x1, y0), (x1, y1), (x0, y1 - 0.10 * height)]
        else:
            body = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        body = _rotated(body, (cx, cy), angle)
        # posterior element (pedicle + spinous process) to the right of the body
        spine = [(x1, cy - 0.30 * height), (x1 + 0.30 * width, cy - 0.10 * height),
                 (x1 + 0.46 * width, cy + 0.45 * height), (x1 + 0.28 * width, cy + 0.50 * height),
                 (x1, cy + 0.25 * height)]
        spine = _rotated(spine, (cx, cy), angle)
        fill = red if k == fractured_index else bone
        draw.polygon(spine, fill=fill, outline=outline, width=line)
        draw.polygon(body, fill=fill, outline=outline, width=line)
        if k < n - 1:  # intervertebral disc
            dy = y1 + (pitch - height) / 2
            d = _rotated([(x0 + 0.1 * width, dy - 0.07 * pitch), (x1 - 0.1 * width, dy - 0.07 * pitch),
                          (x1 - 0.1 * width, dy + 0.07 * pitch), (x0 + 0.1 * width, dy + 0.07 * pitch)],
                         (cx, cy), angle)
            draw.polygon(d, fill=disc)
    return image.resize((size, size), Image.LANCZOS)


def main() -> None:
    icon = draw_spine()
    for path in (ROOT / "Resources" / "VertebralFracture.png",
                 ROOT / "VertebralFracture" / "Resources" / "Icons" / "VertebralFracture.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        icon.save(path, optimize=True)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
