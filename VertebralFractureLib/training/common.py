"""Pieces shared by the training loops: augmentation, learning-rate schedule, checkpoints, batches
prepared in worker processes, caches filled in parallel."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
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


def _warm_cosine(base: float, warm: float, progress: float) -> float:
    """``base`` × the warm-up factor × a cosine decay over ``progress`` (0–1), never below 2 % of ``base``."""
    return float(base * warm * max(0.02, 0.5 * (1.0 + np.cos(np.pi * progress))))


def cosine_lr(base: float, it: int, total: int) -> float:
    """Linear warm-up over 5 % of the iterations, then cosine decay to 2 % of ``base``."""
    return _warm_cosine(base, min(1.0, (it + 1) / max(1.0, 0.05 * total)), min(it, total) / total)


def optimisation_step(net: Any, opt: Any, loss: Any, grad_clip: float) -> float:
    """Back-propagate ``loss``, clip the gradient norm at ``grad_clip``, step; returns the loss."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


def fixed_shape_speedups(device: str) -> None:
    """On a GPU, let cuDNN pick the fastest convolution for the training's fixed patch shapes
    (``cudnn.benchmark``); nothing changes on a CPU."""
    import torch

    if str(device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True


def schedule_progress(it: int, total: int, elapsed_s: float, budget_s: float | None) -> float:
    """Where a run stands in its schedule (0–1): the larger of the share of iterations done and the
    share of the time budget spent, so that a run stopped by its time budget has finished its
    learning-rate decay wherever the machine's speed put it."""
    done = it / max(1, total)
    if budget_s:
        done = max(done, elapsed_s / budget_s)
    return float(min(1.0, done))


def scheduled_lr(base: float, it: int, total: int, started: float, budget_s: float | None) -> float:
    """:func:`cosine_lr` at :func:`schedule_progress`; the warm-up ends after 5 % of the iterations or,
    with a time budget, of the budget, whichever comes first."""
    progress = schedule_progress(it, total, time.time() - started, budget_s)
    warm = min(1.0, (it + 1) / max(1.0, 0.05 * total))
    if budget_s:
        warm = max(warm, min(1.0, progress / 0.05))
    return _warm_cosine(base, warm, progress)


def batch_stream(make_batch: Callable[[np.random.Generator], Any], rng: np.random.Generator, workers: int,
                 seed: Sequence[int] = (0,)) -> Iterator[Any]:
    """Training batches (numpy arrays), endlessly: ``make_batch(rng)`` in this process (``workers``
    0), or prepared ahead by ``workers`` processes (forked, so the cached cases are shared, not
    copied), each drawing from its own random stream seeded by ``seed`` and its number. With workers
    the batches differ from the single-process ones; a run stays reproducible for a given number of
    workers."""
    if workers <= 0:
        while True:
            yield make_batch(rng)
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    class Stream(IterableDataset):
        def __iter__(self) -> Iterator[Any]:
            info = torch.utils.data.get_worker_info()
            r = np.random.default_rng(tuple(int(s) for s in seed) + ((info.id if info else 0),))
            while True:
                yield make_batch(r)

    # the batches (numpy arrays) travel pickled through pipes, not as tensors in shared memory, which
    # containers often keep small
    loader = DataLoader(Stream(), batch_size=None, num_workers=workers, prefetch_factor=4,
                        persistent_workers=False, collate_fn=_as_is, worker_init_fn=_one_thread,
                        multiprocessing_context=torch.multiprocessing.get_context("fork"))
    yield from loader


def _as_is(batch: Any) -> Any:
    return batch


def _one_thread(_worker: int) -> None:
    import torch

    torch.set_num_threads(1)


def fill_caches(jobs: Sequence[Any], fill_one: Callable[[Any], Any], workers: int) -> None:
    """Run ``fill_one`` on every job (a case to read and write into its cache file), in ``workers``
    processes when more than one; the cache files are written whole or not at all (:func:`save_npz`)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            fill_one(job)
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        for _ in pool.imap_unordered(fill_one, jobs):
            pass


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
