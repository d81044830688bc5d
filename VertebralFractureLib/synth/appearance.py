"""CT appearance: HU per tissue (subject-level draws), textures, partial-volume blur and noise.

* Intensities: each tissue class gets a mean HU drawn once per case from
  :data:`~VertebralFractureLib.synth.priors.TISSUE_HU` (osteoporotic or normal bone, with or without
  intravenous contrast), plus a fine texture whose amplitude depends on the tissue.
* Textures come from small filtered-noise tiles of co-prime sizes, indexed periodically over the
  grid (no visible repetition, no full-volume filtering): an anisotropic one (trabecular bone is
  oriented cranio-caudally), a coarse one for bowel loops, and a vessel tree proxy for the lungs.
* The point-spread function (in-plane Gaussian of the reconstruction kernel, slice profile along
  z) is applied on the fine working grid; the image is then resampled to the output grid and
  correlated noise (CT-like noise power spectrum) is added there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from VertebralFractureLib.synth import priors
from VertebralFractureLib.synth.tissues import N_TISSUES, Tissue

F32 = np.float32


@dataclass
class Appearance:
    """Per-case CT appearance.

    Attributes:
        mean: mean HU per tissue class.
        texture: fine-texture amplitude (HU) per tissue class.
        noise_sd: image-noise standard deviation (HU) at the output grid.
        psf_mm: in-plane PSF sigma (mm) of the reconstruction kernel.
        air: HU of air outside the body.
        contrast: intravenous contrast given.
        osteoporotic: osteoporotic bone density.
    """

    mean: np.ndarray
    texture: np.ndarray
    noise_sd: float
    psf_mm: float
    air: float
    contrast: bool
    osteoporotic: bool
    bowel_lumen: float = 0.5
    bowel_gas: float = 1.0
    lung_gradient: float = 40.0


def _u(rng: np.random.Generator, key: str) -> float:
    lo, hi = priors.TISSUE_HU[key]
    return float(rng.uniform(lo, hi))


def draw_appearance(rng: np.random.Generator, osteoporotic: bool, contrast: bool, age: float,
                    noise_hu: tuple[float, float]) -> Appearance:
    """Draw the tissue HU table and the acquisition noise/PSF of one case."""
    m = np.zeros(N_TISSUES, F32)
    tex = np.zeros(N_TISSUES, F32)
    trab = _u(rng, "trabecular_osteoporotic" if osteoporotic else "trabecular_normal")
    cort = _u(rng, "cortical")
    muscle = _u(rng, "muscle") - (8.0 if age > 70 else 0.0)
    fat = _u(rng, "fat")
    blood = _u(rng, "blood_contrast" if contrast else "blood")
    air = float(rng.uniform(-1010, -985))
    T = Tissue
    m[T.AIR] = air
    m[T.GAS] = air + rng.uniform(0, 15)
    m[T.FAT] = fat
    m[T.MUSCLE] = muscle
    m[T.SKIN] = muscle + rng.uniform(0, 20)
    m[T.LUNG] = _u(rng, "lung")
    m[T.BLOOD] = blood
    m[T.VENOUS_BLOOD] = blood * (rng.uniform(0.55, 0.9) if contrast else 1.0)
    m[T.MYOCARDIUM] = muscle + (rng.uniform(40, 80) if contrast else 0)
    m[T.LIVER] = _u(rng, "liver_contrast" if contrast else "liver")
    m[T.SPLEEN] = _u(rng, "spleen") + (rng.uniform(50, 90) if contrast else 0)
    m[T.KIDNEY] = _u(rng, "kidney_contrast" if contrast else "kidney")
    m[T.KIDNEY_MEDULLA] = m[T.KIDNEY] * (rng.uniform(0.5, 0.85) if contrast else 1.0)
    m[T.BOWEL] = _u(rng, "bowel")
    m[T.CSF] = _u(rng, "csf")
    m[T.CORD] = _u(rng, "cord")
    m[T.BRAIN] = rng.uniform(28, 40)
    annulus = _u(rng, "disc")
    m[T.ANNULUS] = annulus
    m[T.NUCLEUS] = annulus - rng.uniform(5, 30)
    m[T.TRABECULAR] = trab
    m[T.CORTICAL] = cort
    m[T.ENDPLATE] = cort * rng.uniform(0.65, 0.9)
    m[T.POSTERIOR_MARROW] = trab * rng.uniform(1.1, 1.5) + 20
    m[T.MARROW] = trab * rng.uniform(0.8, 1.2) + 20
    m[T.IMPACTED] = trab + rng.uniform(150, 320)
    m[T.OSTEOPHYTE] = cort * rng.uniform(0.5, 0.8)
    m[T.CARTILAGE] = _u(rng, "cartilage") + (rng.uniform(0, 150) if age > 60 else 0)
    m[T.TABLE] = rng.uniform(150, 450)
    m[T.ORGAN] = rng.uniform(45, 100)
    m[T.VEIN] = blood * (0.8 if contrast else 1.0)
    m[T.LIGAMENT] = _u(rng, "ligament")
    # fine texture amplitudes (HU): trabecular bone is the textured tissue; soft tissues are faint
    tex[T.TRABECULAR] = trab * rng.uniform(0.25, 0.4) + 20
    tex[T.POSTERIOR_MARROW] = tex[T.TRABECULAR] * 1.1
    tex[T.MARROW] = tex[T.TRABECULAR]
    tex[T.IMPACTED] = tex[T.TRABECULAR] * 1.3
    tex[T.CORTICAL] = 60.0
    tex[T.ENDPLATE] = 60.0
    tex[T.OSTEOPHYTE] = 60.0
    tex[T.FAT] = rng.uniform(4, 12)
    tex[T.MUSCLE] = rng.uniform(3, 9) + (6 if age > 70 else 0)
    tex[T.LIVER] = rng.uniform(2, 6)
    tex[T.SPLEEN] = 3.0
    tex[T.KIDNEY] = 6.0
    tex[T.ANNULUS] = 6.0
    tex[T.NUCLEUS] = 5.0
    tex[T.LUNG] = 35.0
    tex[T.CARTILAGE] = 30.0
    tex[T.MYOCARDIUM] = 4.0
    tex[T.SKIN] = 4.0
    return Appearance(mean=m, texture=tex, noise_sd=float(rng.uniform(*noise_hu)),
                      psf_mm=float(rng.uniform(0.35, 0.8)), air=air, contrast=contrast, osteoporotic=osteoporotic,
                      bowel_lumen=float(rng.uniform(0.5, 1.0)), bowel_gas=float(rng.uniform(1.2, 2.0)),
                      lung_gradient=float(rng.uniform(0.0, 60.0)))


def randomise(app: Appearance, rng: np.random.Generator) -> Appearance:
    """Domain randomisation of one case's appearance, in the spirit of SynthSeg (Billot et al. 2023)
    but kept in HU (the networks read HU windows): every tissue's mean moves independently by a
    Gaussian of SD 25 % of its distance from water plus 30 HU, so that contrasts between neighbouring
    tissues (cortex and marrow, disc and bone, canal and muscle) vary far beyond the realistic
    tables, and the textures are scaled by 0.4–2.5. Air stays air; the geometry, the blur and the
    noise are the case's own (the label maps do not change). Returns a new :class:`Appearance`."""
    mean = app.mean.astype(np.float64).copy()
    sd = 0.25 * np.abs(mean) + 30.0
    mean = mean + rng.normal(0.0, 1.0, mean.shape) * sd
    mean[Tissue.AIR], mean[Tissue.GAS] = app.mean[Tissue.AIR], app.mean[Tissue.GAS]
    mean[Tissue.LUNG] = min(mean[Tissue.LUNG], -500.0)
    mean = np.clip(mean, -1000.0, 2500.0).astype(F32)
    texture = (app.texture * rng.uniform(0.4, 2.5, app.texture.shape)).astype(F32)
    return Appearance(mean=mean, texture=texture, noise_sd=app.noise_sd, psf_mm=app.psf_mm,
                      air=app.air, contrast=app.contrast, osteoporotic=app.osteoporotic, bowel_lumen=app.bowel_lumen,
                      bowel_gas=app.bowel_gas, lung_gradient=app.lung_gradient)


