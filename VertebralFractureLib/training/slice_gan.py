"""A class-conditional GAN for the slice classifier's training set (seed 000's augmentation).

Built from MONAI's ``Generator`` and ``Discriminator``: the generator takes a latent vector with the
class (normal / fractured) appended as a one-hot; the discriminator sees the slice with the class as
a second, constant channel. Slices are generated at :data:`GAN_PX` × :data:`GAN_PX` pixels (a CPU can
train a GAN of this size in minutes; the seed does not say its resolution) and resized to the
classifier's 224 × 224.

:func:`balance_with_gan` adds as many generated fractured slices as the training set lacks to
balance its classes, and as many generated normal slices: were only one class generated, a
classifier could learn "looks generated" for "fractured". Its report holds a quality measure — the
ROC-AUC with which a random forest on the hand-made slice features tells real from generated slices
(3-fold cross-validation; 0.5 = indistinguishable, 1.0 = always told apart).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.training.slice_features import feature_matrix

#: Side of a generated slice (pixels).
GAN_PX = 64
#: Latent vector length (before the class one-hot).
LATENT = 64


def build_gan() -> tuple[Any, Any]:
    """(generator, discriminator) for :data:`GAN_PX` slices, two classes."""
    from monai.networks.nets import Discriminator, Generator

    gen = Generator(latent_shape=(LATENT + 2,), start_shape=(64, GAN_PX // 8, GAN_PX // 8), channels=(64, 32, 1),
                    strides=(2, 2, 2), num_res_units=1)
    disc = Discriminator(in_shape=(2, GAN_PX, GAN_PX), channels=(16, 32, 64, 1), strides=(2, 2, 2, 2),
                         num_res_units=1, dropout=0.25)
    return gen, disc


def _resize(x: Any, px: int) -> Any:
    import torch.nn.functional as F

    return F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=px < x.shape[-1])


def generate(gen: Any, labels: np.ndarray, px: int, seed: int = 0, batch: int = 64) -> np.ndarray:
    """Slices (n, px, px) in 0..1 for the given class labels (0 normal, 1 fractured)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    gen.eval()
    out = []
    with torch.inference_mode():
        for b in range(0, len(labels), batch):
            lab = torch.from_numpy(np.asarray(labels[b: b + batch], np.int64))
            z = torch.randn(len(lab), LATENT, generator=g)
            img = torch.sigmoid(gen(torch.cat([z, torch.nn.functional.one_hot(lab, 2).float()], 1)))
            out.append(_resize(img, px)[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, px, px), np.float32)


