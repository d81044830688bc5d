"""Training the stage-1 M-SCN: heatmap regression of vertebra centroids (seeds/002 §2.2, Eq. 1–3, 9).

Data: any VerSe-layout folder (``rawdata/<sub>/<sub>_ct.nii.gz`` + ``derivatives/<sub>/<sub>_seg-vb_ctd.json``),
e.g. SynthSpine output or VerSe itself. Each case is brought once onto the model's LPS grid
(:mod:`..preprocess`) and cached; augmentation (rotation, scaling, translation, left–right flip —
labels are left–right symmetric —, intensity scale/shift, noise) acts on the cached grid, and the
Gaussian target heatmaps (peak 1, σ in mm) are drawn at the transformed centroids.

Loss: smooth-L1 (β = 1, the seed's σ = 1) between predicted and target heatmaps, summed over
channels; L2 weight decay; gradient-norm clipping. Two named configurations: ``fast`` (AdamW,
for CPU budgets) and ``seed`` (the paper's SGD, lr 1e-4, batch 4, weight decay 5e-4, clipping 2.0,
30 000 iterations). Checkpoints are resumable; a CSV log holds loss and validation metrics.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.localize import CHANNEL_LABELS, DEFAULT_THRESHOLD
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
class LocalizationTraining:
    """Training settings (one place for the defaults)."""

    spacing_mm: float = 5.0
    patch_size: tuple[int, int, int] = (64, 40, 40)  # z, y, x voxels: 320 × 200 × 200 mm at 5 mm
    sigma_mm: float = 6.0
    features: tuple[int, ...] = (8, 16, 24, 32)
    gn_features: int = 16
    gn_kernel: int = 7
    gn_stride: int = 4
    variant: str = "ln+gn"
    attention: bool = True
    residual: bool = True
    multiple_filtering: bool = True
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    batch_size: int = 2
    iterations: int = 1100
    grad_clip: float = 2.0
    rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    vertebra_centred: float = 0.7  # share of patches centred on a random vertebra (else on the spine)
    fov_crop: float = 0.3  # share of patches cut to a tight field of view around a few vertebrae
    seed: int = 0
    validate_every: int = 250
    threads: int = 0

    @classmethod
    def named(cls, name: str, **overrides: Any) -> LocalizationTraining:
        """``fast`` (CPU budget) or ``seed`` (the paper's settings)."""
        presets = {
            "fast": {},
            "seed": {"optimizer": "sgd", "lr": 1e-4, "batch_size": 4, "weight_decay": 5e-4, "grad_clip": 2.0,
                     "iterations": 30000},
        }
        if name not in presets:
            raise ValueError(f"unknown training configuration {name!r}; expected one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def architecture(self) -> dict[str, Any]:
        return {"type": "MSCN", "features": list(self.features), "gn_features": self.gn_features,
                "gn_kernel": self.gn_kernel, "gn_stride": self.gn_stride, "variant": self.variant, "attention": self.attention,
                "residual": self.residual, "multiple_filtering": self.multiple_filtering,
                "out_channels": len(CHANNEL_LABELS)}


@dataclass
class CachedCase:
    """A case on the model grid: normalised image (z, y, x) and centroids in voxel (z, y, x) units."""

    name: str
    image: np.ndarray
    centroids_zyx: dict[int, np.ndarray]
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))


def cache_cases(root: str | Path, spacing_mm: float, cache_dir: str | Path | None = None,
                progress: Callable[[float, str], None] | None = None, workers: int = 1) -> list[CachedCase]:
    """Load every case of a VerSe-layout folder onto the model grid (cached as ``.npz``; missing cache
    files are written by ``workers`` processes)."""
    from VertebralFractureLib.io.verse import list_cases

    cases = list_cases(root)
    if not cases:
        raise ValueError(f"no cases in {root}")
    cache = Path(cache_dir) if cache_dir else Path(root) / f".cache-loc-{spacing_mm:g}mm"
    cache.mkdir(parents=True, exist_ok=True)
    missing = [(str(c.ct), str(c.centroids), spacing_mm, str(cache / f"{c.subject}.npz"))
               for c in cases if not (cache / f"{c.subject}.npz").exists()]
    fill_caches(missing, _fill_cache, workers)
    out = []
    for k, case in enumerate(cases):
        d = np.load(cache / f"{case.subject}.npz")
        cents = {int(lab): d["cents"][i] for i, lab in enumerate(d["labels"])}
        out.append(CachedCase(case.subject, d["image"].astype(np.float32), cents))
        if progress:
            progress((k + 1) / len(cases), case.subject)
    return out