# ------------------------------------------------------------------------------------------- textures
def _tile(rng: np.random.Generator, n: int, sigma_vox: tuple[float, float, float]) -> np.ndarray:
    """A periodic (wrap-mode) filtered-noise tile of shape (n, n, n), unit standard deviation."""
    from scipy.ndimage import gaussian_filter

    t = gaussian_filter(rng.standard_normal((n, n, n), dtype=F32), sigma_vox, mode="wrap")
    t -= t.mean()
    t /= t.std() + 1e-6
    return t


@dataclass
class Textures:
    """Noise tiles for one case (sizes are co-prime so their sum does not repeat visibly)."""

    fine_a: np.ndarray
    fine_b: np.ndarray
    coarse: np.ndarray
    vessel: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, spacing: tuple[float, float, float], osteoporotic: bool) -> Textures:
        sx, sy, sz = spacing
        zf = 1.4 if osteoporotic else 1.0
        fine = (zf * 0.9 / sz, 0.45 / sy, 0.45 / sx)  # trabecular: cranio-caudal orientation
        fine_b = (0.6 / sz, 0.6 / sy, 0.6 / sx)
        coarse = (4.0 / sz, 4.0 / sy, 4.0 / sx)
        vessel = (1.4 / sz, 1.4 / sy, 1.4 / sx)
        return cls(_tile(rng, 47, fine), _tile(rng, 43, fine_b), _tile(rng, 61, tuple(min(c, 8.0) for c in coarse)),
                   _tile(rng, 53, tuple(min(v, 6.0) for v in vessel)))


