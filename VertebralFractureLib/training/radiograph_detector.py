"""Training and evaluating the L1–L5 radiograph detector (:mod:`VertebralFractureLib.radiograph_detect`).

Data: folders written by :mod:`.radiograph_data` (synthetic lateral radiographs with exact boxes).
Each batch holds ``batch`` radiographs on the detector grid, padded to the largest; augmentation:
a left–right mirror image half of the time (radiographs are taken facing either way; the boxes
follow), a random crop of the rows (a smaller field of view), contrast (gamma), brightness and
noise. Loss: a focal-weighted binary cross-entropy on the five heatmaps and an L1 loss on the box
sizes at the true centres. The validation mAP@0.5 picks the checkpoint; the held-out folder is
scored once at the end and used for nothing else.

Usage::

    python -m VertebralFractureLib.training.radiograph_detector --train data/radiographs-train \\
        --val data/radiographs-val --heldout data/radiographs-test -o runs/detector --time-budget 1200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.radiograph_detect import (
    DET_MM,
    DIVISOR,
    LEVELS,
    MODEL_NAME,
    SIZE_UNIT_MM,
    build_network,
    detect,
    mean_average_precision,
    targets,
    to_detector_grid,
)


def true_boxes(entry: dict[str, Any]) -> dict[str, list[float]]:
    """The L1–L5 boxes of a dataset entry."""
    return {v["name"]: v["box_px"] for v in entry["vertebrae"] if v["name"] in LEVELS}


def ignore_boxes(entry: dict[str, Any]) -> dict[str, list[float]]:
    """The L1–L5 ignore regions of a dataset entry: bodies shown only in part (none in a dataset
    written before they were recorded)."""
    return {v["name"]: v["box_px"] for v in entry.get("ignore", ()) if v["name"] in LEVELS}


#: Levels that only a spine with a numeric variant has (25 or 23 presacral vertebrae are 6 and
#: 5.5 % of adults); their radiographs are where L1-L5 are named wrong.
VARIANT_LEVELS = ("T13", "L6")


def numeric_variant(entry: dict[str, Any]) -> bool:
    """Whether a dataset entry shows a T13 or an L6 (in whole or in part)."""
    return any(v["name"] in VARIANT_LEVELS for v in (*entry["vertebrae"], *entry.get("ignore", ())))


def prepare(entries: Sequence[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each entry on the detector grid: (image, heatmaps, sizes)."""
    out = []
    for e in entries:
        grid, scale = to_detector_grid(e["image"], e["pixel_mm"])
        heat, size = targets(grid.shape, true_boxes(e), scale)
        heat = np.where(ignore_mask(grid.shape, ignore_boxes(e), scale), IGNORED, heat).astype(np.float32)
        out.append((grid, heat, size))
    return out


#: Heatmap target value that marks an ignore region: the loss leaves those pixels out.
IGNORED = -1.0


def ignore_mask(shape: tuple[int, int], regions: dict[str, list[float]], scale: np.ndarray) -> np.ndarray:
    """(levels, rows, cols): True inside each level's ignore region on the detector grid."""
    mask = np.zeros((len(LEVELS), *shape), bool)
    for k, name in enumerate(LEVELS):
        if name in regions:
            x0, y0, x1, y1 = regions[name]
            r0, r1 = int(np.floor(y0 / scale[0])), int(np.ceil(y1 / scale[0]))
            c0, c1 = int(np.floor(x0 / scale[1])), int(np.ceil(x1 / scale[1]))
            mask[k, max(0, r0):r1, max(0, c0):c1] = True
    return mask


def _augment(img: np.ndarray, heat: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if rng.random() < 0.5:  # mirror image: the patient faces the other way
        img, heat, size = img[:, ::-1], heat[:, :, ::-1], size[:, :, ::-1]
    rows = img.shape[0]
    if rows > 96 and rng.random() < 0.5:  # a smaller field of view (cut rows lose their centres)
        keep = int(rng.uniform(0.6, 1.0) * rows) // DIVISOR * DIVISOR
        r0 = int(rng.integers(0, rows - keep + 1))
        heat = _ignore_cut(heat, size, r0, r0 + keep)
        img, heat, size = img[r0:r0 + keep], heat[:, r0:r0 + keep], size[:, r0:r0 + keep]
    if rng.random() < NARROW_SHARE:  # a narrow view of the spine alone (tight collimation, a spine-only reconstruction)
        cols = narrow_columns(size, img.shape[1], rng)
        if cols is not None:
            img, heat, size = img[:, cols[0]:cols[1]], heat[:, :, cols[0]:cols[1]], size[:, :, cols[0]:cols[1]]
    img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.4) * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
    img = img + rng.normal(0, rng.uniform(0, 0.03), img.shape)
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(heat), np.ascontiguousarray(size)