def _fill_cache(job: tuple[str, str, float, str]) -> None:
    """One case onto the model grid, written to its cache file (normalised image as float16,
    centroids in voxel z, y, x)."""
    from VertebralFractureLib import preprocess
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.io.verse import read_centroids

    ct_path, centroids_path, spacing_mm, target = job
    ct = read_image(ct_path).volume
    grid = preprocess.to_model_grid(ct, spacing_mm)
    image = preprocess.normalize(grid.array)
    cents_lps = read_centroids(Path(centroids_path), ct)
    cents = {lab: grid.lps_to_index(p)[::-1] for lab, p in cents_lps.items() if lab in CHANNEL_LABELS}
    labels = np.array(sorted(cents), dtype=np.int32)
    save_npz(Path(target), image=image.astype(np.float16), labels=labels,
             cents=np.array([cents[x] for x in labels]).reshape(-1, 3))


def gaussian_targets(shape: tuple[int, int, int], centroids_zyx: dict[int, np.ndarray], sigma_vox: float) -> np.ndarray:
    """Target heatmaps (C, z, y, x), peak 1 at each centroid inside or near the patch, 0 elsewhere."""
    out = np.zeros((len(CHANNEL_LABELS),) + tuple(shape), dtype=np.float32)
    grids = [np.arange(s, dtype=np.float32) for s in shape]
    for c, label in enumerate(CHANNEL_LABELS):
        p = centroids_zyx.get(label)
        if p is None:
            continue
        g = [np.exp(-((grids[a] - p[a]) ** 2) / (2 * sigma_vox**2)) for a in range(3)]
        out[c] = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return out


def augment(case: CachedCase, patch: tuple[int, int, int], cfg: LocalizationTraining,
            rng: np.random.Generator, train: bool = True) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A patch of the case (random affine when ``train``) and its centroids in patch voxels."""
    from scipy import ndimage

    img = case.image
    shape = np.array(img.shape, dtype=float)
    pts = {k: v.astype(float) for k, v in case.centroids_zyx.items()}
    centre_in = (np.mean(list(pts.values()), axis=0) if pts else shape / 2)
    if train:
        m = random_affine(rng, cfg.rotation_deg, cfg.scale_range)
        # centre on a randomly chosen vertebra most of the time, so that the levels at the ends of
        # long spines (C1–C3, L3–L5) are seen as often as the mid-thoracic ones
        if pts and rng.random() < cfg.vertebra_centred:
            centre_in = pts[list(pts)[rng.integers(len(pts))]]
        jitter = rng.uniform(-0.35, 0.35, 3) * np.array(patch)
        centre_in = centre_in + jitter
    else:
        m = np.eye(3)
    centre_out = (np.array(patch) - 1) / 2.0
    # output voxel q samples input at m @ (q - centre_out) + centre_in
    offset = centre_in - m @ centre_out
    out = ndimage.affine_transform(img, m, offset=offset, output_shape=tuple(patch), order=1,
                                   mode="constant", cval=float(img.min()))
    inv = np.linalg.inv(m)
    cents = {k: inv @ (p - centre_in) + centre_out for k, p in pts.items()}
    if train and cents and rng.random() < cfg.fov_crop:
        out, cents = crop_field_of_view(out, cents, cfg.spacing_mm, rng, float(img.min()))
    if train:
        out = augment_intensity(out, rng)
    return out.astype(np.float32), cents


def crop_field_of_view(patch: np.ndarray, cents: dict[int, np.ndarray], spacing_mm: float,
                       rng: np.random.Generator, fill: float) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Blank everything outside a tight box around a run of 2–8 vertebrae of the patch, as in a
    spine-only reconstruction (a lumbar crop of 100 × 110 mm in plane): what lies outside the box
    becomes ``fill`` (the padding value), and only the vertebrae whose centroids stay inside keep
    targets. A patch with fewer than two centroids inside is returned unchanged.
    """
    in_patch = [k for k, p in cents.items() if np.all(p >= 0) and np.all(p <= np.array(patch.shape) - 1)]
    if len(in_patch) < 2:  # the patch shows too little of the spine to cut around
        return patch, cents
    labels = sorted(in_patch)
    n = int(rng.integers(2, 9))
    first = int(rng.integers(0, max(1, len(labels) - n + 1)))
    chosen = labels[first: first + n]
    pts = np.array([cents[k] for k in chosen])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    vox = 1.0 / spacing_mm
    # cranio-caudal: cut between a half and one-and-a-half vertebra heights (≈ 12–40 mm) beyond the run
    z0 = lo[0] - rng.uniform(12, 40) * vox
    z1 = hi[0] + rng.uniform(12, 40) * vox
    centre = pts.mean(axis=0)
    # in plane: a box of 80–160 mm about the spine, the spine not always in the middle
    half = rng.uniform(40, 80, 2) * vox
    shift = rng.uniform(-0.3, 0.3, 2) * half
    y0, y1 = centre[1] + shift[0] - half[0], centre[1] + shift[0] + half[0]
    x0, x1 = centre[2] + shift[1] - half[1], centre[2] + shift[1] + half[1]
    zz, yy, xx = (np.arange(s, dtype=np.float32) for s in patch.shape)
    inside = ((zz >= z0) & (zz <= z1))[:, None, None] & ((yy >= y0) & (yy <= y1))[None, :, None] \
        & ((xx >= x0) & (xx <= x1))[None, None, :]
    out = np.where(inside, patch, np.float32(fill)).astype(np.float32)
    kept = {k: p for k, p in cents.items() if z0 <= p[0] <= z1 and y0 <= p[1] <= y1 and x0 <= p[2] <= x1}
    return out, kept


