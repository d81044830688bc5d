"""Pieces shared by the training loops: augmentation, learning-rate schedule, checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def random_affine(rng: np.random.Generator, rotation_deg: float, scale_range: tuple[float, float]) -> np.ndarray:
    """A random 3 × 3 (z, y, x) matrix: rotations up to ``rotation_deg`` about each axis, an isotropic
    scale in ``scale_range``, and a left–right flip (the last axis) half of the time."""
    a = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a[0]), -np.sin(a[0])], [0, np.sin(a[0]), np.cos(a[0])]])
    ry = np.array([[np.cos(a[1]), 0, np.sin(a[1])], [0, 1, 0], [-np.sin(a[1]), 0, np.cos(a[1])]])
    rz = np.array([[np.cos(a[2]), -np.sin(a[2]), 0], [np.sin(a[2]), np.cos(a[2]), 0], [0, 0, 1]])
    m = rx @ ry @ rz * rng.uniform(*scale_range)
    if rng.random() < 0.5:
        m = m @ np.diag([1.0, 1.0, -1.0])
    return m


def augment_intensity(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast curve (30 %), scale, shift and Gaussian noise of a normalised image
    (HU / 1000 clipped to [−1, 1.5], :mod:`..preprocess`)."""
    if rng.random() < 0.3:
        img = (np.clip((img + 1.0) / 2.5, 0, 1) ** rng.uniform(0.7, 1.4)) * 2.5 - 1.0
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)
    return (img + rng.normal(0, rng.uniform(0, 0.03), img.shape)).astype(np.float32)


def cosine_lr(base: float, it: int, total: int) -> float:
    """Linear warm-up over 5 % of the iterations, then cosine decay to 2 % of ``base``."""
    warm = min(1.0, (it + 1) / max(1.0, 0.05 * total))
    return float(base * warm * max(0.02, 0.5 * (1.0 + np.cos(np.pi * min(it, total) / total))))


def resume(ckpt: Path, net: Any, opt: Any, device: str, scheduler: Any = None) -> tuple[int, float] | None:
    """Load a checkpoint written by :func:`save_checkpoint`; returns (iteration, best score) or None."""
    import torch

    if not ckpt.exists():
        return None
    state = torch.load(ckpt, map_location=device, weights_only=True)
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["iteration"]), float(state["best"])


def save_checkpoint(ckpt: Path, net: Any, opt: Any, iteration: int, best: float, scheduler: Any = None) -> None:
    """Everything needed to resume: weights, optimizer (and scheduler) state, iteration, best score."""
    import torch

    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": iteration, "best": float(best)}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    torch.save(state, ckpt)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` cache file whole or not at all (a temporary file renamed into place),
    so that trainings that share a data folder never read a half-written cache."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
