"""The seed-000 random forest's hand-made features of a 2D slice (used by the slice classifier and
by the GAN's check of its synthetic slices)."""

from __future__ import annotations

import numpy as np


def handcrafted_features(img: np.ndarray) -> np.ndarray:
    """The seed's random-forest inputs for one slice (0..1): an intensity histogram and its moments,
    a texture summary (local standard deviation, Laplacian), and edges (Sobel magnitude statistics
    and an orientation histogram weighted by magnitude)."""
    from scipy import ndimage

    a = np.asarray(img, np.float32)
    hist = np.histogram(a, bins=16, range=(0.0, 1.0))[0] / a.size
    pct = np.percentile(a, [5, 25, 50, 75, 95])
    local_sd = np.sqrt(np.maximum(ndimage.uniform_filter(a * a, 5) - ndimage.uniform_filter(a, 5) ** 2, 0))
    lap = ndimage.laplace(a)
    gy, gx = ndimage.sobel(a, 0), ndimage.sobel(a, 1)
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    orient = np.histogram(ang, bins=8, range=(0, np.pi), weights=mag)[0] / max(float(mag.sum()), 1e-6)
    bone = a > (400.0 - (-250.0)) / 1500.0  # above 400 HU in the slice window
    rows, cols = bone.any(axis=1), bone.any(axis=0)
    return np.concatenate([hist, pct, [a.mean(), a.std(), local_sd.mean(), local_sd.std(), np.abs(lap).mean(),
                                       lap.std(), mag.mean(), mag.std(), np.percentile(mag, 90), bone.mean(),
                                       rows.mean(), cols.mean()], orient]).astype(np.float32)


def feature_matrix(x: np.ndarray) -> np.ndarray:
    """:func:`handcrafted_features` of every slice of ``x`` (n × H × W), one row each."""
    return np.stack([handcrafted_features(img) for img in x])