#: Share of training images narrowed to the spine (:func:`narrow_columns`).
NARROW_SHARE = 0.25
#: Margin (mm) kept on each side of the bodies in a narrowed image.
NARROW_MARGIN_MM: tuple[float, float] = (5.0, 40.0)


def narrow_columns(size: np.ndarray, cols: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Columns (first, last + 1) of a view narrowed to the bodies whose centres are marked in
    ``size`` (as :func:`~VertebralFractureLib.radiograph_detect.targets` writes it) with a random
    margin of :data:`NARROW_MARGIN_MM` each side, a multiple of the network's divisor wide; None
    where no body is marked."""
    rr, cc = np.nonzero(size[2] > 0)
    if not len(cc):
        return None
    half = _box_px(size, rr, cc)[0] / 2
    lo = float(np.min(cc - half)) - rng.uniform(*NARROW_MARGIN_MM) / DET_MM
    hi = float(np.max(cc + half)) + rng.uniform(*NARROW_MARGIN_MM) / DET_MM
    width = int(np.ceil((hi - lo) / DIVISOR)) * DIVISOR
    if width >= cols:
        return None
    c0 = int(np.clip(round((lo + hi - width) / 2), 0, cols - width))
    return c0, c0 + width


def _box_px(size: np.ndarray, rows: Any, cols: Any) -> tuple[Any, Any]:
    """Width and height (detector-grid pixels) of the boxes whose centres the size maps mark at
    ``rows``, ``cols`` (as :func:`~VertebralFractureLib.radiograph_detect.targets` writes them)."""
    return size[0][rows, cols] * SIZE_UNIT_MM / DET_MM, size[1][rows, cols] * SIZE_UNIT_MM / DET_MM


def _ignore_cut(heat: np.ndarray, size: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Heatmaps for keeping rows ``r0``…``r1``: a body whose centre falls outside them but of which at
    least :data:`~.radiograph_data.IGNORE_MIN_MM` stays in view becomes an ignore region, as in the
    data (a detector is not taught to miss a body it sees in part)."""
    from VertebralFractureLib.training.radiograph_data import IGNORE_MIN_MM

    out = heat
    centres = np.argwhere(size[2] > 0)
    for k in range(heat.shape[0]):
        peak = np.unravel_index(int(np.argmax(heat[k])), heat[k].shape)
        if heat[k][peak] < 0.99 or r0 <= peak[0] < r1:
            continue  # no body of this level, or its centre stays in view
        near = centres[(np.abs(centres[:, 0] - peak[0]) <= 1) & (np.abs(centres[:, 1] - peak[1]) <= 1)]
        if not len(near):
            continue
        w, h = (float(v) for v in _box_px(size, *near[0]))
        top, bottom = max(r0, int(np.floor(peak[0] - h / 2))), min(r1, int(np.ceil(peak[0] + h / 2)))
        if (bottom - top) * DET_MM < IGNORE_MIN_MM:
            continue
        if out is heat:
            out = heat.copy()
        c0, c1 = max(0, int(np.floor(peak[1] - w / 2))), int(np.ceil(peak[1] + w / 2))
        out[k, top:bottom, c0:c1] = IGNORED
    return out


def _batch(items: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = max(i[0].shape[0] for i in items)
    cols = max(i[0].shape[1] for i in items)
    x = np.zeros((len(items), 1, rows, cols), np.float32)
    h = np.zeros((len(items), len(LEVELS), rows, cols), np.float32)
    s = np.zeros((len(items), 3, rows, cols), np.float32)
    for k, (img, heat, size) in enumerate(items):
        r, c = img.shape
        x[k, 0] = np.pad(img, ((0, rows - r), (0, cols - c)), mode="edge")
        h[k, :, :r, :c], s[k, :, :r, :c] = heat, size
    return x, h, s


def loss_fn(out: Any, heat: Any, size: Any) -> Any:
    """Focal-weighted BCE on the heatmaps (logits), plus L1 on the sizes at the centres."""
    import torch
    import torch.nn.functional as F

    logits = out[:, : len(LEVELS)]
    p = torch.sigmoid(logits)
    kept = heat >= 0.0  # ignore regions (:data:`IGNORED`) are left out
    heat = heat.clamp(min=0.0)
    bce = F.binary_cross_entropy_with_logits(logits, heat, reduction="none")
    weight = torch.where(heat > 0.5, 1.0 + 4.0 * heat, (p - heat).abs() ** 2 + 0.02) * kept
    l_heat = (bce * weight).sum() / max(1.0, float((heat > 0.5).sum()))
    mask = size[:, 2:3]
    l_size = ((out[:, len(LEVELS):] - size[:, :2]).abs() * mask).sum() / mask.sum().clamp(min=1.0)
    return l_heat + l_size


def evaluate(net: Any, entries: Sequence[dict[str, Any]], threshold: float = 0.1) -> dict[str, Any]:
    """mAP@0.5 (and per level) of ``net`` on dataset entries; the detections are scored down to
    ``threshold`` so that the precision–recall curve is complete."""
    preds = [detect(net, e["image"], e["pixel_mm"], threshold=threshold) for e in entries]
    result = detection_map(preds, entries)
    result["images"] = len(entries)
    return result


def detection_map(predictions: Sequence[Sequence[dict[str, Any]]], entries: Sequence[dict[str, Any]],
                  ci: int = 0) -> dict[str, Any]:
    """mAP@0.5 of each entry's predictions against its true boxes, and, where the data records
    bodies shown only in part, again with those as ignore regions (``ignoring_cut_bodies``). With
    ``ci`` > 0, each mAP gets a 95 % percentile interval (``ci95``) over that many bootstrap
    resamples of the images."""
    truths = [true_boxes(e) for e in entries]
    ignores = [ignore_boxes(e) for e in entries] if any("ignore" in e for e in entries) else None
    result = mean_average_precision(predictions, truths)
    if ci:
        result["ci95"] = map_ci(predictions, truths, None, ci)
    if ignores is not None:
        result["ignoring_cut_bodies"] = mean_average_precision(predictions, truths, ignores=ignores)
        if ci:
            result["ignoring_cut_bodies"]["ci95"] = map_ci(predictions, truths, ignores, ci)
    return result


def map_ci(predictions: Sequence[Sequence[dict[str, Any]]], truths: Sequence[dict[str, list[float]]],
           ignores: Sequence[dict[str, list[float]]] | None, n: int = 1000, seed: int = 0) -> list[float] | None:
    """95 % percentile interval of mAP@0.5 over ``n`` bootstrap resamples of the images
    (:func:`~.radiograph_classifier.bootstrap_ci`, resampling image indices)."""
    from VertebralFractureLib.training.radiograph_classifier import bootstrap_ci

    def resampled(idx: np.ndarray, _: np.ndarray) -> float | None:
        return mean_average_precision([predictions[i] for i in idx], [truths[i] for i in idx],
                                      ignores=None if ignores is None else [ignores[i] for i in idx])["map"]

    images = np.arange(len(truths))
    return bootstrap_ci(images, images, resampled, n, seed)


def train(train_entries: Sequence[dict[str, Any]], val_entries: Sequence[dict[str, Any]], output: str | Path,
          iterations: int = 2000, batch: int = 8, lr: float = 1e-3, time_budget_s: float | None = None,
          eval_every: int = 100, seed: int = 0, init: str | Path | None = None, log: Any = None,
          variant_weight: float = 1.0) -> dict[str, Any]:
    """Train the detector; keeps ``best.pt`` (validation mAP, bodies shown in part ignored where the
    data records them) and ``last.pt`` in ``output``. Radiographs of spines with a numeric variant
    (:func:`numeric_variant`) are drawn ``variant_weight`` times as often as the others."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    net = build_network()
    if init is not None:
        state = torch.load(init, map_location="cpu", weights_only=True)
        if any(k.startswith("members.") for k in state):  # an installed ensemble: go on from its first member
            state = {k[len("members.0."):]: v for k, v in state.items() if k.startswith("members.0.")}
        net.load_state_dict(state)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    data = prepare(train_entries)
    draw = None
    if variant_weight != 1.0:
        w = np.array([variant_weight if numeric_variant(e) else 1.0 for e in train_entries])
        draw = w / w.sum()
    best, best_it, best_strict, history = -1.0, 0, None, []
    start = time.time()
    it = 0
    for it in range(1, iterations + 1):
        net.train()
        idx = rng.choice(len(data), size=min(batch, len(data)), replace=False, p=draw)
        x, h, s = _batch([_augment(*data[i], rng) for i in idx])
        for group in opt.param_groups:  # cosine decay
            group["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * it / iterations)))
        loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(h), torch.from_numpy(s))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out_of_time = time_budget_s is not None and time.time() - start > time_budget_s
        if it % eval_every == 0 or it == iterations or out_of_time:
            m = evaluate(net, val_entries)
            chosen = m.get("ignoring_cut_bodies", m)["map"]  # the bodies shown in part count neither way
            history.append({"iteration": it, "loss": round(float(loss.detach()), 4), "val_map": m["map"],
                            "val_map_ignoring_cut_bodies": m.get("ignoring_cut_bodies", {}).get("map"),
                            "seconds": round(time.time() - start, 1)})
            if log is not None:
                print(f"detector it {it}: loss {float(loss.detach()):.3f}, validation mAP@0.5 {m['map']}"
                      f" ({chosen} ignoring bodies shown in part), {time.time() - start:.0f} s", file=log, flush=True)
            torch.save(net.state_dict(), out / "last.pt")
            if chosen is not None and chosen > best:
                best, best_it, best_strict = float(chosen), it, m["map"]
                torch.save(net.state_dict(), out / "best.pt")
        if out_of_time:
            break
    report = {"iterations": it, "best_iteration": best_it, "best_val_map": best, "best_val_map_strict": best_strict,
              "seconds": round(time.time() - start, 1), "train_images": len(train_entries),
              "val_images": len(val_entries), "log": history, "from": "scratch" if init is None else str(init),
              "variant_weight": variant_weight}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def ensemble(run_dirs: Sequence[str | Path], output: str | Path, val_entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best weights of several runs as one detector whose outputs are averaged
    (``architecture.members``): written to ``output``/``best.pt`` with a report (validation mAP as
    :func:`train` reports it) that :func:`install` takes. Nothing is trained."""
    import torch

    out = Path(output)
    if (out / "best.pt").exists():
        raise FileExistsError(f"{out / 'best.pt'} exists: choose another folder")
    start = time.time()
    state = {}
    for k, run in enumerate(run_dirs):
        for key, value in torch.load(Path(run) / "best.pt", map_location="cpu", weights_only=True).items():
            state[f"members.{k}.{key}"] = value
    net = build_network({"members": len(run_dirs)})
    net.load_state_dict(state)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "best.pt")
    m = evaluate(net, val_entries)
    reports = [json.loads((Path(r) / "report.json").read_text(encoding="utf-8")) for r in run_dirs]
    report = {"members": [Path(r).name for r in run_dirs], "iterations": 0, "best_iteration": 0,
              "best_val_map": m.get("ignoring_cut_bodies", m)["map"], "best_val_map_strict": m["map"],
              "seconds": round(time.time() - start, 1), "train_images": max(r["train_images"] for r in reports),
              "val_images": len(val_entries), "log": [],
              "from": "the best weights of " + ", ".join(Path(r).name for r in run_dirs) + ", outputs averaged"}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def install(run_dir: str | Path, report: dict[str, Any], heldout: dict[str, Any], train_roots: Sequence[str | Path],
            directory: str | Path | None = None, ledger: Sequence[dict[str, Any]] | None = None) -> Path:
    """Install a run's ``best.pt`` as the ``radiograph-detector`` model, with its card; the ledger
    lists the earlier runs it continues (default: the installed card's ledger, when the run
    resumed from weights) and then this one."""
    import datetime

    from VertebralFractureLib.radiograph_detect import CHANNELS, DEFAULT_THRESHOLD
    from VertebralFractureLib.training.install import install_model, installed_ledger

    members = report.get("members")
    card = {
        "version": datetime.date.today().strftime("%Y%m%d"),
        "architecture": {"type": "UNet2D-centre-heatmaps", "channels": list(CHANNELS), "num_res_units": 1,
                         "levels": list(LEVELS), "pixel_mm": DET_MM, **({"members": len(members)} if members else {})},
        "classes": list(LEVELS),
        "training_data": (f"synthetic lateral radiographs reconstructed from SynthSpine CT "
                          f"({', '.join(Path(r).name for r in train_roots)}; {report['train_images']} images)"),
        "postprocess": {"threshold": DEFAULT_THRESHOLD, "why": "heatmap peak; a level below it is not reported "
                                                                "(the default: choose it on validation)"},
        "metrics": {"heldout_synthetic": heldout,
                    "validation_map50": report.get("best_val_map_strict", report["best_val_map"]),
                    "validation_map50_ignoring_cut_bodies": (report["best_val_map"]
                                                             if report.get("best_val_map_strict") is not None else None)},
        "ledger": [*(ledger if ledger is not None else
                     [] if report["from"] == "scratch" else installed_ledger(MODEL_NAME, directory)),
                   {"run": Path(run_dir).name, "from": report["from"], "iterations": report["iterations"],
                    "best_iteration": report["best_iteration"], "wall_time_min": round(report["seconds"] / 60, 1),
                    "hardware": "2-core CPU", **({"members": members} if members else {})}],
        "accuracy": (f"The L1-L5 detector is trained on synthetic radiographs only; on held-out synthetic "
                     f"radiographs its mAP@0.5 is {heldout['map']:.2f}"
                     + (f" ({heldout['ignoring_cut_bodies']['map']:.2f} where boxes on bodies shown only in part, "
                        "which the truth leaves out, count neither way)" if "ignoring_cut_bodies" in heldout else "")
                     + ". It has not been measured on real radiographs; on radiographs reconstructed from real CT "
                     "most names were wrong (docs/radiographs.md)."),
    }
    return install_model(MODEL_NAME, Path(run_dir) / "best.pt", card, directory)


def main(argv: Sequence[str] | None = None) -> int:
    from VertebralFractureLib.training.radiograph_data import read_dataset

    p = argparse.ArgumentParser(prog="python -m VertebralFractureLib.training.radiograph_detector",
                                description="Train the L1-L5 detector on synthetic lateral radiographs.")
    p.add_argument("--train", nargs="+", type=Path, required=True,
                   help="folders written by radiograph_data (with --ensemble: those the members were trained on)")
    p.add_argument("--ensemble", nargs="+", type=Path, default=None, metavar="RUN",
                   help="train nothing: the best weights of these runs as one detector, outputs averaged")
    p.add_argument("--val", nargs="+", type=Path, required=True)
    p.add_argument("--heldout", nargs="+", type=Path, required=True)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--time-budget", type=float, default=None, help="seconds")
    p.add_argument("--init", type=Path, default=None,
                   help="weights to start from (resume); of an ensemble, its first member")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draws and augmentation")
    p.add_argument("--variant-weight", type=float, default=1.0,
                   help="draw radiographs of spines with a T13 or an L6 this many times as often")
    p.add_argument("--install", action="store_true", help="install the best weights with their card")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    va = [e for f in args.val for e in read_dataset(f)]
    if args.ensemble:
        report = ensemble(args.ensemble, args.output, va)
    else:
        tr = [e for f in args.train for e in read_dataset(f)]
        report = train(tr, va, args.output, args.iterations, args.batch, lr=args.lr, time_budget_s=args.time_budget,
                       init=args.init, log=sys.stderr, variant_weight=args.variant_weight, seed=args.seed)
    import torch

    net = build_network({"members": len(args.ensemble)} if args.ensemble else None)
    net.load_state_dict(torch.load(Path(args.output) / "best.pt", map_location="cpu", weights_only=True))
    held = evaluate(net, [e for f in args.heldout for e in read_dataset(f)])
    report["heldout"] = held
    (Path(args.output) / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"validation_map50": report["best_val_map"], "heldout": held}, indent=2))
    if args.install:
        print(f"installed {install(args.output, report, held, args.train)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