def train_gan(x: np.ndarray, y: np.ndarray, iterations: int = 3000, batch: int = 32, lr: float = 2e-4,
              time_budget_s: float | None = None, seed: int = 0, log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train the conditional GAN on slices ``x`` (n × H × W, 0..1) with classes ``y`` (balanced batches).

    Returns:
        The generator and ``{"iterations", "seconds", "loss_d", "loss_g"}`` (the last losses).
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    small = _resize(torch.from_numpy(np.ascontiguousarray(x[:, None], np.float32)), GAN_PX)
    gen, disc = build_gan()
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("the GAN needs slices of both classes")
    start, it, ld, lg = time.time(), 0, float("nan"), float("nan")

    def with_class(img: Any, lab: Any) -> Any:
        return torch.cat([img * 2 - 1, lab.float().view(-1, 1, 1, 1).expand_as(img) * 2 - 1], 1)

    for it in range(1, iterations + 1):
        idx = np.concatenate([rng.choice(pos, batch // 2), rng.choice(neg, batch - batch // 2)])
        real = small[idx]
        lab = torch.from_numpy(y[idx]).long()
        z = torch.randn(len(idx), LATENT)
        fake = torch.sigmoid(gen(torch.cat([z, F.one_hot(lab, 2).float()], 1)))
        ones, zeros = torch.full((len(idx), 1), 0.9), torch.zeros(len(idx), 1)  # one-sided label smoothing
        d_loss = (F.binary_cross_entropy(disc(with_class(real, lab)), ones)
                  + F.binary_cross_entropy(disc(with_class(fake.detach(), lab)), zeros))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy(disc(with_class(fake, lab)), torch.ones(len(idx), 1))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        ld, lg = float(d_loss.detach()), float(g_loss.detach())
        if log is not None and it % 250 == 0:
            print(f"gan it {it}: loss D {ld:.3f}, G {lg:.3f}, {time.time() - start:.0f} s", file=log, flush=True)
        if time_budget_s is not None and time.time() - start > time_budget_s:
            break
    return gen, {"iterations": it, "seconds": round(time.time() - start, 1), "loss_d": round(ld, 4),
                 "loss_g": round(lg, 4), "px": GAN_PX}


def realism_auc(real: np.ndarray, generated: np.ndarray, seed: int = 0) -> float:
    """ROC-AUC of a random forest on the hand-made slice features telling real from generated
    slices (3-fold cross-validation): 0.5 indistinguishable, 1.0 always told apart."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_predict

    from VertebralFractureLib.training.metrics import roc_auc

    n = min(len(real), len(generated))
    rng = np.random.default_rng(seed)
    a = real[rng.choice(len(real), n, replace=False)]
    b = generated[rng.choice(len(generated), n, replace=False)]
    x = feature_matrix(np.concatenate([a, b]))
    y = np.r_[np.zeros(n), np.ones(n)]
    p = cross_val_predict(RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1), x, y, cv=3,
                          method="predict_proba")[:, 1]
    return float(roc_auc(y.astype(bool), p))


def balance_with_gan(x: np.ndarray, y: np.ndarray, time_budget_s: float | None = None, iterations: int = 3000,
                     seed: int = 0, log: Any = None, figure: str | Path | None = None
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The training slices with generated ones added: fractured ones up to the normal count, and as
    many normal ones. Returns the enlarged (x, y) and the GAN's report (training, counts, realism)."""
    gen, report = train_gan(x, y, iterations=iterations, time_budget_s=time_budget_s, seed=seed, log=log)
    n_add = max(0, int(np.sum(y == 0) - np.sum(y == 1)))
    labels = np.r_[np.ones(n_add, np.int64), np.zeros(n_add, np.int64)]
    fake = generate(gen, labels, x.shape[-1], seed=seed + 1).astype(np.float32)
    report.update({"generated_fractured": n_add, "generated_normal": n_add,
                   "realism_auc": round(realism_auc(x, fake, seed) if len(fake) else float("nan"), 4)})
    if figure is not None and len(fake):
        slice_figure(x, y, fake, labels, figure)
    return np.concatenate([x, fake]), np.concatenate([y, labels]), report


def slice_figure(real: np.ndarray, real_y: np.ndarray, fake: np.ndarray, fake_y: np.ndarray, path: str | Path,
                 per_row: int = 6) -> Path:
    """Rows: SynthSpine normal, SynthSpine fractured, GAN normal, GAN fractured slices."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [("SynthSpine CT, normal", real[real_y == 0]), ("SynthSpine CT, fractured", real[real_y == 1]),
            ("GAN, normal", fake[fake_y == 0]), ("GAN, fractured", fake[fake_y == 1])]
    fig = Figure(figsize=(1.8 * per_row, 1.95 * len(rows)), dpi=90, facecolor="black")
    FigureCanvasAgg(fig)
    for r, (title, imgs) in enumerate(rows):
        for c in range(per_row):
            ax = fig.add_subplot(len(rows), per_row, r * per_row + c + 1)
            ax.set_axis_off()
            if c < len(imgs):
                ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_title(title, color="white", fontsize=8, loc="left")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.03, hspace=0.2)
    fig.savefig(path, facecolor="black")
    return Path(path)


__all__ = ["GAN_PX", "balance_with_gan", "build_gan", "generate", "realism_auc", "slice_figure", "train_gan"]
