"""Training the stage-2 U-Net: background / normal / fractured per vertebra crop (seeds/002 §2.3).

Data: a VerSe-layout folder with vertebra masks (``*_seg-vert_msk.nii.gz``) and, for the fracture
class, fracture maps (``*_fracture_msk.nii.gz``: 1 normal, 2 fractured vertebra; SynthSpine writes
them); without a fracture map every vertebra counts as normal. A vertebra whose fracture map holds
3 is never the centre of a training crop (its class is uncertain, e.g. a real Genant grade 1); as a
neighbour it is background like any other. Each case goes once onto the
model's LPS grid (image linear, masks nearest) and is cached.

A training sample is a crop of ``patch_size`` voxels around one vertebra's centroid, jittered
(Gaussian, ``jitter_mm``; the localization errors of stage 1) and randomly rotated, scaled and
left–right flipped; only that vertebra is foreground (its class: 1 normal, 2 fractured), its
neighbours are background. Fractured vertebrae are drawn with probability ``fractured_share``
(they are rare). Loss: Dice + cross-entropy (the seed's Eq. 13, MONAI ``DiceCELoss``).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.training.common import (
    augment_intensity,
    batch_stream,
    fill_caches,
    fixed_shape_speedups,
    optimisation_step,
    random_affine,
    resume,
    save_checkpoint,
    save_npz,
    scheduled_lr,
)


@dataclass(frozen=True)
class SegmentationTraining:
    """Training settings (one place for the defaults)."""

    spacing_mm: float = 1.25
    # z, y, x: 90 mm along the spine (the vertebra and half of each neighbour, the caudally sloping
    # thoracic spinous processes included), 120 mm across (the widest transverse processes)
    patch_size: tuple[int, int, int] = (72, 96, 96)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    in_channels: int = 2  # CT + a Gaussian at the crop centre (networks/unet.py)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 2
    iterations: int = 3500
    grad_clip: float = 2.0
    rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    jitter_mm: float = 3.0
    fractured_share: float = 0.35
    thick_slice_share: float = 0.3  # crops that simulate 2–5 mm axial slices (see thick_slices)
    seed: int = 0
    validate_every: int = 500
    threads: int = 0

    def architecture(self) -> dict[str, Any]:
        return {"type": "UNet", "channels": list(self.channels), "strides": list(self.strides),
                "num_res_units": self.num_res_units, "norm": "instance", "dropout": 0.0,
                "in_channels": self.in_channels}


@dataclass
class SegCase:
    """A case on the model grid: normalised image, vertebra labels, fractured labels, centroids (voxels)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    fractured: frozenset[int]
    centroids_zyx: dict[int, np.ndarray]
    excluded: frozenset[int] = frozenset()  # never a crop's centre (uncertain class)


def cache_cases(root: str | Path, spacing_mm: float, cache_dir: str | Path | None = None,
                workers: int = 1) -> list[SegCase]:
    """Load every case of a VerSe-layout folder onto the model grid (cached as ``.npz``; missing cache
    files are written by ``workers`` processes)."""
    from scipy import ndimage

    from VertebralFractureLib.anatomy import is_vertebra_label
    from VertebralFractureLib.io.verse import list_cases

    cases = list_cases(root)
    if not cases:
        raise ValueError(f"no cases in {root}")
    cache = Path(cache_dir) if cache_dir else Path(root) / f".cache-seg-{spacing_mm:g}mm"
    cache.mkdir(parents=True, exist_ok=True)
    missing = []
    for case in cases:
        if (cache / f"{case.subject}.npz").exists():
            continue
        if not case.vertebra_mask.exists():
            raise ValueError(f"{case.subject}: no vertebra mask ({case.vertebra_mask.name})")
        missing.append((str(case.ct), str(case.vertebra_mask), str(case.fracture_mask), spacing_mm,
                        str(cache / f"{case.subject}.npz")))
    fill_caches(missing, _fill_cache, workers)

    def load(case: Any) -> SegCase:
        d = np.load(cache / f"{case.subject}.npz")
        labels = d["labels"]
        present = [int(v) for v in np.unique(labels) if v and is_vertebra_label(int(v))]
        cents = dict(zip(present, (np.array(c) for c in ndimage.center_of_mass(labels > 0, labels, present))))
        excluded = frozenset(int(x) for x in d["excluded"]) if "excluded" in d else frozenset()
        return SegCase(case.subject, d["image"].astype(np.float32), labels,
                       frozenset(int(x) for x in d["fractured"]) - excluded, cents, excluded)

    # reading the compressed caches is mostly decompression, which runs outside Python's lock
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(load, cases))


