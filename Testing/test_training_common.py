"""The pieces the training loops share: the schedule over a time budget, batches prepared by worker
processes, caches filled in parallel."""

from __future__ import annotations

import numpy as np
import pytest
from factories import tiny_verse_folder

from VertebralFractureLib.training.common import (
    batch_stream,
    cosine_lr,
    fill_caches,
    schedule_progress,
    scheduled_lr,
)


def test_without_a_budget_the_schedule_is_the_cosine_over_iterations():
    for it in (0, 3, 50, 99, 100, 150):
        assert scheduled_lr(1e-3, it, 100, started=0.0, budget_s=None) == pytest.approx(cosine_lr(1e-3, it, 100))


def test_the_budget_drives_the_decay_when_iterations_lag_behind():
    assert schedule_progress(10, 1_000_000, elapsed_s=50.0, budget_s=100.0) == pytest.approx(0.5)
    assert schedule_progress(900, 1000, elapsed_s=10.0, budget_s=100.0) == pytest.approx(0.9)
    assert schedule_progress(5, 10, elapsed_s=500.0, budget_s=100.0) == 1.0
    import time

    now = time.time()
    # far too many iterations asked for: warm-up and decay still end within the budget
    assert scheduled_lr(1e-3, 10, 1_000_000, started=now - 30, budget_s=600) == pytest.approx(1e-3, rel=0.01)
    assert scheduled_lr(1e-3, 10, 1_000_000, started=now - 599, budget_s=600) < 0.03e-3


def _draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(2, 3)).astype(np.float32)
    return x, x.sum(axis=1)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_stream_gives_consistent_batches_in_and_out_of_process(workers):
    pytest.importorskip("torch")
    stream = batch_stream(_draw, np.random.default_rng(0), workers, seed=(7, 0))
    batches = [next(stream) for _ in range(6)]
    stream.close()
    for x, s in batches:
        assert isinstance(x, np.ndarray) and x.shape == (2, 3)
        np.testing.assert_allclose(x.sum(axis=1), s, rtol=1e-5)
    # every batch is a fresh draw: the workers do not repeat one another's random streams
    assert len({x.tobytes() for x, _ in batches}) == 6


def test_batch_stream_with_workers_is_reproducible_for_a_seed():
    pytest.importorskip("torch")

    def first(seed):
        stream = batch_stream(_draw, np.random.default_rng(0), 2, seed=seed)
        got = sorted(next(stream)[0].tobytes() for _ in range(4))
        stream.close()
        return got

    assert first((7, 0)) == first((7, 0))
    assert first((7, 0)) != first((7, 100))


def _square_into(job):
    value, target = job
    np.save(target, np.array(value) ** 2)


@pytest.mark.parametrize("workers", [1, 3])
def test_fill_caches_runs_every_job(tmp_path, workers):
    jobs = [(v, str(tmp_path / f"{v}.npy")) for v in range(5)]
    fill_caches(jobs, _square_into, workers)
    assert [int(np.load(tmp_path / f"{v}.npy")) for v in range(5)] == [0, 1, 4, 9, 16]


def test_parallel_caching_gives_the_cases_of_serial_caching(tmp_path):
    from VertebralFractureLib.training import localization, segmentation

    data = tiny_verse_folder(tmp_path / "data")
    serial = localization.cache_cases(data, 4.0, cache_dir=tmp_path / "a", workers=1)
    parallel = localization.cache_cases(data, 4.0, cache_dir=tmp_path / "b", workers=2)
    assert [c.name for c in serial] == [c.name for c in parallel]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.centroids_zyx.keys() == b.centroids_zyx.keys()
    seg_a = segmentation.cache_cases(data, 4.0, cache_dir=tmp_path / "c", workers=1)
    seg_b = segmentation.cache_cases(data, 4.0, cache_dir=tmp_path / "d", workers=2)
    for a, b in zip(seg_a, seg_b):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.fractured == b.fractured and a.centroids_zyx.keys() == b.centroids_zyx.keys()
