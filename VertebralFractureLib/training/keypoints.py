"""Training the stage-3 keypoint network: a 2D M-SCN on a vertebra's sagittal mask planes (seeds/002 §2.3.3).

Data: VerSe-layout folders with vertebra masks and SynthSpine's ``*_genant.json`` (the exact six
keypoints of every vertebra). Every complete vertebra C3–L5 is put on its mid-sagittal frame the
way inference does it (:func:`..keypoints.sagittal_view`: spine axis from the neighbouring
centroids, left–right symmetry, centred on the body); besides that exact frame ``variants − 1``
frames tilted by up to ``tilt_deg`` and moved sideways by up to ``shift_mm`` are sampled, as a
stage-1 centroid or a curved spine moves the plane. The stacks and their keypoints (pixels) are
cached per folder.

Each training sample is then rotated, scaled and moved in plane, and half of them get mask
errors of the kind stage 2 makes: the boundary wobbles by a pixel or two (a smooth random field
added before thresholding) and the whole mask may be eroded or dilated by a pixel; with
``defect_share`` some also get gaps in the outline (:func:`outline_defects`). Targets are
Gaussian heatmaps (σ = ``sigma_mm``); the loss is the L2 distance of the heatmaps (as in the SCN)
with L2 weight decay and gradient clipping. The validation score is the mean keypoint error (mm)
on the exact frames of the validation cases.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.training.common import (
    fixed_shape_speedups,
    optimisation_step,
    resume,
    save_checkpoint,
    save_npz,
    scheduled_lr,
)


@dataclass(frozen=True)
class KeypointTraining:
    """Training settings (one place for the defaults)."""

    size: int = 128
    pixel_mm: float = 0.625
    lateral_offsets_mm: tuple[float, ...] = (-4.0, 0.0, 4.0)
    features: tuple[int, ...] = (16, 32, 48, 64, 96)
    gn_features: int = 16
    gn_kernel: int = 7
    sigma_mm: float = 1.5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    iterations: int = 4000
    grad_clip: float = 1.0
    variants: int = 3
    tilt_deg: float = 4.0
    shift_mm: float = 1.5
    rotation_deg: float = 8.0
    scale_range: tuple[float, float] = (0.92, 1.08)
    translate_mm: float = 3.0
    mask_error_share: float = 0.5
    defect_share: float = 0.0
    deformed_share: float = 0.0
    deformed_below: float = 0.8
    seed: int = 0
    validate_every: int = 250
    threads: int = 0

    def architecture(self) -> dict[str, Any]:
        return {"type": "MSCN2D", "features": list(self.features), "gn_features": self.gn_features,
                "gn_kernel": self.gn_kernel, "in_channels": len(self.lateral_offsets_mm), "out_channels": 6,
                "input_planes_mm": list(self.lateral_offsets_mm)}

    def input_spec(self) -> Any:
        from VertebralFractureLib.keypoints import KeypointInput

        return KeypointInput(self.size, self.pixel_mm, tuple(self.lateral_offsets_mm))

    def cache_key(self) -> str:
        fields = (self.size, self.pixel_mm, tuple(self.lateral_offsets_mm), self.variants, self.tilt_deg, self.shift_mm)
        return hashlib.sha256(repr(fields).encode()).hexdigest()[:10]


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about the unit ``axis``."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def case_samples(case: Any, cfg: KeypointTraining, seed: int) -> dict[str, np.ndarray]:
    """The input stacks and keypoints (pixels) of every complete vertebra C3–L5 of one case."""
    from scipy import ndimage

    from VertebralFractureLib.analysis import KEYPOINT_NAMES
    from VertebralFractureLib.genant import NOT_GRADED
    from VertebralFractureLib.io.readers import read_labelmap
    from VertebralFractureLib.keypoints import plane_stack, sagittal_view
    from VertebralFractureLib.sagittal import local_spine_axis

    spec = cfg.input_spec()
    rng = np.random.default_rng(seed)
    mask = read_labelmap(case.vertebra_mask)
    arr = mask.array
    present = [int(v) for v in np.unique(arr) if v]
    cents = dict(zip(present, (mask.zyx_to_lps(np.asarray(c)) for c in ndimage.center_of_mass(arr > 0, arr, present))))
    boxes = ndimage.find_objects(arr)
    slice_mm = mask.slice_mm
    xs, kps, labels = [], [], []
    for e in json.loads(case.genant.read_text()):
        lab = int(e["label"])
        if not e.get("complete") or e.get("keypoints_lps_mm") is None or lab in NOT_GRADED or lab not in cents:
            continue
        crop = mask.crop(tuple(slice(max(0, s.start - 2), s.stop + 2) for s in boxes[lab - 1]))
        try:
            view = sagittal_view(crop, lab, cents[lab], local_spine_axis(lab, cents))
        except ValueError:
            continue
        truth = np.array([e["keypoints_lps_mm"][k] for k in KEYPOINT_NAMES])
        for v in range(cfg.variants):
            sup, ant, centre = view.superior, view.anterior, view.body_centre_lps()
            if v:
                left = np.cross(sup, ant)
                r = _rotation(left, np.deg2rad(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg)))
                r = _rotation(sup, np.deg2rad(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg))) @ r
                sup, ant = r @ sup, r @ ant
                centre = centre + rng.uniform(-cfg.shift_mm, cfg.shift_mm) * np.cross(sup, ant)
            stack = plane_stack(view.binary, centre, sup, ant, spec)
            st = np.stack([(truth - centre) @ ant, (truth - centre) @ sup], -1)
            xs.append(stack.astype(np.float16))
            kps.append(spec.st_to_pixels(st).astype(np.float32))
            labels.append((lab, v))
    n = len(xs)
    return {"x": np.stack(xs) if n else np.zeros((0, len(spec.lateral_offsets_mm), spec.size, spec.size), np.float16),
            "kp": np.stack(kps) if n else np.zeros((0, 6, 2), np.float32),
            "label": np.array([a for a, _ in labels], np.int16), "variant": np.array([b for _, b in labels], np.int16),
            "slice_mm": np.full(n, slice_mm, np.float32)}


def _case_job(job: tuple[Any, KeypointTraining, int, Path]) -> str:
    case, cfg, seed, f = job
    if not f.exists():
        save_npz(f, **case_samples(case, cfg, seed))
    return case.subject


def load_samples(roots: list[Path], cfg: KeypointTraining, workers: int = 1,
                 log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """All samples of the VerSe-layout folders ``roots`` (extracted once, cached per case)."""
    from VertebralFractureLib.io.verse import list_cases

    jobs = []
    for root in roots:
        cases = [c for c in list_cases(root) if c.genant.exists() and c.vertebra_mask.exists()]
        if not cases:
            raise ValueError(f"no cases with vertebra masks and *_genant.json in {root}")
        cache = Path(root) / f".cache-kp-{cfg.cache_key()}"
        cache.mkdir(parents=True, exist_ok=True)
        jobs += [(c, cfg, int.from_bytes(hashlib.sha256(c.subject.encode()).digest()[:4], "little"),
                  cache / f"{c.subject}.npz") for c in cases]
    todo = [j for j in jobs if not j[3].exists()]
    if todo:
        log(f"extracting sagittal planes of {len(todo)} cases ({workers} workers)")
        t0 = time.time()
        if workers > 1:
            from multiprocessing import get_context

            with get_context("spawn").Pool(workers) as pool:
                for k, _ in enumerate(pool.imap_unordered(_case_job, todo)):
                    if (k + 1) % 10 == 0:
                        log(f"  {k + 1}/{len(todo)} cases, {time.time() - t0:.0f} s")
        else:
            for j in todo:
                _case_job(j)
    parts = [dict(np.load(j[3])) for j in jobs]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["case"] = np.concatenate([np.full(len(p["label"]), i, np.int32) for i, p in enumerate(parts)])
    return out


def deformed(kp_rc: np.ndarray, below: float) -> np.ndarray:
    """Which samples' true keypoints ``(B, 6, 2)`` describe a deformed body: the smallest of the
    three heights under ``below`` × the largest (the seed's ``G = min/max``)."""
    h = np.linalg.norm(kp_rc[:, 0::2] - kp_rc[:, 1::2], axis=-1)  # A, M, P: superior − inferior
    return h.min(axis=1) < below * h.max(axis=1)


def draw_batch(deformed_mask: np.ndarray, cfg: KeypointTraining, rng: np.random.Generator) -> np.ndarray:
    """Sample indices of one batch; a ``deformed_share`` of them from the deformed vertebrae
    (fractures are a few per cent of all vertebrae, and a network trained on the natural mix
    pulls their keypoints towards the normal shape)."""
    n = len(deformed_mask)
    idx = rng.integers(0, n, cfg.batch_size)
    pool = np.flatnonzero(deformed_mask)
    if cfg.deformed_share > 0 and len(pool):
        pick = rng.random(cfg.batch_size) < cfg.deformed_share
        idx[pick] = rng.choice(pool, int(pick.sum()))
    return idx


def gaussian_targets(kp_rc: np.ndarray, size: int, sigma_px: float) -> np.ndarray:
    """``(B, 6, size, size)`` Gaussian heatmaps (peak 1) at pixel positions ``kp_rc`` ``(B, 6, 2)``."""
    grid = np.arange(size, dtype=np.float32)
    gr = np.exp(-((grid[None, None, :] - kp_rc[..., 0:1]) ** 2) / (2 * sigma_px**2))
    gc = np.exp(-((grid[None, None, :] - kp_rc[..., 1:2]) ** 2) / (2 * sigma_px**2))
    return (gr[..., :, None] * gc[..., None, :]).astype(np.float32)


def mask_errors(stack: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boundary errors like a network segmentation's: a smooth random field added before
    thresholding moves the edge by a pixel or two; sometimes a one-pixel erosion or dilation."""
    from scipy import ndimage

    c, h, w = stack.shape
    coarse = rng.normal(0, rng.uniform(0.05, 0.2), (h // 8 + 2, w // 8 + 2))
    field = ndimage.zoom(coarse, (h / coarse.shape[0], w / coarse.shape[1]), order=3)[:h, :w]
    out = (ndimage.gaussian_filter(stack, (0, 1.0, 1.0)) + field[None] > 0.5).astype(np.float32)
    u = rng.random()
    if u < 0.15:
        out = np.stack([ndimage.binary_erosion(p) for p in out]).astype(np.float32)
    elif u < 0.3:
        out = np.stack([ndimage.binary_dilation(p) for p in out]).astype(np.float32)
    return out


def outline_defects(stack: np.ndarray, kp: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Gaps of the kind stage 2 leaves in a real body's outline while its corners and endplates stay
    (the keypoints do not move): a pocket in the posterior wall between the posterior corners, where
    the basivertebral veins enter the body (dark on CT, deepest on the mid-sagittal plane), and a few
    small holes inside the body. ``kp`` are the six keypoints (pixels, rows and columns of the
    stack, in the order A_sup, A_inf, M_sup, M_inf, P_sup, P_inf)."""
    out = stack.copy()
    rows, cols = np.mgrid[0:stack.shape[1], 0:stack.shape[2]].astype(np.float32)
    p_sup, p_inf = kp[4], kp[5]
    middle = (kp[2] + kp[3]) / 2.0
    wall = p_inf + rng.uniform(0.3, 0.7) * (p_sup - p_inf)  # a point of the posterior wall
    along = (p_sup - p_inf) / max(float(np.linalg.norm(p_sup - p_inf)), 1e-6)
    inward = np.array([along[1], -along[0]])  # perpendicular to the wall, turned towards the body
    if np.dot(middle - wall, inward) < 0:
        inward = -inward
    # the pocket stays 2 mm clear of both posterior corners
    room = min(float(np.linalg.norm(wall - p_sup)), float(np.linalg.norm(wall - p_inf))) - 2.0 / pixel_mm
    half_height = min(rng.uniform(2.0, 6.0) / pixel_mm, room)
    depth = rng.uniform(1.5, 5.0) / pixel_mm if half_height >= 1.0 / pixel_mm else 0.0
    d = np.stack([rows - wall[0], cols - wall[1]])
    u = d[0] * along[0] + d[1] * along[1]
    v = d[0] * inward[0] + d[1] * inward[1]
    mid = stack.shape[0] // 2
    for c in range(stack.shape[0]):
        scale = 1.0 if c == mid else rng.uniform(0.0, 1.0)  # the veins enter at the midline
        if scale * depth < 1.0:
            continue
        pocket = (u / half_height) ** 2 + (v / (scale * depth)) ** 2 <= 1.0
        out[c][pocket] = 0.0
    lo = kp.min(axis=0) + 3.0 / pixel_mm
    hi = kp.max(axis=0) - 3.0 / pixel_mm
    for _ in range(int(rng.integers(0, 4))):
        if np.any(hi <= lo):
            break
        centre = rng.uniform(lo, hi)
        radius = rng.uniform(1.0, 2.5) / pixel_mm
        hole = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2
        out[:, hole] = 0.0
    return out


def augment(stack: np.ndarray, kp: np.ndarray, cfg: KeypointTraining, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random in-plane rotation, scale and translation of a stack and its keypoints; mask errors;
    gaps in the outline (:func:`outline_defects`, a ``defect_share`` of the samples)."""
    from scipy import ndimage

    a = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    sc = rng.uniform(*cfg.scale_range)
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / sc  # output → input pixel
    shift = rng.uniform(-cfg.translate_mm, cfg.translate_mm, 2) / cfg.pixel_mm
    centre = (cfg.size - 1) / 2.0
    offset = centre - m @ (centre + shift)
    out = np.stack([ndimage.affine_transform(p, m, offset=offset, order=1, mode="constant", cval=0.0)
                    for p in stack.astype(np.float32)])
    kp_out = (np.linalg.inv(m) @ (kp - offset).T).T
    if rng.random() < cfg.mask_error_share:
        out = mask_errors(out, rng)
    if cfg.defect_share > 0 and rng.random() < cfg.defect_share:
        out = outline_defects(out, kp_out, cfg.pixel_mm, rng)
    return out, kp_out.astype(np.float32)


def keypoint_errors_mm(net: Any, x: np.ndarray, kp: np.ndarray, cfg: KeypointTraining, device: str,
                       batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per sample the mean keypoint error (mm) and the lowest heatmap peak."""
    from VertebralFractureLib.keypoints import heatmap_peaks, predict_heatmaps

    errs, peaks = [], []
    for i in range(0, len(x), batch):
        heat = predict_heatmaps(net, x[i:i + batch].astype(np.float32), device)
        for h, t in zip(heat, kp[i:i + batch]):
            rc, pk = heatmap_peaks(h)
            errs.append(float(np.linalg.norm(rc - t, axis=1).mean() * cfg.pixel_mm))
            peaks.append(float(pk.min()))
    return np.array(errs), np.array(peaks)


def train_keypoints(
    roots: list[Path], out_dir: Path, cfg: KeypointTraining, val_root: Path | None = None, device: str = "cpu",
    log: Callable[[str], None] = print, time_budget_s: float | None = None, workers: int = 1,
    init_weights: str | Path | None = None,
) -> Path:
    """Train the 2D M-SCN; returns the path of the best weights (``best.pt``, a state_dict).

    Resumes from ``out_dir/checkpoint.pt`` when present; otherwise starts from ``init_weights``
    (fine-tuning) when given. Without ``val_root`` the last 10 % of the training cases are held out
    for validation.
    """
    import torch

    from VertebralFractureLib.keypoints import build_keypoint_network

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = load_samples(list(roots), cfg, workers, log)
    if val_root is not None:
        val = load_samples([val_root], cfg, workers, log)
        train = data
    else:
        n_cases = int(data["case"].max()) + 1
        held = data["case"] >= int(round(0.9 * n_cases))
        train = {k: v[~held] for k, v in data.items()}
        val = {k: v[held] for k, v in data.items()}
    exact = val["variant"] == 0
    vx, vkp = val["x"][exact], val["kp"][exact]
    if len(train["x"]) == 0 or len(vx) == 0:
        raise ValueError("no training or validation vertebrae")
    train_deformed = deformed(train["kp"], cfg.deformed_below)
    log(f"{len(train['x'])} training samples ({int(train_deformed.sum())} deformed), {len(vx)} validation vertebrae")

    net = build_keypoint_network(cfg.architecture()).to(device)
    fixed_shape_speedups(device)
    if init_weights is not None and not (out_dir / "checkpoint.pt").exists():
        net.load_state_dict(torch.load(init_weights, map_location=device, weights_only=True))
        log(f"initialised from {init_weights}")
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt, best_path, log_path = out_dir / "checkpoint.pt", out_dir / "best.pt", out_dir / "log.csv"
    state = resume(ckpt, net, opt, device)
    start, best = state if state else (0, float("inf"))
    if not log_path.exists():
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(["iteration", "loss", "lr", "val_error_mm", "val_median_mm", "seconds"])
    rng = np.random.default_rng(cfg.seed + start)
    sigma_px = cfg.sigma_mm / cfg.pixel_mm
    t_start, losses = time.time(), []
    it = start
    for it in range(start, cfg.iterations):
        lr = scheduled_lr(cfg.lr, it, cfg.iterations, t_start, time_budget_s)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = draw_batch(train_deformed, cfg, rng)
        pairs = [augment(train["x"][i], train["kp"][i], cfg, rng) for i in idx]
        xb = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
        yb = torch.from_numpy(gaussian_targets(np.stack([p[1] for p in pairs]), cfg.size, sigma_px)).to(device)
        net.train()
        pred = net(xb)
        losses.append(optimisation_step(net, opt, ((pred - yb) ** 2).sum(dim=(2, 3)).mean(), cfg.grad_clip))
        last = it + 1 == cfg.iterations
        out_of_time = time_budget_s is not None and time.time() - t_start > time_budget_s
        if (it + 1) % cfg.validate_every == 0 or last or out_of_time:
            errs, _ = keypoint_errors_mm(net, vx, vkp, cfg, device)
            score = float(errs.mean())
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow([it + 1, f"{np.mean(losses):.4f}", f"{lr:.2e}", f"{score:.3f}",
                                        f"{np.median(errs):.3f}", f"{time.time() - t_start:.0f}"])
            log(f"it {it + 1}: loss {np.mean(losses):.4f}, val keypoint error {score:.3f} mm (median {np.median(errs):.3f})")
            losses = []
            if score < best:
                best = score
                torch.save(net.state_dict(), best_path)
            save_checkpoint(ckpt, net, opt, it + 1, best)
            if out_of_time:
                log(f"time budget reached after {it + 1} iterations")
                break
    if not best_path.exists():
        torch.save(net.state_dict(), best_path)
    return best_path
