"""Narrow views of a labelled radiograph dataset: each image cut to the vertebral bodies and a margin.

Usage:
    python Utilities/narrow_radiographs.py SOURCE OUT [--margin-mm 15]

``SOURCE`` is a folder written by ``VertebralFractureLib.training.radiograph_data``. Every image is
cut to the columns of its true boxes (and ignore regions) plus ``--margin-mm`` on each side, as a
tightly collimated lateral view or a radiograph reconstructed from a spine-only CT shows the spine
alone; the boxes move with it. ``vertebral-fracture evaluate radiograph OUT`` then measures the
models on such views. The source is only read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def narrow_entry(entry: dict, cols: int, margin_mm: float) -> tuple[int, int, dict] | None:
    """The columns kept (first, last + 1) and the entry with its boxes moved; None without boxes."""
    boxes = [v["box_px"] for v in entry["vertebrae"]] + [v["box_px"] for v in entry.get("ignore", [])]
    if not boxes:
        return None
    margin = margin_mm / float(entry["pixel_mm"])
    c0 = max(0, int(min(b[0] for b in boxes) - margin))
    c1 = min(cols, int(max(b[2] for b in boxes) + margin) + 1)

    def moved(items: list[dict]) -> list[dict]:
        return [{**v, "box_px": [round(v["box_px"][0] - c0, 2), v["box_px"][1], round(v["box_px"][2] - c0, 2),
                                 v["box_px"][3]]} for v in items]

    out = {**entry, "vertebrae": moved(entry["vertebrae"]), "narrowed": {"columns": [c0, c1], "margin_mm": margin_mm}}
    if "ignore" in entry:
        out["ignore"] = moved(entry["ignore"])
    return c0, c1, out


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--margin-mm", type=float, default=15.0)
    args = ap.parse_args(argv)
    index = args.source / "radiographs.json"
    data = json.loads(index.read_text(encoding="utf-8"))
    if (args.output / "radiographs.json").exists():
        ap.error(f"{args.output / 'radiographs.json'} exists: choose another folder")
    (args.output / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for e in data["radiographs"]:
        with Image.open(args.source / e["image"]) as im:
            cut = narrow_entry(e, im.size[0], args.margin_mm)
            if cut is None:
                shutil.copyfile(args.source / e["image"], args.output / e["image"])
                entries.append(e)
                continue
            c0, c1, moved = cut
            im.crop((c0, 0, c1, im.size[1])).save(args.output / e["image"])
        entries.append(moved)
    (args.output / "radiographs.json").write_text(json.dumps({**data, "radiographs": entries}, indent=1) + "\n",
                                                  encoding="utf-8")
    print(f"wrote {len(entries)} narrowed radiographs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