def render_hu(tissue: np.ndarray, app: Appearance, tex: Textures, spacing: tuple[float, float, float],
              threads: int = 1, chunk: int = 16) -> np.ndarray:
    """HU image on the working grid: tissue means, textures, bowel loops, lung vessels, in-plane PSF.

    Bowel: two coarse noise fields define loops (lumen where ``n1² + n2²`` is small, a wall around
    it, mesenteric fat elsewhere); gas fills the lumen where a third field is high. Lung: vessels
    where a tubular-scale noise field exceeds a threshold. The in-plane point-spread function
    (Gaussian, ``app.psf_mm``) is applied slab by slab.
    """
    from scipy.ndimage import gaussian_filter1d

    nz, ny, nx = tissue.shape
    out = np.empty(tissue.shape, F32)
    mean, amp = app.mean, app.texture
    lung_hu = float(mean[Tissue.LUNG])
    bone_like = np.zeros(256, bool)
    bone_like[[int(t) for t in (Tissue.TRABECULAR, Tissue.POSTERIOR_MARROW, Tissue.MARROW, Tissue.IMPACTED,
                                Tissue.CORTICAL, Tissue.ENDPLATE, Tissue.OSTEOPHYTE, Tissue.CARTILAGE)]] = True
    sig = (app.psf_mm / spacing[1], app.psf_mm / spacing[0])
    wall_hu = F32(mean[Tissue.BOWEL] + (40.0 if app.contrast else 15.0))

    # periodic tiles expanded along x once, so a slab's texture is a copy of contiguous rows
    def rows(tile: np.ndarray) -> np.ndarray:
        return np.take(tile, np.arange(nx) % tile.shape[2], axis=2)

    def slab(tile_x: np.ndarray, z0: int, z1: int, shift: int = 0) -> np.ndarray:
        k = tile_x.shape[0]
        return np.take(np.take(tile_x, (np.arange(z0, z1) + shift) % k, axis=0), (np.arange(ny) + 3 * shift) % k, axis=1)

    fa_x, fb_x = rows(tex.fine_a), rows(tex.fine_b)
    co_x, ve_x = rows(tex.coarse), rows(tex.vessel)
    is_bone = bone_like
    lung_code, bowel_code = int(Tissue.LUNG), int(Tissue.BOWEL)
    ygrad = (np.arange(ny, dtype=F32) / F32(max(ny, 1)))[None, :, None] * F32(app.lung_gradient)

    def work(z0: int) -> None:
        z1 = min(nz, z0 + chunk)
        t = tissue[z0:z1]
        hu = mean[t]
        bone = is_bone[t]
        if bone.any():
            n = F32(0.9) * slab(fa_x, z0, z1) + F32(0.45) * slab(fb_x, z0, z1)
            hu += np.where(bone, amp[t] * n, F32(0))
        lung = t == lung_code
        if lung.any():
            nv = slab(ve_x, z0, z1)
            nf = slab(fb_x, z0, z1, shift=11)
            vessel = np.clip((nv - F32(1.55)) * F32(2.5), 0, 1) * F32(-lung_hu + 40.0)
            hu += np.where(lung, vessel + F32(amp[Tissue.LUNG]) * nf + ygrad, F32(0))
        bowel = t == bowel_code
        if bowel.any():
            n1, n2, n3 = slab(co_x, z0, z1), slab(co_x, z0, z1, shift=17), slab(co_x, z0, z1, shift=29)
            r2 = n1 * n1 + n2 * n2
            lumen = F32(app.bowel_lumen)
            content = np.where(n3 > F32(app.bowel_gas), F32(app.air + 40), mean[Tissue.BOWEL])
            val = np.where(r2 < lumen, content, np.where(r2 < lumen + F32(0.25), wall_hu, mean[Tissue.FAT]))
            hu = np.where(bowel, val, hu)
        if max(sig) > 0.15:
            hu = gaussian_filter1d(hu, sig[0], axis=1, truncate=3.0, mode="nearest")
            hu = gaussian_filter1d(hu, sig[1], axis=2, truncate=3.0, mode="nearest")
        out[z0:z1] = hu

    _run(work, range(0, nz, chunk), threads)
    return out


