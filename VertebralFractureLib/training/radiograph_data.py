"""Synthetic lateral radiographs with exact labels, for the radiograph models (seeds 003 and 004).

Each SynthSpine case of a VerSe-layout folder gives ``per_case`` radiographs
(:mod:`VertebralFractureLib.synth.radiograph`), each with its own drawn acquisition and field of
view: ``lumbar`` (L1–L5 with a margin, as a lateral lumbar radiograph), ``thoracolumbar`` (T10–L5)
or the whole projection. Labels per radiograph:

* the box of every vertebral body in view (from its six Genant keypoints; :func:`body_in_view`:
  a vertebra whose processes the source CT cuts still shows its body whole), its name, Genant
  grade and type, and its class: ``normal`` (grade 0), ``fresh`` or ``old`` (grade ≥ 1, by
  the fracture's age; SynthSpine's ``fracture_age``, fresh where the truth predates ages);
* ``fresh_vcf``: a fresh fracture of grade ≥ 1 in view (seed 003's label for the whole image);
* ``ignore``: the part in view of every other vertebral body the image shows (cut by the end of
  the source CT or by the field of view), with its name: neither a true box nor background, so a
  detector that boxes it is not counted wrong (:func:`~VertebralFractureLib.radiograph_detect.average_precision`)
  and is not taught to miss it. A real radiograph shows these vertebrae whole.

Written as 16-bit PNG images and one ``radiographs.json``::

    python -m VertebralFractureLib.training.radiograph_data data/rad-synth-a -o data/radiographs-a --per-case 2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.radiograph_classify import CLASSES  # normal, old, fresh: seed 004's classes
from VertebralFractureLib.synth.radiograph import THICK_SHARE

#: Fields of view drawn, with their weights.
FIELDS: tuple[str, ...] = ("lumbar", "thoracolumbar", "whole")
FIELD_WEIGHTS: tuple[float, ...] = (0.6, 0.25, 0.15)


def vertebra_class(entry: Mapping[str, Any]) -> str | None:
    """``normal``, ``old`` or ``fresh`` from a truth entry; None where the grade is not known."""
    grade = entry.get("grade")
    if grade is None:
        return None
    if int(grade) == 0:
        return "normal"
    return "old" if entry.get("fracture_age") == "old" else "fresh"


def field_rows(boxes: Mapping[str, Sequence[float]], field: str, pixel_mm: float, n_rows: int,
               rng: np.random.Generator) -> tuple[int, int] | None:
    """The rows a field of view keeps (first, last + 1), or None where its levels are not all in view."""
    first, last = {"lumbar": ("L1", "L5"), "thoracolumbar": ("T10", "L5")}.get(field, (None, None))
    if first is None:
        return 0, n_rows
    if first not in boxes or last not in boxes:
        return None
    top = boxes[first][1] - rng.uniform(15.0, 60.0) / pixel_mm
    bottom = boxes[last][3] + rng.uniform(25.0, 70.0) / pixel_mm
    return max(0, int(np.floor(top))), min(n_rows, int(np.ceil(bottom)))


def radiograph_samples(ct: Any, truth: Sequence[Mapping[str, Any]], rng: np.random.Generator,
                       per_case: int = 2, thick_share: float = THICK_SHARE) -> list[dict[str, Any]]:
    """``per_case`` labelled radiographs of one CT (module docstring); each sample is
    ``{"image": float32 0..1, "pixel_mm", "source_slice_mm", "field", "fresh_vcf", "vertebrae": [...]}``.
    ``thick_share``: the share drawn from the CT with thicker slices."""
    from VertebralFractureLib.synth.radiograph import body_boxes, draw_params, lateral_radiograph

    complete = [e for e in truth if e.get("complete") and e.get("keypoints_lps_mm")]
    out = []
    for _ in range(per_case):
        params = draw_params(rng, thick_share)
        image, geo = lateral_radiograph(ct, params, rng)
        every = body_boxes(truth, geo, names=None)  # cut vertebrae too: their keypoints may leave the CT
        boxes = {e["name"]: every[e["name"]] for e in complete}  # a field of view is framed on whole vertebrae
        field = str(rng.choice(FIELDS, p=np.asarray(FIELD_WEIGHTS) / sum(FIELD_WEIGHTS)))
        rows = field_rows(boxes, field, geo.pixel_mm, image.shape[0], rng)
        if rows is None:
            field, rows = "whole", (0, image.shape[0])
        r0, r1 = rows
        image = image[r0:r1]
        vertebrae, ignore = [], []
        for e in truth:
            name = e.get("name")
            if name not in every:
                continue
            x0, y0, x1, y1 = every[name]
            y0, y1 = y0 - r0, y1 - r0
            if e.get("keypoints_lps_mm") and body_in_view((x0, y0, x1, y1), image.shape, geo.pixel_mm,
                                                          bool(e.get("complete"))):
                vertebrae.append(true_box(e, (x0, y0, x1, y1)))
                continue
            seen = visible_part((x0, y0, x1, y1), image.shape, geo.pixel_mm)
            if seen is not None:  # cut by the end of the CT or by this field of view
                ignore.append({"name": name, "box_px": seen})
        out.append({"image": image, "pixel_mm": geo.pixel_mm, "source_slice_mm": params.source_slice_mm, "field": field,
                    "fresh_vcf": fresh_in_view(vertebrae), "vertebrae": vertebrae, "ignore": ignore})
    return out


#: A vertebra the source CT cuts (its processes, or the CT's end just beyond the body) still has a
#: true box where its body's box lies this far inside the image: the CT holds the endplates' rims.
BODY_MARGIN_MM = 2.0


def body_in_view(box: Sequence[float], shape: tuple[int, int], pixel_mm: float, complete: bool) -> bool:
    """Whether a body's box [x0, y0, x1, y1] lies within an image of ``shape`` (rows, cols): anywhere
    inside for a vertebra the source CT holds whole, :data:`BODY_MARGIN_MM` from every edge for one
    it cuts. A radiograph shows a vertebral body whole whatever the CT did to its processes."""
    m = 0.0 if complete else BODY_MARGIN_MM / pixel_mm
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0 >= m and y0 >= m and x1 <= shape[1] - m and y1 <= shape[0] - m


def fresh_in_view(vertebrae: Sequence[Mapping[str, Any]]) -> bool:
    """Seed 003's label of a radiograph: a fresh fracture among its labelled vertebrae."""
    return any(v["class"] == "fresh" for v in vertebrae)


