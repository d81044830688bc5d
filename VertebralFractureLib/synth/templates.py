"""Real posterior elements for SynthSpine, taken from manual vertebra masks.

SynthSpine's procedural posterior elements are a T-shaped block of capsules; on real CT the pedicles,
laminae, facets and processes leave the body obliquely and taper (``docs/synthspine.md``), and a
segmentation network trained on the blocks misses much of them (they are ~38 % of a vertebra). Here
each vertebra of a VerSe-style mask (``*seg-vert_msk.nii.gz``, labels 1–28) becomes a template:

1. its local frame (``u`` left, ``v`` posterior, ``w`` cranial, as
   :class:`~VertebralFractureLib.synth.spine.Vertebra` uses), the mask resampled into it at 1 mm,
   and its body's posterior wall (:mod:`VertebralFractureLib.vertebra_parts`); the body's centre,
   width and height are measured;
2. the posterior elements (everything behind the posterior wall, pedicles included) as a signed
   distance map (mm, negative inside).

A synthetic vertebra with a template keeps its procedural body (its endplates carry the exact
keypoints and fractures) and gets the template's posterior elements, attached at its posterior
wall and scaled to its own body (:func:`draw`): each axis by its own factor with a random
proportion, mirrored left–right at random, and warped by a smooth random displacement, so that no
two vertebrae repeat a shape. Levels without a template keep the procedural shape.

Vertebrae cut by the mask's field of view are not used. The masks are read from where they lie
(``--templates``); nothing is copied into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from VertebralFractureLib.anatomy import is_vertebra_label, name_of
from VertebralFractureLib.slices import mask_centres
from VertebralFractureLib.vertebra_parts import STEP_MM, local_vertebra

#: Masks with a coarser voxel than this along any axis are not used.
MAX_SPACING_MM = 2.0
#: Vertebrae with more than this share of their voxels on the mask's faces are cut: not used.
MAX_CUT_SHARE = 0.005
#: Random proportion of each axis of the posterior elements (± this share).
PROPORTION = 0.07
#: Smooth random displacement of the posterior elements: amplitude (mm) and wavelengths (mm).
WARP_MM = 1.5
WARP_WAVELENGTH_MM = (25.0, 60.0)
#: Cortical shell of the posterior elements (mm), drawn per vertebra: on real CT the laminae and the
#: spinous and transverse processes are mostly solid cortical bone, brighter than SynthSpine's
#: procedural shell-and-marrow parts (a network trained on those found 36–54 % of the real posterior
#: elements, docs/segmentation.md).
SHELL_MM = (1.5, 4.0)
#: A label map has at most this many distinct values (a CT given by mistake has thousands).
MAX_LABELS = 64
#: Variants named by the level a template is borrowed from.
BORROW = {"T13": "T12", "L6": "L5"}


@dataclass(frozen=True)
class Template:
    """The posterior elements of one real vertebra in its local frame (1 mm grid, body centre at 0)."""

    name: str  # level, e.g. "L3"
    source: str  # mask file and label
    sdf: np.ndarray  # (w, v, u) signed distance (mm, negative inside), float32
    origin: np.ndarray  # local (u, v, w) mm of sdf[0, 0, 0]
    back: float  # v (mm) of the body's posterior wall
    width: float  # of the body (mm)
    depth: float
    height: float


@dataclass(frozen=True)
class Draw:
    """A template as one synthetic vertebra wears it: scales, mirror and warp."""

    template: Template
    scale: np.ndarray  # (u, v, w) factors, synthetic mm per template mm
    mirror: bool
    warp: np.ndarray  # (k, 3, 5): per wave and axis: amplitude, frequency (u, v, w), phase
    shell: float = 1.3  # cortical shell (mm): thinner parts are solid cortical bone

    def bounds(self, back: float) -> tuple[np.ndarray, np.ndarray]:
        """Local (u, v, w) bounds (mm) of the posterior elements on a vertebra whose posterior wall
        lies at ``v = back``."""
        t = self.template
        lo_t = t.origin
        hi_t = t.origin + (np.array(t.sdf.shape[::-1]) - 1) * STEP_MM
        half_u = max(abs(lo_t[0]), abs(hi_t[0])) * self.scale[0]
        pad = WARP_MM * len(self.warp) + 1.0
        lo = np.array([-half_u, back + (lo_t[1] - t.back) * self.scale[1], lo_t[2] * self.scale[2]]) - pad
        hi = np.array([half_u, back + (hi_t[1] - t.back) * self.scale[1], hi_t[2] * self.scale[2]]) + pad
        return lo, hi

    def distance(self, u: np.ndarray, v: np.ndarray, w: np.ndarray, back: float) -> np.ndarray:
        """Signed distance (≈ mm, negative inside) of local points to the posterior elements."""
        from scipy import ndimage

        t = self.template
        pts = [np.asarray(u, np.float32), np.asarray(v, np.float32), np.asarray(w, np.float32)]
        disp = [np.zeros_like(pts[0]) for _ in range(3)]
        for wave in self.warp:
            for axis in range(3):
                amp, fu, fv, fw, phase = wave[axis]
                disp[axis] += np.float32(amp) * np.sin(np.float32(fu) * pts[0] + np.float32(fv) * pts[1]
                                                       + np.float32(fw) * pts[2] + np.float32(phase))
        uu, vv, ww = (p + d for p, d in zip(pts, disp))
        ut = (-uu if self.mirror else uu) / np.float32(self.scale[0])
        vt = np.float32(t.back) + (vv - np.float32(back)) / np.float32(self.scale[1])
        wt = ww / np.float32(self.scale[2])
        idx = [(wt - t.origin[2]) / STEP_MM, (vt - t.origin[1]) / STEP_MM, (ut - t.origin[0]) / STEP_MM]
        d = ndimage.map_coordinates(t.sdf, idx, order=1, mode="constant", cval=50.0)
        return d * np.float32(float(np.min(self.scale)))


def vertebra_template(volume, label: int, centroids: dict[int, np.ndarray], source: str) -> Template | None:
    """The template of one vertebra of a label map (:class:`~VertebralFractureLib.volume.Volume`), or None
    when its body cannot be told from its posterior elements (:func:`~VertebralFractureLib.vertebra_parts.local_vertebra`)."""
    from scipy import ndimage

    lv = local_vertebra(volume, label, centroids)
    if lv is None:
        return None
    ww, vv, uu = np.meshgrid(lv.axes[2], lv.axes[1], lv.axes[0], indexing="ij")
    body = lv.mask & (vv < lv.back) & (vv >= lv.front - 2.0)
    post = lv.mask & (vv >= lv.back - 2.0)
    if body.sum() < 200 or post.sum() < 0.15 * lv.mask.sum():
        return None
    u_lo, u_hi = np.percentile(uu[body], [0.2, 99.8])
    w_lo, w_hi = np.percentile(ww[body], [0.2, 99.8])
    centre = np.array([0.5 * (u_lo + u_hi), 0.5 * (lv.front + lv.back), 0.5 * (w_lo + w_hi)])
    sdf = (ndimage.distance_transform_edt(~post) - ndimage.distance_transform_edt(post)) * STEP_MM
    nz = np.argwhere(post)
    a = np.maximum(nz.min(0) - 3, 0)
    b = np.minimum(nz.max(0) + 4, post.shape)
    sdf = sdf[a[0]:b[0], a[1]:b[1], a[2]:b[2]].astype(np.float32)
    origin = np.array([lv.axes[0][a[2]], lv.axes[1][a[1]], lv.axes[2][a[0]]]) - centre
    return Template(name_of(label), source, sdf, origin, lv.back - centre[1], float(u_hi - u_lo),
                    float(lv.back - lv.front), float(w_hi - w_lo))


def _cut_share(arr: np.ndarray, label: int) -> float:
    """Share of a label's voxels on the faces of the array (a vertebra cut by the field of view)."""
    faces = sum(int(np.count_nonzero(np.take(arr, end, axis=axis) == label)) for axis in range(3) for end in (0, -1))
    return faces / max(int(np.count_nonzero(arr == label)), 1)