def _fill_cache(job: tuple[str, str, str, float, str]) -> None:
    """One case onto the model grid (image linear, masks nearest), written to its cache file with the
    fractured (fracture map 2) and uncertain (3) labels."""
    from scipy import ndimage

    from VertebralFractureLib import preprocess
    from VertebralFractureLib.io.readers import read_image, read_labelmap

    ct_path, mask_path, fracture_path, spacing_mm, target = job
    ct = read_image(ct_path).volume
    grid = preprocess.to_model_grid(ct, spacing_mm)
    image = preprocess.normalize(grid.array)
    mask = read_labelmap(Path(mask_path), ct)
    labels = preprocess.to_model_grid(mask, spacing_mm, fill=0, interpolation="nearest").array.astype(np.uint8)
    fractured: list[int] = []
    excluded: list[int] = []
    if Path(fracture_path).exists():
        frac = read_labelmap(Path(fracture_path), ct).array
        present = [int(v) for v in np.unique(mask.array) if v]
        top = ndimage.maximum(frac, mask.array, present)
        fractured = [lab for lab, t in zip(present, np.atleast_1d(top)) if t == 2]
        excluded = [lab for lab, t in zip(present, np.atleast_1d(top)) if t == 3]
    save_npz(Path(target), image=image.astype(np.float16), labels=labels, fractured=np.array(fractured, np.int32),
             excluded=np.array(excluded, np.int32))