def blur_z(image: np.ndarray, sigma_vox: float, threads: int = 1) -> np.ndarray:
    """Gaussian blur along z (the slice profile), in row blocks."""
    from scipy.ndimage import gaussian_filter1d

    if sigma_vox <= 0.15:
        return image
    ny = image.shape[1]
    step = 32

    def work(y0: int) -> None:
        y1 = min(ny, y0 + step)
        image[:, y0:y1] = gaussian_filter1d(image[:, y0:y1], sigma_vox, axis=0, truncate=3.0, mode="nearest")

    _run(work, range(0, ny, step), threads)
    return image


def ct_noise_add(rng: np.random.Generator, image: np.ndarray, sd: float, corr_vox: float = 0.7,
                 threads: int = 1, chunk: int = 16) -> None:
    """Add correlated CT-like noise (in-plane filtered white noise, standard deviation ``sd`` HU) in place.

    The white field is drawn as uniform numbers (cheaper than Gaussian ones); after the in-plane
    filter the sum of ~10 correlated samples is Gaussian to a very good approximation.
    """
    from scipy.ndimage import gaussian_filter1d

    probe = np.random.default_rng(0).random((64, 256), dtype=F32) - F32(0.5)
    probe = gaussian_filter1d(gaussian_filter1d(probe, corr_vox, axis=0, mode="wrap"), corr_vox, axis=1, mode="wrap")
    norm = F32(sd / probe.std())
    nz = image.shape[0]
    seeds = rng.integers(0, 2**63 - 1, size=(nz + chunk - 1) // chunk)

    def work(z0: int) -> None:
        z1 = min(nz, z0 + chunk)
        r = np.random.default_rng(int(seeds[z0 // chunk]))
        w = r.random((z1 - z0,) + image.shape[1:], dtype=F32)
        w -= F32(0.5)
        w = gaussian_filter1d(w, corr_vox, axis=1, truncate=3.0, mode="nearest")
        w = gaussian_filter1d(w, corr_vox, axis=2, truncate=3.0, mode="nearest")
        image[z0:z1] += w * norm

    _run(work, range(0, nz, chunk), threads)


def _run(fn, starts, threads: int) -> None:
    starts = list(starts)
    if threads <= 1 or len(starts) < 2:
        for s in starts:
            fn(s)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, starts))