def _batch(cases: list[CachedCase], idx: list[int], cfg: LocalizationTraining, rng: np.random.Generator,
           train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (B, 1, z, y, x) and target heatmaps (B, C, z, y, x) of the cases ``idx``."""
    xs, ys = [], []
    for i in idx:
        img, cents = augment(cases[i], cfg.patch_size, cfg, rng, train)
        xs.append(img[None])
        ys.append(gaussian_targets(cfg.patch_size, cents, cfg.sigma_mm / cfg.spacing_mm))
    return np.stack(xs), np.stack(ys)


def training_batch(cases: list[CachedCase], cfg: LocalizationTraining,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One augmented training batch of ``cfg.batch_size`` cases drawn at random (:func:`_batch`)."""
    return _batch(cases, list(rng.integers(0, len(cases), cfg.batch_size)), cfg, rng, True)


def train_localization(train_root: str | Path | list[str | Path], out_dir: str | Path, cfg: LocalizationTraining,
                       val_root: str | Path | None = None, device: str = "cpu",
                       log: Callable[[str], None] = print, time_budget_s: float | None = None,
                       init_weights: str | Path | None = None, workers: int = 0) -> Path:
    """Train (or resume) the localization M-SCN; returns the path of the best ``state_dict``.

    ``workers``: processes that prepare the batches ahead (0: in this process) and fill the caches.
    With ``time_budget_s`` the learning-rate decay follows the larger of the iterations done and the
    budget spent (:func:`~.common.scheduled_lr`).

    Writes into ``out_dir``: ``checkpoint.pt`` (resumable), ``best.pt`` (the state_dict with the
    best validation identification rate, then mean distance), ``log.csv`` and ``config.json``.
    """
    import torch

    from VertebralFractureLib.localize import build_network

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    roots = train_root if isinstance(train_root, list | tuple) else [train_root]
    train_cases = [c for root in roots for c in cache_cases(root, cfg.spacing_mm, workers=max(1, workers))]
    val_cases = cache_cases(val_root, cfg.spacing_mm, workers=max(1, workers)) if val_root else []
    net = build_network(cfg.architecture()).to(device)
    fixed_shape_speedups(device)
    if init_weights is not None:
        net.load_state_dict(torch.load(init_weights, map_location=device, weights_only=True))
        log(f"initialised from {init_weights}")
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # adamw: warm-up then cosine decay, a pure function of the iteration (so runs can be resumed and
    # extended); sgd (the seed's): reduce on plateau of the validation score
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=4)
    start, best = 0, float("inf")
    ckpt = out / "checkpoint.pt"
    resumed = resume(ckpt, net, opt, device, sched)
    if resumed is not None:
        start, best = resumed
        rng = np.random.default_rng(cfg.seed + start)
        log(f"resumed at iteration {start}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    new_log = not (out / "log.csv").exists()
    logf = open(out / "log.csv", "a", newline="")
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["iteration", "loss", "lr", "val_id_rate", "val_mean_mm", "seconds"])
    loss_fn = torch.nn.SmoothL1Loss(beta=1.0, reduction="sum")
    t0, running = time.time(), []
    it = start
    batches = batch_stream(lambda r: training_batch(train_cases, cfg, r), rng, workers, seed=(cfg.seed, start))
    try:
        for it in range(start, cfg.iterations):
            net.train()
            if cfg.optimizer != "sgd":
                for group in opt.param_groups:
                    group["lr"] = scheduled_lr(cfg.lr, it, cfg.iterations, t0, time_budget_s)
            x, y = (torch.from_numpy(a) for a in next(batches))
            loss = loss_fn(net(x.to(device)), y.to(device)) / cfg.batch_size
            running.append(optimisation_step(net, opt, loss, cfg.grad_clip))
            last = it + 1 == cfg.iterations or (time_budget_s is not None and time.time() - t0 > time_budget_s)
            if (it + 1) % cfg.validate_every == 0 or last:
                metrics = localization_metrics_of(net, val_cases, cfg, device) if val_cases else {}
                vmean = metrics.get("mean_distance_mm", float("nan"))
                score = float(_selection_score(metrics, float(np.mean(running))))
                if cfg.optimizer == "sgd":
                    sched.step(score)
                writer.writerow([it + 1, f"{np.mean(running):.4f}", f"{opt.param_groups[0]['lr']:.2e}",
                                 f"{metrics.get('id_rate', float('nan')):.4f}", f"{vmean:.3f}", f"{time.time() - t0:.0f}"])
                logf.flush()
                log(f"it {it + 1}: loss {np.mean(running):.3f}, val id {metrics.get('id_rate', float('nan')):.3f}, "
                    f"mean {vmean:.2f} mm, {time.time() - t0:.0f} s")
                running = []
                if score < best or not (out / "best.pt").exists():
                    best = score
                    torch.save(net.state_dict(), out / "best.pt")
                save_checkpoint(ckpt, net, opt, it + 1, best, sched)
            if last:
                break
    finally:
        batches.close()
        logf.close()
    return out / "best.pt"