def sample(case: SegCase, label: int, cfg: SegmentationTraining, rng: np.random.Generator,
           train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Image crop and 3-class target around vertebra ``label`` (random affine when ``train``)."""
    from scipy import ndimage

    patch = np.array(cfg.patch_size)
    centre_in = case.centroids_zyx[label].astype(float)
    if train:
        m = random_affine(rng, cfg.rotation_deg, cfg.scale_range)
        centre_in = centre_in + np.clip(rng.normal(0, cfg.jitter_mm / cfg.spacing_mm, 3), -3 * cfg.jitter_mm, 3 * cfg.jitter_mm)
    else:
        m = np.eye(3)
    offset = centre_in - m @ ((patch - 1) / 2.0)
    img = ndimage.affine_transform(case.image, m, offset=offset, output_shape=tuple(patch), order=1,
                                   mode="constant", cval=float(case.image.min()))
    lab = ndimage.affine_transform(case.labels, m, offset=offset, output_shape=tuple(patch), order=0,
                                   mode="constant", cval=0)
    target = np.where(lab == label, 2 if label in case.fractured else 1, 0).astype(np.int64)
    if train:
        if rng.random() < cfg.thick_slice_share:
            img = thick_slices(img, rng.uniform(2.0, 5.0) / cfg.spacing_mm, rng.uniform())
        img = augment_intensity(img, rng)
    return img.astype(np.float32), target


def thick_slices(img: np.ndarray, step: float, phase: float) -> np.ndarray:
    """Simulate thick axial slices: average over ``step`` voxels along z (axis 0), keep one plane every
    ``step`` voxels (offset ``phase`` × step) and interpolate linearly back onto every plane, as a
    CT reconstructed at ``step`` × spacing and resampled onto the model grid looks."""
    from scipy import ndimage

    if step <= 1.0:
        return img
    n = img.shape[0]
    smooth = ndimage.uniform_filter1d(img, size=max(1, int(round(step))), axis=0, mode="nearest")
    planes = np.arange(phase * step, n, step)
    planes = planes[planes <= n - 1]
    if len(planes) < 2:  # a crop thinner than two slices: the average is all that is left
        return smooth
    coarse = ndimage.map_coordinates(smooth, np.meshgrid(planes, *(np.arange(k) for k in img.shape[1:]), indexing="ij"),
                                     order=1, mode="nearest")
    pos = np.clip(np.interp(np.arange(n), planes, np.arange(len(planes))), 0, len(planes) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(planes) - 2)
    w = (pos - lo)[:, None, None]
    return ((1 - w) * coarse[lo] + w * coarse[lo + 1]).astype(np.float32)


def _draw(cases: list[SegCase], cfg: SegmentationTraining, rng: np.random.Generator) -> tuple[int, int]:
    """(case index, label): a fractured vertebra with probability ``fractured_share`` when any exists."""
    fractured = [(i, lab) for i, c in enumerate(cases) for lab in c.fractured if lab in c.centroids_zyx]
    if fractured and rng.random() < cfg.fractured_share:
        return fractured[int(rng.integers(len(fractured)))]
    usable = [i for i, c in enumerate(cases) if set(c.centroids_zyx) - c.excluded]
    i = usable[int(rng.integers(len(usable)))]
    labs = sorted(set(cases[i].centroids_zyx) - cases[i].excluded)
    return i, labs[int(rng.integers(len(labs)))]


def validation_pairs(cases: list[SegCase]) -> list[tuple[int, int]]:
    """Every vertebra of the validation cases whose mask is not cut by the crop-free grid edge."""
    return [(i, lab) for i, c in enumerate(cases) for lab in sorted(set(c.centroids_zyx) - c.excluded)]


def network_input(images: list[np.ndarray], cfg: SegmentationTraining) -> np.ndarray:
    """(B, C, z, y, x) network input: the crops, plus the centre heatmap for two-channel networks."""
    from VertebralFractureLib.segment import centre_channel

    x = np.stack(images)[:, None]
    if cfg.in_channels == 2:
        extra = np.broadcast_to(centre_channel(cfg.patch_size, cfg.spacing_mm), x.shape)
        x = np.concatenate([x, extra], axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def crop_metrics(net: Any, cases: list[SegCase], cfg: SegmentationTraining, device: str) -> dict[str, float]:
    """Mean Dice of the centred vertebra and fracture ROC-AUC on crops at the true centroids."""
    import torch

    from VertebralFractureLib.segment import central_component
    from VertebralFractureLib.training.metrics import roc_auc

    net.eval()
    dices, scores, truth = [], [], []
    rng = np.random.default_rng(0)
    for i, lab in validation_pairs(cases):
        img, target = sample(cases[i], lab, cfg, rng, train=False)
        with torch.inference_mode():
            p = torch.softmax(net(torch.from_numpy(network_input([img], cfg)).to(device)).float(), 1)[0].cpu().numpy()
        fg = p[1] + p[2]
        pred = central_component(fg >= 0.5)
        ref = target > 0
        dices.append(2 * np.sum(pred & ref) / max(1, pred.sum() + ref.sum()))
        scores.append(float(np.mean(p[2][pred] / np.maximum(fg[pred], 1e-6))) if pred.any() else 0.0)
        truth.append(lab in cases[i].fractured)
    return {"dice": float(np.mean(dices)), "fracture_auc": roc_auc(np.array(truth), np.array(scores)),
            "n": len(dices)}


def training_batch(cases: list[SegCase], cfg: SegmentationTraining,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training batch: ``cfg.batch_size`` crops (:func:`sample` around vertebrae drawn by
    :func:`_draw`) as network input (B, C, z, y, x) and label maps (B, 1, z, y, x)."""
    xs, ys = zip(*(sample(cases[i], lab, cfg, rng) for i, lab in
                   (_draw(cases, cfg, rng) for _ in range(cfg.batch_size))))
    return network_input(list(xs), cfg), np.stack(ys)[:, None]


def train_segmentation(train_roots: list[str | Path], out_dir: str | Path, cfg: SegmentationTraining,
                       val_root: str | Path | None = None, device: str = "cpu",
                       log: Callable[[str], None] = print, time_budget_s: float | None = None,
                       init_weights: str | Path | None = None, workers: int = 0) -> Path:
    """Train (or resume) the stage-2 U-Net; returns the path of the best ``state_dict``.

    ``init_weights``: start from this ``state_dict`` (e.g. the shipped model, so that each run adds
    to the last) unless the run folder already holds a checkpoint to resume. ``workers``: processes
    that prepare the batches ahead (0: in this process) and fill the caches. With ``time_budget_s``
    the learning-rate decay follows the larger of the iterations done and the budget spent.

    Writes ``checkpoint.pt`` (resumable), ``best.pt`` (best validation Dice + fracture AUC),
    ``log.csv`` and ``config.json`` into ``out_dir``.
    """
    import torch
    from monai.losses import DiceCELoss

    from VertebralFractureLib.networks.unet import build_unet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_cases = [c for root in train_roots for c in cache_cases(root, cfg.spacing_mm, workers=max(1, workers))]
    val_cases = cache_cases(val_root, cfg.spacing_mm, workers=max(1, workers)) if val_root else []
    net = build_unet(cfg.architecture()).to(device)
    fixed_shape_speedups(device)
    if init_weights is not None:
        net.load_state_dict(torch.load(init_weights, map_location=device, weights_only=True))
        log(f"initialised from {init_weights}")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, -float("inf")
    ckpt = out / "checkpoint.pt"
    resumed = resume(ckpt, net, opt, device)
    if resumed is not None:
        start, best = resumed
        rng = np.random.default_rng(cfg.seed + start)
        log(f"resumed at iteration {start}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    new_log = not (out / "log.csv").exists()
    # Dice over the whole batch: a class absent from one crop (most crops hold no fracture) does
    # not produce a constant, uninformative per-crop Dice term
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    t0, running = time.time(), []
    batches = batch_stream(lambda r: training_batch(train_cases, cfg, r), rng, workers, seed=(cfg.seed, start))
    try:
        with open(out / "log.csv", "a", newline="") as logf:
            writer = csv.writer(logf)
            if new_log:
                writer.writerow(["iteration", "loss", "lr", "val_dice", "val_fracture_auc", "seconds"])
            for it in range(start, cfg.iterations):
                net.train()
                for group in opt.param_groups:
                    group["lr"] = scheduled_lr(cfg.lr, it, cfg.iterations, t0, time_budget_s)
                x, y = (torch.from_numpy(a).to(device) for a in next(batches))
                running.append(optimisation_step(net, opt, loss_fn(net(x), y), cfg.grad_clip))
                last = it + 1 == cfg.iterations or (time_budget_s is not None and time.time() - t0 > time_budget_s)
                if (it + 1) % cfg.validate_every == 0 or last:
                    m = crop_metrics(net, val_cases, cfg, device) if val_cases else {}
                    auc = m.get("fracture_auc", float("nan"))
                    score = m.get("dice", -float(np.mean(running))) + (0.25 * auc if np.isfinite(auc) else 0.0)
                    writer.writerow([it + 1, f"{np.mean(running):.4f}", f"{opt.param_groups[0]['lr']:.2e}",
                                     f"{m.get('dice', float('nan')):.4f}", f"{auc:.4f}", f"{time.time() - t0:.0f}"])
                    logf.flush()
                    log(f"it {it + 1}: loss {np.mean(running):.3f}, val dice {m.get('dice', float('nan')):.3f}, "
                        f"fracture AUC {auc:.3f}, {time.time() - t0:.0f} s")
                    running = []
                    if score > best or not (out / "best.pt").exists():
                        best = score
                        torch.save(net.state_dict(), out / "best.pt")
                    save_checkpoint(ckpt, net, opt, it + 1, best)
                if last:
                    break
    finally:
        batches.close()
    return out / "best.pt"


def evaluate_case(labelmap: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, float, float],
                  truth_grades: dict[int, tuple[int, bool]], probs: dict[int, float]) -> list[dict[str, Any]]:
    """Per true vertebra: DSC, ASSD, MSSD, precision, recall against the true mask, and the
    predicted fracture probability next to the true Genant grade.

    Args:
        labelmap: predicted VerSe labels (input geometry).
        truth: true VerSe labels (same grid).
        spacing_zyx: voxel size (mm).
        truth_grades: label → (Genant grade, complete) from the truth.
        probs: label → predicted fracture probability (absent: not found or not segmented).
    """
    from scipy import ndimage

    from VertebralFractureLib.anatomy import name_of
    from VertebralFractureLib.training.metrics import segmentation_metrics

    rows = []
    boxes_t = ndimage.find_objects(truth)
    boxes_p = ndimage.find_objects(labelmap)
    for label, (grade, complete) in sorted(truth_grades.items()):
        bt = boxes_t[label - 1] if label <= len(boxes_t) else None
        if bt is None:
            continue
        bp = boxes_p[label - 1] if label <= len(boxes_p) else None
        box = bt if bp is None else tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(bt, bp))
        m = segmentation_metrics(labelmap[box] == label, truth[box] == label, spacing_zyx)
        rows.append({"label": label, "name": name_of(label), "grade": grade, "complete": complete,
                     "found": label in probs, "fracture_probability": probs.get(label), **m})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over complete vertebrae (missing ones count as Dice 0) and fracture ROC-AUCs by grade."""
    from VertebralFractureLib.training.metrics import roc_auc

    comp = [r for r in rows if r["complete"]]
    found = [r for r in comp if r["found"] and np.isfinite(r["assd_mm"])]

    def mean(key: str, rs: list[dict[str, Any]]) -> float:
        vals = [r[key] for r in rs if r[key] is not None and np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    def auc(grades: tuple[int, ...]) -> dict[str, float]:
        rs = [r for r in comp if r["grade"] in (0,) + grades]
        truth = np.array([r["grade"] in grades for r in rs])
        score = np.array([r["fracture_probability"] if r["fracture_probability"] is not None else 0.0 for r in rs])
        return {"auc": roc_auc(truth, score), "positives": int(truth.sum()), "negatives": int((~truth).sum())}

    thr = 0.5
    truth = np.array([r["grade"] >= 1 for r in comp])
    pred = np.array([(r["fracture_probability"] or 0.0) >= thr for r in comp])
    return {
        "vertebrae_complete": len(comp),
        "found": len(found),
        "dice_mean": float(np.mean([r["dice"] if r["found"] else 0.0 for r in comp])) if comp else float("nan"),
        "dice_mean_found": mean("dice", found),
        "dice_median_found": float(np.median([r["dice"] for r in found])) if found else float("nan"),
        "assd_mm_mean": mean("assd_mm", found),
        "mssd_mm_mean": mean("mssd_mm", found),
        "mssd_mm_median": float(np.median([r["mssd_mm"] for r in found])) if found else float("nan"),
        "precision_mean": mean("precision", found),
        "recall_mean": mean("recall", found),
        "fracture_auc_grade_ge2": auc((2, 3)),
        "fracture_auc_grade1": auc((1,)),
        "fracture_auc_any": auc((1, 2, 3)),
        f"sensitivity_at_{thr}": float(pred[truth].mean()) if truth.any() else float("nan"),
        f"specificity_at_{thr}": float((~pred[~truth]).mean()) if (~truth).any() else float("nan"),
    }