def mask_files(paths: tuple[str, ...]) -> list[Path]:
    """The VerSe-style vertebra masks (``*seg-vert*_msk.nii.gz``) among files and folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*_msk.nii*") if "seg-vert" in f.name)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"template masks: {p} does not exist")
    return files


@lru_cache(maxsize=4)
def load_bank(paths: tuple[str, ...]) -> dict[str, tuple[Template, ...]]:
    """Templates per level from the masks among ``paths`` (cached per process)."""
    from VertebralFractureLib.io.readers import read_image

    bank: dict[str, list[Template]] = {}
    for f in mask_files(paths):
        vol = read_image(f).volume
        if max(vol.spacing) > MAX_SPACING_MM:
            continue
        arr = np.asarray(vol.array)
        values = np.unique(arr)
        if not np.issubdtype(arr.dtype, np.integer) or len(values) > MAX_LABELS:
            raise ValueError(f"{f.name} is not a vertebra label map ({len(values)} distinct values)")
        labels = [int(k) for k in values if k and is_vertebra_label(int(k))]
        centroids = mask_centres(vol)
        for k in labels:
            if _cut_share(arr, k) > MAX_CUT_SHARE:
                continue
            t = vertebra_template(vol, k, centroids, f"{f.name.split('.')[0]}:{k}")
            if t is not None:
                bank.setdefault(t.name, []).append(t)
    return {k: tuple(v) for k, v in bank.items()}


def draw(rng: np.random.Generator, bank: dict[str, tuple[Template, ...]], name: str, width: float, depth: float,
         height: float) -> Draw | None:
    """A template for a vertebra of level ``name`` with body ``width`` × ``depth`` × ``height`` (mm)."""
    options = bank.get(BORROW.get(name, name))
    if not options:
        return None
    t = options[int(rng.integers(len(options)))]
    su, sd, sh = width / t.width, depth / t.depth, height / t.height
    scale = np.array([su, np.sqrt(su * sd), sh]) * rng.uniform(1 - PROPORTION, 1 + PROPORTION, 3)
    n_waves = 2
    warp = np.zeros((n_waves, 3, 5))
    for k in range(n_waves):
        for axis in range(3):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            wavelength = rng.uniform(*WARP_WAVELENGTH_MM)
            warp[k, axis] = [rng.uniform(0, WARP_MM), *(2 * np.pi / wavelength * direction), rng.uniform(0, 2 * np.pi)]
    return Draw(t, scale, bool(rng.random() < 0.5), warp, float(rng.uniform(*SHELL_MM)))


def assign(plan, paths: tuple[str, ...], seed: int) -> int:
    """Give every vertebra of a plan whose level has a template a drawn one (``vertebra.template``);
    returns how many got one. Its own random stream: the rest of the case is unchanged."""
    bank = load_bank(tuple(str(p) for p in paths))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E3A]))
    n = 0
    for vt in plan.vertebrae:
        if vt.kind in ("atlas", "axis", "cervical"):
            continue
        # the body as a template measures it: width, mid-sagittal depth (to the concave posterior wall), height
        d = draw(rng, bank, vt.name, vt.width, vt.depth - vt.post_concavity, vt.hp)
        if d is not None:
            vt.template = d
            n += 1
    return n