def _selection_score(metrics: dict[str, float], train_loss: float) -> float:
    """Lower is better: missed identifications dominate, then the mean distance (mm)."""
    if not metrics:
        return train_loss
    mean = metrics.get("mean_distance_mm", float("nan"))
    ident = metrics.get("id_rate", float("nan"))
    return 100.0 * (1.0 - (ident if np.isfinite(ident) else 0.0)) + (mean if np.isfinite(mean) else 100.0)


def localization_metrics_of(net: Any, cases: list[CachedCase], cfg: LocalizationTraining, device: str,
                            threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """Validation metrics on cached cases (whole-image inference on the model grid)."""
    from VertebralFractureLib.localize import detect_and_name, heatmaps_on_grid
    from VertebralFractureLib.training.metrics import localization_metrics
    from VertebralFractureLib.volume import Volume

    net.eval()
    preds, truths = [], []
    for case in cases:
        grid = Volume(np.zeros(case.image.shape, np.uint8), (cfg.spacing_mm,) * 3)
        heat = heatmaps_on_grid(net, case.image, cfg.patch_size, device)
        chain = detect_and_name(heat, grid, threshold)
        preds.append({c.label: c.position_lps for c in chain})
        truths.append({k: grid.zyx_to_lps(v) for k, v in case.centroids_zyx.items()})
    return localization_metrics(preds, truths)