def true_box(entry: Mapping[str, Any], box: Sequence[float]) -> dict[str, Any]:
    """A labelled vertebra of a radiograph from its truth ``entry`` and its body's ``box``."""
    return {"name": entry.get("name"), "box_px": [round(float(v), 2) for v in box], "grade": entry.get("grade"),
            "type": entry.get("type"), "age": entry.get("fracture_age"), "class": vertebra_class(entry)}


#: The part of a body in view is an ignore region only from this size on (mm, each side): a sliver
#: at the edge is not something a detector boxes.
IGNORE_MIN_MM = 4.0


def visible_part(box: Sequence[float], shape: tuple[int, int], pixel_mm: float) -> list[float] | None:
    """``box`` [x0, y0, x1, y1] clipped to an image of ``shape`` (rows, cols); None where less than
    :data:`IGNORE_MIN_MM` of it is in view either way."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = max(0.0, x0), min(float(shape[1]), x1)
    y0, y1 = max(0.0, y0), min(float(shape[0]), y1)
    if min(x1 - x0, y1 - y0) * pixel_mm < IGNORE_MIN_MM:
        return None
    return [round(v, 2) for v in (x0, y0, x1, y1)]


def write_dataset(roots: Sequence[str | Path], output: str | Path, per_case: int = 2, seed: int = 0,
                  log: Any = None, thick_share: float = THICK_SHARE) -> Path:
    """Radiographs of every case of ``roots`` into ``output`` (``images/*.png``, 16-bit, and
    ``radiographs.json``); refuses a folder that already holds a dataset. ``thick_share`` as in
    :func:`radiograph_samples`."""
    from PIL import Image

    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.io.verse import list_cases

    out = Path(output)
    index = out / "radiographs.json"
    if index.exists():
        raise FileExistsError(f"{index} exists: choose another folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries: list[dict[str, Any]] = []
    for root in roots:
        cases = list_cases(root)
        for k, case in enumerate(cases):
            truth = json.loads(case.genant.read_text(encoding="utf-8"))
            ct = read_image(case.ct).volume
            for j, sample in enumerate(radiograph_samples(ct, truth, rng, per_case, thick_share)):
                name = f"{Path(root).name}_{case.subject}_{j}.png"
                Image.fromarray(np.round(sample.pop("image") * 65535).astype(np.uint16)).save(out / "images" / name)
                entries.append({"image": f"images/{name}", "case": case.subject, "source": Path(root).name, **sample})
            if log is not None:
                print(f"{Path(root).name} {k + 1}/{len(cases)} {case.subject}", file=log, flush=True)
    index.write_text(json.dumps({"classes": list(CLASSES), "radiographs": entries}, indent=1) + "\n", encoding="utf-8")
    return index


def relabel_dataset(folder: str | Path, roots: Sequence[str | Path], output: str | Path) -> Path:
    """A dataset written before :func:`body_in_view` labelled it again without drawing it again:
    each ignore region that lies whole in its image (so it was never clipped) and whose vertebra's
    body is in view becomes a true box with the vertebra's grade and class from its case's truth in
    ``roots`` (the folders it was made from); ``fresh_vcf`` follows. The images are linked (copied
    where links are refused) into ``output``, which must not hold a dataset yet."""
    import shutil

    from PIL import Image

    from VertebralFractureLib.io.verse import list_cases

    src, out = Path(folder), Path(output)
    index = out / "radiographs.json"
    if index.exists():
        raise FileExistsError(f"{index} exists: choose another folder")
    data = json.loads((src / "radiographs.json").read_text(encoding="utf-8"))
    truths = {(Path(root).name, case.subject): case.genant for root in roots for case in list_cases(root)}
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    read: dict[tuple[str, str], list[dict[str, Any]]] = {}  # each case's truth, read once for its radiographs
    for e in data["radiographs"]:
        key = (e["source"], e["case"])
        if key not in truths:
            raise ValueError(f"{e['image']}: its case {e['case']} of {e['source']} is in none of the folders given")
        if key not in read:
            read[key] = json.loads(truths[key].read_text(encoding="utf-8"))
        truth = read[key]
        with Image.open(src / e["image"]) as im:
            shape = (im.size[1], im.size[0])
        by_name = {t.get("name"): t for t in truth}
        order = {t.get("name"): k for k, t in enumerate(truth)}
        vertebrae, ignore = list(e["vertebrae"]), []
        for region in e["ignore"]:
            t = by_name.get(region["name"])
            # an ignore region of a vertebra the CT holds whole was cut by the field of view: at the edge
            if t is not None and t.get("keypoints_lps_mm") and body_in_view(region["box_px"], shape, e["pixel_mm"],
                                                                              complete=False):
                vertebrae.append(true_box(t, region["box_px"]))
            else:
                ignore.append(region)
        vertebrae.sort(key=lambda v: order.get(v["name"], len(order)))
        entries.append({**e, "fresh_vcf": fresh_in_view(vertebrae), "vertebrae": vertebrae, "ignore": ignore})
        target = out / e["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(src / e["image"])
        except OSError:
            shutil.copyfile(src / e["image"], target)
    index.write_text(json.dumps({**data, "radiographs": entries}, indent=1) + "\n", encoding="utf-8")
    return index


def read_dataset(folder: str | Path) -> list[dict[str, Any]]:
    """The entries of a folder written by :func:`write_dataset`, each with its ``image`` loaded
    (float32, 0..1)."""
    from PIL import Image

    folder = Path(folder)
    data = json.loads((folder / "radiographs.json").read_text(encoding="utf-8"))
    out = []
    for e in data["radiographs"]:
        with Image.open(folder / e["image"]) as im:
            img = np.asarray(im, np.float32) / 65535.0
        out.append({**e, "image": img})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m VertebralFractureLib.training.radiograph_data",
                                description="Synthetic lateral radiographs with labels from SynthSpine folders.")
    p.add_argument("roots", nargs="+", type=Path, help="VerSe-layout SynthSpine folders")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--per-case", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thick-share", type=float, default=THICK_SHARE, metavar="F",
                   help="share of radiographs drawn from the CT with its slices thickened to 3-7 mm "
                        f"(default {THICK_SHARE})")
    p.add_argument("--relabel", type=Path, metavar="DATASET",
                   help="label this dataset (made from ROOTS) again instead of drawing new radiographs")
    args = p.parse_args(argv)
    if args.relabel is not None:
        print(f"wrote {relabel_dataset(args.relabel, args.roots, args.output)}")
        return 0
    if not 0.0 <= args.thick_share <= 1.0:
        p.error(f"--thick-share must lie in [0, 1], got {args.thick_share}")
    print(f"wrote {write_dataset(args.roots, args.output, args.per_case, args.seed, log=sys.stderr, thick_share=args.thick_share)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
