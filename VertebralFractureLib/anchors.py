"""Naming anchors from the image: the landmarks a reader counts vertebrae from.

Stage 1 finds vertebrae without knowing their level; its network names them by appearance alone,
which on real CT can be off by two or three levels. A radiologist names a spine from anchors that
do not depend on counting from the edge of the field of view:

* **the ribs** — the first vertebra bearing a rib pair is T1, the last one T12 (11 or 13 rib pairs
  in about 6 % of adults; short stump ribs make the last one less certain, Möller et al. 2025);
* **the sacrum** — the vertebra directly above it is L5 (L4 or L6 with a transitional segment);
* **the skull base** — the first vertebra below it is C1, the next C2.

:func:`find_anchors` measures these in HU around given vertebra centroids (cranial → caudal, LPS
mm), on the CT block-averaged to ~2 mm and cut into a frame that follows the spine (``u`` to the
patient's left, ``v`` posterior, relative to the axis through the centroids; LPS ``z``), so any
file orientation works.

* Ribs: every bone patch with a cortical core crossing the sagittal plane ``|u|`` =
  :data:`RIB_START_MM` behind the vertebral bodies is followed outwards plane by plane (and
  forwards where it turns, as the first rib does). A rib runs on along the chest wall
  (:data:`FULL_RIB_MM`); a lumbar transverse process ends within ~20 mm; an enhancing kidney has no
  cortical core; vessels along the spine and plates (scapula, iliac wing) are too tall to start or
  carry a trace. Each trace goes to the vertebra at whose level it leaves the spine. A side whose
  field of view does not reach :data:`VISIBLE_MM` is *unknown*, never "no rib": a spine-only
  reconstruction (~100 mm wide) gives no rib anchor rather than a guess. So is a vertebra that the
  cranial or caudal end of the image cuts near its middle (:data:`OWN_SPAN`): its ribs may lie outside.
* First rib: the cranial-most vertebra with a full rib pair below a rib-free neighbour at
  cervical spacing; last rib: the caudal-most rib-bearing vertebra above a rib-free neighbour.
* Sacrum: rows below the rib-bearing spine where deep bone (the alae) runs through the midline out
  to both iliac wings; the vertebra just above is L5. In a spine-only reconstruction the alae are
  followed to the edge of the image, and one side may lie outside it.
* Skull base: wide bone with the occiput behind it just above a rib-free chain at cervical spacing.

Each :class:`Anchor` names one vertebra with a confidence and cheaper variant labels;
:func:`VertebralFractureLib.localize.name_chain` adds, weighted by the confidence, a cost to names
that contradict it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from VertebralFractureLib.anatomy import vertebra
from VertebralFractureLib.volume import Volume

#: Working grid (mm): the CT is block-averaged to about this spacing.
GRID_MM = 2.0
#: A voxel of the working grid is bone above this mean HU.
BONE_HU = 180.0
#: Ribs are picked up where they cross ``|u|`` = this distance from the spine axis (mm): beyond the
#: vertebral body and the articular processes, at the rib neck / tip of the transverse process.
RIB_START_MM = 36.0
#: A patch there is followed only if it joins the spine: bone continues inwards to this ``|u|`` (mm;
#: the rib neck towards the head and the transverse process).
RIB_ROOT_MM = 28.0
#: Where a rib crosses that plane it lies in this band of ``v`` (mm, + posterior) around the axis
#: (the VerSe centroid sits at the posterior body wall; rib necks run back to the transverse process).
RIB_V_MM: tuple[float, float] = (-6.0, 45.0)
#: Per 2 mm step, a traced rib may move this far across the marching direction (mm; z, then the other axis).
TRACE_STEP_MM: tuple[float, float] = (6.0, 7.0)
#: A rib's cross-section has a cortical core: a working-grid voxel at least this bright (real ribs:
#: 5th percentile ~390 HU at 2 mm; enhancing kidney and liver stay below).
CORE_HU = 300.0
#: A patch taller than this (mm, along z) in a marching plane is a plate (scapula, iliac wing) or a
#: vessel running along the spine (aorta, vena cava), not a rib.
PLATE_MM = 34.0
#: Marching forwards, a rib may come back towards the spine by this much from its lateral-most point (mm).
FORWARD_SLACK_MM = 15.0
#: The forward part of a trace counts only beyond this anterior run (mm): deeper than a transverse process.
FORWARD_MIN_MM = 20.0
#: A trace may pass this many planes where only a plate is in reach (a rib touching the scapula); a
#: longer stretch ends it where the plate began.
MAX_MERGED_PLANES = 5
#: A trace longer than this (path length in mm beyond :data:`RIB_START_MM`) is at least a rib stump:
#: lumbar transverse processes end within ~15 mm of that plane (L3's, the longest, ~50 mm from the midline).
STUMP_MM = 28.0
#: A trace at least this long is a full rib running on along the chest wall (it reaches ~75 mm from the
#: axis, beyond any transverse process).
FULL_RIB_MM = 40.0
#: "No rib" needs the field of view to reach this far laterally (mm from the axis) at the vertebra's
#: level; a narrower (spine-only) reconstruction leaves the side unknown.
VISIBLE_MM = 72.0
#: Sacrum: in a row below the lumbar spine, bone connected through the midline reaches this far to both
#: sides (mm): the alae joined to the ilium (an L5 transverse process ends at ~45 mm).
SACRUM_HALF_WIDTH_MM = 55.0
#: Sacrum: mean depth (mm, along v) of the bone 30–45 mm to each side (the alae ~20–40 mm; a rib or a
#: transverse process cut by an axial plane ~6–15 mm).
ALA_DEPTH_MM = 18.0
#: Sacrum: the band of ``|u|`` (mm) where the alae's depth is measured; a side whose field of view ends
#: before its outer limit is unseen.
ALA_BAND_MM: tuple[float, float] = (30.0, 45.0)
#: Sacrum: the band of ``v`` (mm) searched for the alae.
SACRUM_V_MM: tuple[float, float] = (-25.0, 40.0)
#: Skull base: a row above the spine with this much bone (mm², |u| ≤ 70 mm, v −30…80 mm) …
SKULL_AREA_MM2 = 1800.0
#: … of which this much behind the spine (v ≥ 30 mm: the occiput).
SKULL_BACK_MM2 = 300.0
#: Skull base this close above the first centroid (mm): that vertebra is C1 (the next one C2); up to
#: :data:`C2_GAP_MM`: the first vertebra is C2 (C1 not detected).
C1_GAP_MM = 16.0
C2_GAP_MM = 40.0
#: The first rib only below a step this short (mm; C7–T1 ~19–21 mm, T12–L1 ~31 mm).
CERVICAL_STEP_MM = 23.0
#: The skull base is looked for only above a chain seen rib-free whose first steps are this short
#: (median, mm; VerSe medians C1–C7 16–19 mm, thoracic from 20.6 mm; ribs tell the upper thorax apart).
SKULL_STEP_MM = 22.5
#: Ribs are judged only where the spine runs within this angle of the body axis (degrees): the frame
#: cuts the spine by axial rows, which a near-horizontal stretch (a strongly flexed neck) defeats.
MAX_TILT_DEG = 45.0
#: "No rib" on a side needs at least this fraction of the band where the rib would leave the spine in view.
MIN_VIEW = 0.3
#: "No rib" also needs the vertebra itself in view along the spine: its centroid ± this share of the
#: local spacing (as wide as the band where its ribs would leave the spine). A vertebra that the
#: cranial or caudal end of the image cuts through near its middle may bear ribs that leave the spine,
#: or run down, outside the image (on SynthSpine validation cases every wrong rib anchor came from a
#: "rib-free" vertebra whose centroid lay within 5 mm of the end).
OWN_SPAN = 0.35
#: Where a rib crosses :data:`RIB_START_MM`, relative to its own vertebra's centroid along the local
#: spine axis, in local spacings: the starting guess. The offset drifts along the spine (about +0.5
#: in a kyphotic upper thorax, ~0 at T10–T12; LIDC-IDRI-0002) and is re-estimated from the ribs.
RIB_LEVEL_OFFSET = 0.25

#: Anchor kind → {VerSe label: cost of naming the anchored vertebra so}; labels not listed cost 1.
#: 0 is the normal anatomy, the small costs the common variants (11/13 rib pairs, transitional
#: lumbosacral segment, cervical rib).
ANCHOR_LABELS: dict[str, dict[int, float]] = {
    "first rib": {8: 0.0, 7: 0.4, 9: 0.7},  # T1; C7 with a cervical rib; T2 (T1 without ribs: very rare)
    "last rib": {19: 0.0, 18: 0.15, 28: 0.3, 20: 0.6},  # T12; T11 (11 pairs, or a 12th rib too short to trace), T13 (13 pairs), L1 (lumbar rib)
    "last rib (stump)": {19: 0.0, 20: 0.3, 28: 0.3, 18: 0.4},  # a stump: also a lumbar rib on L1
    "sacrum": {24: 0.0, 25: 0.3, 23: 0.3},  # L5; L6 (lumbarised S1), L4 (sacralised L5)
    "C2": {2: 0.0},
}


@dataclass(frozen=True)
class Anchor:
    """A landmark that fixes the name of one vertebra of the chain.

    Attributes:
        kind: ``"first rib"``, ``"last rib"``, ``"sacrum"`` or ``"C2"``.
        index: the vertebra's position in the chain (0 = cranial-most).
        confidence: 0–1; the naming cost of contradicting the anchor is weighted by it.
        costs: VerSe label → cost (0 = what the anchor says, small = an anatomical variant);
            labels not listed cost ``default``.
        detail: what was seen, in words.
        default: cost of the labels not in ``costs``.
        names: False for the consequence of an anchor on a neighbour (the rib-free vertebra next to
            the first or last rib-bearing one cannot be a rib-bearing thoracic vertebra): it constrains
            the names but is not reported as what named them.
    """

    kind: str
    index: int
    confidence: float
    costs: dict[int, float]
    detail: str = ""
    default: float = 1.0
    names: bool = True

    def cost(self, label: int) -> float:
        """Cost (0–1) of naming the anchored vertebra ``label``."""
        return float(self.costs.get(int(label), self.default))

    @property
    def expected_name(self) -> str:
        """The name the anchor gives (the zero-cost label)."""
        return vertebra(min(self.costs, key=self.costs.get)).name


#: Thoracic labels whose vertebra bears ribs, by rank: T1 … T12, T13.
_RIBBED = (8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 28)


def rib_free_neighbour(anchor: Anchor, index: int, allowed: tuple[int, ...]) -> Anchor:
    """The consequence of a rib anchor for the rib-free vertebra next to it: no rib-bearing thoracic
    name other than ``allowed`` (T12 below 11 rib pairs, T1 above a first rib on T2)."""
    costs = {lab: 1.0 for lab in _RIBBED if lab not in allowed}
    return Anchor(anchor.kind, index, anchor.confidence, costs, "rib-free neighbour", default=0.0, names=False)


@dataclass
class RibTrace:
    """A rib-like structure followed outwards from the spine on one side.

    Attributes:
        side: +1 patient left, -1 right.
        z_mm: LPS z where it leaves the spine (at ``|u|`` = :data:`RIB_START_MM`).
        v_mm: its ``v`` there (mm posterior of the spine axis).
        length_mm: path length (mm) followed beyond :data:`RIB_START_MM`.
        cut: the trace ended at the edge of the field of view.
    """

    side: int
    z_mm: float
    v_mm: float
    length_mm: float
    cut: bool


@dataclass
class VertebraEvidence:
    """What the image says about one vertebra of the chain.

    Attributes:
        ribs: ``"full"`` (a rib pair running on along the chest wall), ``"stump"`` (short ribs),
            ``"none"`` (both sides seen far enough laterally, nothing beyond the transverse
            processes) or ``"unknown"`` (field of view too narrow, or one side only inconclusive).
        rib_length_mm: per side (right, left), the length of its longest rib-like trace (mm beyond
            :data:`RIB_START_MM`; 0 when none), or None where the field of view cannot tell.
        rib_view: the smaller fraction (of the two sides) of the band where its ribs would leave the
            spine that the field of view covers out to :data:`VISIBLE_MM`.
        sacrum_below: the sacrum begins directly caudal to this vertebra.
        in_sacrum: the centroid lies in the sacrum (a detection on S1, not a vertebra C1–L6).
        skull_above: the skull base lies directly cranial to this vertebra.
    """

    ribs: str = "unknown"
    rib_length_mm: tuple[float | None, float | None] = (None, None)
    rib_view: float = 0.0
    sacrum_below: bool = False
    in_sacrum: bool = False
    skull_above: bool = False


@dataclass
class AnchorReport:
    """Anchors found around a chain of vertebra centroids, with the per-vertebra evidence."""

    vertebrae: list[VertebraEvidence]
    anchors: list[Anchor] = field(default_factory=list)
    traces: list[RibTrace] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Filled by the naming (:func:`~.localize.name_chain`): anchors the final names contradict.
    conflicts: list[str] = field(default_factory=list)


# ============================================================================ working grid
def block_mean(volume: Volume, target_mm: float = GRID_MM) -> Volume:
    """The volume averaged over blocks of about ``target_mm`` (index-aligned, so any orientation keeps
    its exact geometry; float32). Averaging keeps thin cortical bone (ribs) above :data:`BONE_HU`."""
    f = [max(1, int(round(target_mm / s))) for s in volume.spacing]  # x, y, z
    a = volume.array
    n = [(a.shape[i] // f[2 - i]) * f[2 - i] for i in range(3)]
    if min(n) == 0:
        return volume.with_array(volume.array.astype(np.float32))
    out = a[: n[0], : n[1], : n[2]]
    for axis in range(3):  # strided sums, one axis at a time (fast, and in float32 from the first step)
        k = f[2 - axis]
        if k == 1:
            out = out.astype(np.float32, copy=False)
            continue
        sl = [slice(None)] * 3
        acc = None
        for i in range(k):
            sl[axis] = slice(i, None, k)
            part = out[tuple(sl)]
            acc = part.astype(np.float32) if acc is None else np.add(acc, part, out=acc, casting="unsafe")
        out = acc / np.float32(k)
    spacing = tuple(s * k for s, k in zip(volume.spacing, f))
    origin = volume.index_to_lps(np.array([(k - 1) / 2.0 for k in f]))
    return Volume(out, spacing, tuple(origin), volume.direction.copy())


#: Value of working-grid voxels outside the field of view.
OUTSIDE = -4000.0
#: The frame around the spine: ± this laterally (mm), this band of v (mm), and this far above the first
#: and below the last centroid (mm).
FRAME_U_MM = 160.0
FRAME_V_MM: tuple[float, float] = (-70.0, 100.0)
FRAME_Z_MM: tuple[float, float] = (70.0, 110.0)


def crop_around(volume: Volume, centroids: np.ndarray, margin_mm: float = 10.0) -> Volume:
    """The part of ``volume`` that the spine frame of ``centroids`` can reach (a view; any orientation)."""
    c = np.asarray(centroids, float)
    lo = np.array([c[:, 0].min() - FRAME_U_MM, c[:, 1].min() + FRAME_V_MM[0], c[:, 2].min() - FRAME_Z_MM[1]])
    hi = np.array([c[:, 0].max() + FRAME_U_MM, c[:, 1].max() + FRAME_V_MM[1], c[:, 2].max() + FRAME_Z_MM[0]])
    lo, hi = lo - margin_mm, hi + margin_mm
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = volume.lps_to_index(corners)
    size = np.array(volume.shape_xyz)
    i0 = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, size)
    i1 = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, size)
    if np.any(i1 <= i0):
        return volume
    return volume.crop((slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0])))


def working_grid(volume: Volume, grid_mm: float = GRID_MM) -> Volume:
    """The CT block-averaged (:func:`block_mean`) and resampled onto an LPS-aligned grid of
    ``grid_mm`` (float32); voxels outside the field of view hold :data:`OUTSIDE`."""
    from VertebralFractureLib.preprocess import aligned_grid

    coarse = block_mean(volume, grid_mm)
    grid = aligned_grid(volume, grid_mm)
    out = coarse.resample_like(grid, interpolation="linear", default_value=OUTSIDE)
    return out.with_array(out.array.astype(np.float32, copy=False))


@dataclass
class SpineFrame:
    """The CT around the spine: ``hu[k, j, i]`` at LPS ``(cx_k + u_i, cy_k + v_j, z_k)``, where
    ``(cx_k, cy_k)`` is the spine axis at ``z_k`` (rows cranial first). ``inside`` marks samples
    within the field of view."""

    hu: np.ndarray
    inside: np.ndarray
    z: np.ndarray  # (K,) descending: cranial first
    v: np.ndarray  # (J,)
    u: np.ndarray  # (I,)
    cx: np.ndarray  # (K,)
    cy: np.ndarray  # (K,)
    step: float

    def zi(self, z_mm: float) -> int:
        """Index of the row nearest ``z_mm`` (clipped)."""
        return int(np.clip(np.rint((self.z[0] - z_mm) / self.step), 0, len(self.z) - 1))

    def axis_at(self, z_mm: np.ndarray | float) -> np.ndarray:
        """The spine axis (LPS x, y) at ``z_mm``."""
        return np.stack([np.interp(z_mm, self.z[::-1], self.cx[::-1]), np.interp(z_mm, self.z[::-1], self.cy[::-1])],
                        axis=-1)


def spine_frame(grid: Volume, centroids: np.ndarray, lateral_mm: float = FRAME_U_MM,
                v_range: tuple[float, float] = FRAME_V_MM, above_mm: float = FRAME_Z_MM[0],
                below_mm: float = FRAME_Z_MM[1]) -> SpineFrame:
    """The spine-following frame of a chain of centroids, cut from a :func:`working_grid`.

    The axis runs through the centroids (linear in z between them, held at the end centroids
    beyond); each row is a shifted crop of the LPS-aligned grid (shifts rounded to its spacing).
    """
    if not np.allclose(grid.direction, np.eye(3)):
        raise ValueError("spine_frame needs an LPS-aligned working grid (see working_grid)")
    step = float(grid.spacing[0])
    c = np.asarray(centroids, float)
    c = c[np.argsort(-c[:, 2])]
    nz = grid.array.shape[0]
    zg = grid.origin[2] + np.arange(nz) * grid.spacing[2]
    rows = np.flatnonzero((zg <= c[0, 2] + above_mm) & (zg >= c[-1, 2] - below_mm))[::-1]
    if rows.size == 0:
        rows = np.array([int(np.argmin(np.abs(zg - c[0, 2])))])
    z = zg[rows]
    cx = np.interp(z, c[::-1, 2], c[::-1, 0])
    cy = np.interp(z, c[::-1, 2], c[::-1, 1])
    n_u, n_v = int(round(lateral_mm / step)), (int(round(v_range[0] / step)), int(round(v_range[1] / step)))
    u = np.arange(-n_u, n_u + 1) * step
    v = np.arange(n_v[0], n_v[1] + 1) * step
    ix = np.rint((cx - grid.origin[0]) / step).astype(int)[:, None] + np.arange(-n_u, n_u + 1)[None, :]
    iy = np.rint((cy - grid.origin[1]) / grid.spacing[1]).astype(int)[:, None] + np.arange(n_v[0], n_v[1] + 1)[None, :]
    ny, nx = grid.array.shape[1:]
    ok = ((iy >= 0) & (iy < ny))[:, :, None] & ((ix >= 0) & (ix < nx))[:, None, :]
    hu = grid.array[rows[:, None, None], np.clip(iy, 0, ny - 1)[:, :, None], np.clip(ix, 0, nx - 1)[:, None, :]]
    inside = ok & (hu > OUTSIDE / 2)
    hu = np.where(inside, hu, -1000.0).astype(np.float32)
    # the sampled axis is the rounded one
    cx = grid.origin[0] + (ix[:, n_u]) * step
    cy = grid.origin[1] + (iy[:, -n_v[0]]) * grid.spacing[1]
    return SpineFrame(hu, inside, z, v, u, cx, cy, step)


# ============================================================================ ribs
class _Planes:
    """Connected patches of bone in the marching planes of a frame (computed on demand)."""

    def __init__(self, frame: SpineFrame, bone: np.ndarray, axis: int) -> None:
        self.frame, self.bone, self.axis, self.cache = frame, bone, axis, {}

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patch labels of plane ``i``; per patch whether it has a cortical core (a voxel ≥
        :data:`CORE_HU`) and whether it is taller than :data:`PLATE_MM` along z."""
        if i not in self.cache:
            from scipy import ndimage

            sl = [slice(None)] * 3
            sl[self.axis] = i
            lab, n = ndimage.label(self.bone[tuple(sl)])
            core, tall = np.zeros(n + 1, bool), np.zeros(n + 1, bool)
            if n:
                height = np.array([obj[0].stop - obj[0].start for obj in ndimage.find_objects(lab)])
                tall[1:] = height > PLATE_MM / self.frame.step
                core[1:] = np.bincount(lab[self.frame.hu[tuple(sl)] >= CORE_HU], minlength=n + 1)[1:] > 0
            self.cache[i] = (lab, core, tall)
        return self.cache[i]


def _march(frame: SpineFrame, planes: _Planes, start: tuple[float, int, float], direction: int,
           axis: int, min_u: float = 0.0, max_steps: int = 10**6) -> tuple[list[np.ndarray], bool]:
    """Follow bone from ``start`` (k, plane index, cross index) plane by plane along ``axis`` (2: u, 1: v).

    Marching anteriorly (``axis`` 1), the trace ends where it comes back within ``min_u`` (growing
    with the lateral reach) of the spine axis. Returns the path (frame indices k, j, i per plane) and
    whether the field of view cut it.
    """
    dz, dx = (int(np.ceil(d / frame.step)) for d in TRACE_STEP_MM)
    n_plane, n_cross = frame.hu.shape[axis], frame.hu.shape[3 - axis]
    k, p, x = start
    path, gaps, merged = [], 0, 0
    while len(path) < max_steps:
        p += direction
        if not 0 <= p < n_plane:
            return path, True
        k0, k1 = max(0, int(k) - dz), min(frame.hu.shape[0], int(k) + dz + 2)
        x0, x1 = max(0, int(x) - dx), min(n_cross, int(x) + dx + 2)
        win_inside = frame.inside[k0:k1, x0:x1, p] if axis == 2 else frame.inside[k0:k1, p, x0:x1]
        if not win_inside.all():
            return path, True
        lab, core, tall = planes(p)
        win = lab[k0:k1, x0:x1]
        ids = np.unique(win[win > 0])
        ids = ids[core[ids]]
        if (~tall[ids]).any():
            ids, merged = ids[~tall[ids]], 0
        elif ids.size:  # only a plate in reach: a rib touching it (scapula), or no rib
            merged += 1
            if merged > MAX_MERGED_PLANES:
                return path[: len(path) - MAX_MERGED_PLANES], False
        if ids.size == 0:
            gaps += 1
            if gaps > 1:
                return path, False
            continue
        gaps = 0
        kk, xx = np.nonzero(np.isin(win, ids))
        k, x = float(kk.mean() + k0), float(xx.mean() + x0)
        if axis == 1:
            u = abs(float(np.interp(x, np.arange(len(frame.u)), frame.u)))
            if u < min_u:
                return path, False  # back towards the spine: round a transverse process, not along a rib
            min_u = max(min_u, u - FORWARD_SLACK_MM)
        path.append(np.array([k, p, x] if axis == 1 else [k, x, p]))
    return path, False


def _length(frame: SpineFrame, path: list[np.ndarray]) -> float:
    """Length (mm) of a traced path, smoothed over three planes (the centre of a patch jitters)."""
    if len(path) < 2:
        return 0.0
    pts = np.array(path)
    mm = np.stack([np.interp(pts[:, 0], np.arange(len(frame.z)), frame.z),
                   np.interp(pts[:, 1], np.arange(len(frame.v)), frame.v),
                   np.interp(pts[:, 2], np.arange(len(frame.u)), frame.u)], axis=1)
    if len(mm) >= 3:
        mm = np.concatenate([mm[:1], (mm[:-2] + mm[1:-1] + mm[2:]) / 3.0, mm[-1:]])
    return float(np.linalg.norm(np.diff(mm, axis=0), axis=1).sum())


def trace_ribs(frame: SpineFrame, bone: np.ndarray) -> list[RibTrace]:
    """Follow every bone patch that crosses ``|u|`` = :data:`RIB_START_MM` posteriorly, outwards.

    A patch (connected bone in that sagittal plane with ``v`` within :data:`RIB_V_MM`, a cortical
    core, no taller than :data:`PLATE_MM`, and continuing inwards to :data:`RIB_ROOT_MM`) is followed
    laterally, plane by plane, while the next plane has such bone within :data:`TRACE_STEP_MM` (one
    empty plane is bridged; a touching plate for up to :data:`MAX_MERGED_PLANES`). Where it stops
    going laterally — a rib turning forwards, as the first rib does — it is followed anteriorly the
    same way; that part counts when it goes on for more than :data:`FORWARD_MIN_MM` (the depth of a
    transverse process). The edge of the field of view marks a trace cut.
    """
    from scipy import ndimage

    vmask = (frame.v >= RIB_V_MM[0]) & (frame.v <= RIB_V_MM[1])
    lateral, forward = _Planes(frame, bone, 2), _Planes(frame, bone, 1)
    n_inner = int(round((RIB_START_MM - RIB_ROOT_MM) / frame.step))
    traces: list[RibTrace] = []
    for side in (-1, 1):
        i0 = int(np.argmin(np.abs(frame.u - side * RIB_START_MM)))
        lab0, core0, tall0 = lateral(i0)
        for n, obj in enumerate(ndimage.find_objects(lab0), start=1):
            if obj is None or not core0[n] or tall0[n]:
                continue
            kk, jj = np.nonzero(lab0[obj] == n)
            kk, jj = kk + obj[0].start, jj + obj[1].start
            keep = vmask[jj]
            if not keep.any():
                continue
            first = np.array([kk[keep].mean(), jj[keep].mean(), float(i0)])
            inner, inner_cut = _march(frame, lateral, (first[0], i0, first[1]), -side, 2, max_steps=n_inner)
            if len(inner) < n_inner and not inner_cut:
                continue  # not joined to the spine (e.g. the front end of the first rib curving back)
            path, cut = _march(frame, lateral, (first[0], i0, first[1]), side, 2,
                               max_steps=int(1.5 * FULL_RIB_MM / frame.step))  # long enough to be sure
            path = [first, *path]
            length = _length(frame, path)
            if not cut and length < FULL_RIB_MM:  # turning forwards: follow it anteriorly
                last = path[-1]
                reach = abs(float(frame.u[int(round(last[2]))]))
                more, cut_f = _march(frame, forward, (last[0], int(round(last[1])), last[2]), -1, 1,
                                     min_u=max(RIB_START_MM, reach - FORWARD_SLACK_MM))
                if len(more) * frame.step >= FORWARD_MIN_MM:
                    length += _length(frame, [last, *more])
                    cut = cut_f
            z0 = float(np.interp(first[0], np.arange(len(frame.z)), frame.z))
            v0 = float(np.interp(first[1], np.arange(len(frame.v)), frame.v))
            traces.append(RibTrace(side, z0, v0, length, cut))
    return traces


# ============================================================================ per vertebra
def chain_steps(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The steps (mm) between consecutive centroids of a chain, and for each the median of its
    neighbouring steps (up to three on each side, itself left out; NaN when it has none)."""
    steps = np.linalg.norm(np.diff(np.asarray(c, float).reshape(-1, 3), axis=0), axis=1)
    medians = np.full(len(steps), np.nan)
    for k in range(len(steps)):
        ref = np.delete(steps[max(0, k - 3): k + 4], min(k, 3))
        if ref.size:
            medians[k] = float(np.median(ref))
    return steps, medians


def _gap(c: np.ndarray, k: int) -> bool:
    """The step from chain vertebra ``k`` to ``k + 1`` is long enough to hide a missed vertebra
    (more than 1.5 × the median of the neighbouring steps)."""
    steps, medians = chain_steps(c)
    return bool(steps[k] > 1.5 * medians[k])  # False where there is no neighbouring step (NaN)


def _axes(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local spine axis (unit, cranial) and local spacing (mm) at each centroid of a cranio-caudal chain."""
    n = len(c)
    axes, spacing = np.tile([0.0, 0.0, 1.0], (n, 1)), np.full(n, 30.0)
    for k in range(n):
        lo, hi = max(0, k - 1), min(n - 1, k + 1)
        if hi > lo:
            a = c[lo] - c[hi]
            axes[k] = a / max(np.linalg.norm(a), 1e-6)
            spacing[k] = float(np.linalg.norm(a)) / (hi - lo)
    return axes, spacing


def _level(frame: SpineFrame, c: np.ndarray, axes: np.ndarray, spacing: np.ndarray, t: RibTrace) -> np.ndarray:
    """Where a trace leaves the spine relative to each vertebra, along its local axis, in local spacings."""
    p = np.r_[frame.axis_at(t.z_mm) + [t.side * RIB_START_MM, t.v_mm], t.z_mm]
    return np.einsum("kj,kj->k", p[None, :] - c, axes) / spacing


def assign_ribs(frame: SpineFrame, c: np.ndarray,
                traces: list[RibTrace]) -> tuple[list[dict[int, RibTrace]], list[int], np.ndarray]:
    """The longest rib-like trace of each vertebra per side (-1 right, +1 left): traces of at least
    :data:`STUMP_MM`, and shorter ones cut by the field of view (they may be ribs).

    Where a rib leaves the spine, measured along the local axis from each centroid in local spacings,
    it lies near an offset that drifts along the spine (up to ~0.7 above the centroid in a kyphotic
    upper thorax, ~0 at T10–T12): each trace goes to the vertebra whose offset it lies within half a
    spacing of. The offsets start at :data:`RIB_LEVEL_OFFSET` and are re-estimated twice from the
    assigned traces (median over ±2 levels), so the vertebrae at the ends of the chain use their
    neighbours' offset. Returns the assignment, for traces that fit no vertebra where they lie (-1
    above the chain, +1 below it, 0 in a gap), and the offsets.
    """
    axes, spacing = _axes(c)
    n = len(c)
    ribs = [t for t in traces if t.length_mm >= STUMP_MM or t.cut]
    if not ribs:
        return [{} for _ in range(n)], [], np.full(n, RIB_LEVEL_OFFSET)
    lv = np.array([_level(frame, c, axes, spacing, t) for t in ribs])  # (m, n)
    offset = np.full(n, RIB_LEVEL_OFFSET)
    for _ in range(3):
        d = np.abs(lv - offset[None, :])
        k_of = np.argmin(d, axis=1)
        fit = d[np.arange(len(ribs)), k_of] < 0.5
        measured = np.full(n, np.nan)
        for k in range(n):
            sel = fit & (k_of == k)
            if sel.any():
                measured[k] = float(np.mean(lv[sel, k]))
        for k in range(n):
            near = measured[max(0, k - 2): k + 3]
            near = near[np.isfinite(near)]
            offset[k] = float(np.median(near)) if near.size else RIB_LEVEL_OFFSET
    out: list[dict[int, RibTrace]] = [{} for _ in range(n)]
    outside = []
    for t, k, ok, row in zip(ribs, k_of, fit, lv):
        if not ok:
            if t.length_mm >= STUMP_MM:
                outside.append(-1 if row[0] > offset[0] else (1 if row[-1] < offset[-1] else 0))
            continue
        best = out[k].get(t.side)
        if best is None or t.length_mm > best.length_mm:
            out[k][t.side] = t
    return out, outside, offset


def _side_visible(frame: SpineFrame, z_lo: float, z_hi: float, side: int) -> float:
    """The fraction of rows ``z_lo``…``z_hi`` (where a rib would leave the spine) in which the field of
    view reaches :data:`VISIBLE_MM` on this side in the posterior band."""
    rows = np.arange(np.floor(z_lo / frame.step), np.ceil(z_hi / frame.step) + 1) * frame.step
    cols = (side * frame.u >= RIB_START_MM) & (side * frame.u <= VISIBLE_MM)
    vb = (frame.v >= RIB_V_MM[0]) & (frame.v <= RIB_V_MM[1])
    seen = 0
    for z in rows:
        k = frame.zi(z)
        if abs(frame.z[k] - z) <= frame.step and frame.inside[k][vb][:, cols].mean() >= 0.9:
            seen += 1
    return seen / max(1, len(rows))


def _span_in_view(frame: SpineFrame, z_lo: float, z_hi: float) -> bool:
    """Whether ``z_lo``…``z_hi`` lies within the frame's rows (to half a row) and the spine axis is inside
    the field of view in each of its rows."""
    if z_hi > frame.z[0] + 0.5 * frame.step or z_lo < frame.z[-1] - 0.5 * frame.step:
        return False
    rows = (frame.z >= z_lo) & (frame.z <= z_hi)
    j0, i0 = int(np.argmin(np.abs(frame.v))), int(np.argmin(np.abs(frame.u)))
    return bool(frame.inside[rows, j0, i0].all())


def rib_status(frame: SpineFrame, c: np.ndarray, per_side: list[dict[int, RibTrace]],
               offset: np.ndarray) -> list[VertebraEvidence]:
    """Per vertebra: ``full`` / ``stump`` / ``none`` / ``unknown`` ribs and the trace lengths per side.

    "none" needs the field of view around the level where this vertebra's rib would leave the spine
    (its offset ± 0.35 spacings) on that side, and the vertebra itself in view along the spine (its
    centroid ± :data:`OWN_SPAN` spacings); a trace cut by the field of view is "unknown"."""
    axes, spacing = _axes(c)
    steep = np.abs(axes[:, 2]) < np.cos(np.radians(MAX_TILT_DEG))
    out = []
    for k, sides in enumerate(per_side):
        if steep[k]:
            out.append(VertebraEvidence())  # unknown
            continue
        half = OWN_SPAN * spacing[k]
        whole = _span_in_view(frame, c[k, 2] - half, c[k, 2] + half)
        states, lengths, views = [], [], []
        for side in (-1, 1):
            t = sides.get(side)
            view = _side_visible(frame, c[k, 2] + (offset[k] - 0.35) * spacing[k],
                                 c[k, 2] + (offset[k] + 0.35) * spacing[k], side)
            views.append(view)
            if t is not None and t.length_mm >= FULL_RIB_MM:
                states.append("full")
            elif t is not None and not t.cut:
                states.append("stump")
            elif t is None and view >= MIN_VIEW and whole:
                states.append("none")
            else:
                states.append("unknown")  # cut short by the field of view, the field of view too narrow, or the vertebra cut
            lengths.append(None if states[-1] == "unknown" else (t.length_mm if t is not None else 0.0))
        s = set(states)
        if "full" in s:
            ribs = "full"
        elif "stump" in s:
            ribs = "stump"
        elif s == {"none"}:
            ribs = "none"
        else:
            ribs = "unknown"
        out.append(VertebraEvidence(ribs=ribs, rib_length_mm=(lengths[0], lengths[1]), rib_view=min(views)))
    for k, e in enumerate(out):  # a stump sits next to full ribs; alone, it is a long transverse process
        if e.ribs == "stump" and not any(out[j].ribs == "full" for j in (k - 1, k + 1) if 0 <= j < len(out)):
            e.ribs = "none" if all(x is not None for x in e.rib_length_mm) else "unknown"
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    for k, e in enumerate(out):  # ribs come in series: a lone "rib" between rib-free vertebrae is something else
        if e.ribs != "full":
            continue
        free_above = k == 0 or out[k - 1].ribs == "none"
        free_below = k == len(out) - 1 or out[k + 1].ribs == "none"
        cervical_below = k < len(steps) and steps[k] <= CERVICAL_STEP_MM  # not T12 above L1
        if (k > 0 and k < len(out) - 1 and free_above and free_below) or (k == 0 and free_below and cervical_below):
            e.ribs = "unknown"
    return out


def rib_anchors(c: np.ndarray, ev: list[VertebraEvidence],
                per_side: list[dict[int, RibTrace]]) -> tuple[list[Anchor], list[str]]:
    """First and last rib-bearing vertebra of the chain, where the neighbour beyond is seen rib-free
    (and no vertebra was missed between them)."""
    n = len(c)
    anchors, notes = [], []
    bearing = [k for k, e in enumerate(ev) if e.ribs in ("full", "stump")]
    if not bearing:
        return anchors, notes

    def both(k: int) -> bool:
        return len(per_side[k]) == 2

    def single_step(a: int, b: int) -> bool:  # no missed vertebra between these two neighbours
        return not _gap(c, min(a, b))

    # first rib: the cranial-most vertebra with a full rib pair, the one above it seen without
    first = next((k for k in bearing if ev[k].ribs == "full"), None)
    if first is not None and first > 0:
        above = ev[first - 1].ribs
        cervical = float(np.linalg.norm(c[first - 1] - c[first])) <= CERVICAL_STEP_MM + 2.0  # C7–T1, not lower
        if above == "none" and single_step(first - 1, first) and cervical:
            conf = (0.9 if both(first) else 0.75) * min(1.0, 0.6 + 0.5 * ev[first - 1].rib_view)
            detail = f"full ribs{'' if both(first) else ' (one side)'}; none above"
            anchors.append(Anchor("first rib", first, round(conf, 2), ANCHOR_LABELS["first rib"], detail))
            anchors.append(rib_free_neighbour(anchors[-1], first - 1, (8,)))
    # last rib: the caudal-most rib-bearing vertebra, the one below it seen without
    last = bearing[-1]
    if last < n - 1 and ev[last + 1].ribs == "none" and single_step(last, last + 1):
        stump = ev[last].ribs == "stump"
        run_full = any(ev[k].ribs == "full" for k in bearing if last - 2 <= k <= last)
        if run_full:  # a stump alone (no full rib just above) may be a long transverse process
            conf = (0.5 if stump else 0.75) * (1.0 if both(last) else 0.85) * min(1.0, 0.6 + 0.5 * ev[last + 1].rib_view)
            kind_costs = ANCHOR_LABELS["last rib (stump)" if stump else "last rib"]
            detail = ("short ribs (stumps)" if stump else "full ribs") + ("" if both(last) else " (one side)") + \
                "; none below"
            anchors.append(Anchor("last rib", last, round(conf, 2), kind_costs, detail))
            anchors.append(rib_free_neighbour(anchors[-1], last + 1, (19,)))
    elif last == n - 1:
        notes.append("ribs continue to the caudal end of the chain: no last-rib anchor")
    return anchors, notes


def first_rib_below_the_view(frame: SpineFrame, c: np.ndarray, ev: list[VertebraEvidence],
                             per_side: list[dict[int, RibTrace]]) -> list[Anchor]:
    """The first rib when the vertebra above the chain was not detected: the first two vertebrae found
    carry full ribs at upper-thoracic spacing, the CT shows the level one cervical step above them
    on both sides, and no rib leaves the spine there — as a reader names T1 on a chest CT whose top
    shows the lower neck.
    Less confident than a first rib with its rib-free neighbour found (:func:`rib_anchors`)."""
    if len(c) < 2 or ev[0].ribs != "full" or ev[1].ribs != "full":  # the top of a rib series
        return []
    if float(np.linalg.norm(c[0] - c[1])) > CERVICAL_STEP_MM + 2.0:  # T1–T2 spacing, not a lower thoracic one
        return []
    axes, spacing = _axes(c)
    if abs(axes[0, 2]) < np.cos(np.radians(MAX_TILT_DEG)):
        return []
    step = min(float(spacing[0]), CERVICAL_STEP_MM)  # C7 lies about a cervical step above T1
    # the vertebra above, from its lower endplate to its centre, must be mostly in view on both sides
    view = min(_side_visible(frame, c[0, 2] + 0.5 * step, c[0, 2] + 1.0 * step, side) for side in (-1, 1))
    if view < 0.75:  # the top of the CT must show that level; a cut there leaves the question open
        return []
    # … and that vertebra itself, as far as a rib-free one must be seen (:data:`OWN_SPAN`)
    if not _span_in_view(frame, c[0, 2] + 0.5 * step, c[0, 2] + (1.0 + OWN_SPAN) * step):
        return []
    both = len(per_side[0]) == 2
    conf = (0.9 if both else 0.75) * 0.8
    detail = f"full ribs{'' if both else ' (one side)'}; none above (the level above in view, no vertebra found there)"
    return [Anchor("first rib", 0, round(conf, 2), ANCHOR_LABELS["first rib"], detail)]


# ============================================================================ sacrum, skull base
def _sacral_rows(frame: SpineFrame, bone: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows where bone runs from the midline out to the iliac wings: the sacral alae with the ilium
    (a lumbar transverse process ends before :data:`SACRUM_HALF_WIDTH_MM`), deep like the alae
    (:data:`ALA_DEPTH_MM`; ribs attached to the spine are thinner).

    Where the field of view ends before :data:`SACRUM_HALF_WIDTH_MM` on a side (a spine-only
    reconstruction ~100 mm wide), the bone must run out to the edge of the image there instead, as
    long as the image shows the alae's band (30–45 mm) on that side; a side whose band the image does
    not show at all is unseen, and a row counts with one side seen deep and joined and the other
    unseen (:data:`ALA_BAND_MM`). Returns the sacral rows, per row whether it was judged with the
    field of view cutting it (the anchor's detail says so), and the rows whose midline the image
    shows (where a sacral row could be seen at all).
    """
    from scipy import ndimage

    vb = (frame.v >= SACRUM_V_MM[0]) & (frame.v <= SACRUM_V_MM[1])
    mid = np.abs(frame.u) <= 10.0
    out, cut, viewed = (np.zeros(len(frame.z), bool) for _ in range(3))
    for k in range(len(frame.z)):
        b = bone[k][vb]
        seen = frame.inside[k][vb].mean(axis=0) >= 0.75  # per u: the band of v (mostly) in view
        viewed[k] = seen[mid].all()
        if not b[:, mid].any() or not viewed[k]:
            continue
        reach = {}  # per side seen: how far out the alae must run (the image's edge where it is nearer)
        for side in (-1, 1):
            outward = side * frame.u >= 0
            # the field of view on this side: from the midline out to the first column not in view
            gone = np.flatnonzero(outward & ~seen & (np.abs(frame.u) > 10.0))
            edge = float(np.min(side * frame.u[gone])) - frame.step if gone.size else float(np.max(side * frame.u))
            if edge >= ALA_BAND_MM[1]:
                reach[side] = min(SACRUM_HALF_WIDTH_MM, edge)
        if not reach:
            continue  # neither side in view
        bands = [(side * frame.u >= ALA_BAND_MM[0]) & (side * frame.u <= ALA_BAND_MM[1]) for side in reach]
        if min(b[:, band].sum(axis=0).mean() for band in bands) * frame.step < ALA_DEPTH_MM:
            continue  # thin on a side in view: ribs or transverse processes, not the alae
        lab, _ = ndimage.label(b, structure=np.ones((3, 3)))
        joined = lab[:, mid][lab[:, mid] > 0]  # the bone patches through the midline
        if all(np.isin(lab[:, side * frame.u >= r], joined).any() for side, r in reach.items()):
            out[k] = True
            cut[k] = len(reach) < 2 or min(reach.values()) < SACRUM_HALF_WIDTH_MM
    return out, cut, viewed


def sacrum_anchor(frame: SpineFrame, bone: np.ndarray, c: np.ndarray,
                  ev: list[VertebraEvidence]) -> tuple[list[Anchor], list[str]]:
    """The vertebra directly above the sacrum (L5).

    The sacrum is the caudal-most run of sacral rows (:func:`_sacral_rows`) below every vertebra
    that has or may have ribs: at least 3 rows, or 2 at the caudal end of the field of view (the
    sacrum runs on out of view). The last vertebra whose centroid lies above it is named from it when
    the sacrum begins 0.35–1.0 local spacings below that centroid (a transitional vertebra, whose
    transverse processes join the sacrum at its own level, counts with less confidence). Detections
    on a sacral run of at least 10 mm (S1) are marked ``in_sacrum``: at least 5 mm below its top and
    at most half a local spacing below its last row, or anywhere below its top where the run reaches
    the image's caudal end. A field of view too narrow to show any rib (``rib_view`` 0) does not keep
    the sacrum below the chain's last vertebra, as ribs in view do.
    """
    _, spacing = _axes(c)
    rows, cut, viewed = _sacral_rows(frame, bone)
    # no sacrum at or above a vertebra that has (or may have) ribs; a field of view too narrow to show
    # any rib (a spine-only reconstruction, rib_view 0) says nothing either way
    ribbed = [k for k, e in enumerate(ev) if e.ribs in ("full", "stump") or (e.ribs == "unknown" and e.rib_view > 0)]
    if ribbed:
        k = ribbed[-1]
        rows &= frame.z < c[k, 2] - 0.5 * spacing[k]
    shown = np.flatnonzero(viewed)  # the image's caudal end, for the sacrum: the last row showing its midline
    last_row = int(shown[-1]) if shown.size else len(frame.z) - 1
    runs, k = [], 0
    while k < len(rows):
        if rows[k]:
            j = k
            while j + 1 < len(rows) and rows[j + 1]:
                j += 1
            if j - k + 1 >= 3 or (j - k + 1 >= 2 and j >= last_row - 1):
                runs.append((k, j))
            k = j + 1
        else:
            k += 1
    if not runs:
        return [], []
    top_k, bot_k = runs[-1]
    z_top, z_bot = float(frame.z[top_k]), float(frame.z[bot_k])
    run_mm = z_top - z_bot + frame.step
    notes = []
    open_end = bot_k >= last_row - 1  # the sacrum runs on below the image's caudal end
    if run_mm >= 10.0:  # on the sacrum: below its top, and not more than half a spacing below the run
        for j in range(len(c)):
            if (z_bot - 0.5 * spacing[j] <= c[j, 2] or open_end) and c[j, 2] <= z_top - 5.0:
                ev[j].in_sacrum = True
    above = [j for j in range(len(c)) if c[j, 2] >= z_top - 0.35 * spacing[j] and not ev[j].in_sacrum]
    if not above:
        return [], notes
    k = above[-1]
    drop = (c[k, 2] - z_top) / spacing[k]
    if drop > 1.0:
        notes.append(f"sacrum seen {drop:.1f} spacings below the last vertebra above it (one missed?): "
                     "not taken as an anchor")
        return [], notes
    ev[k].sacrum_below = True
    conf = 0.55 + 0.3 * min(1.0, run_mm / 30.0)
    detail = f"sacral alae joined to the ilium over {run_mm:.0f} mm, from {drop * spacing[k]:.0f} mm below the centroid"
    if drop < 0.35:
        conf *= 0.6
        detail = "transverse processes joined to the sacrum and ilium at its own level (transitional vertebra)"
    if cut[top_k: bot_k + 1].any():  # said, not discounted: a lower confidence let the network's names win
        detail += "; the field of view cuts the alae"  # where the alae were right (validation crops)
    return [Anchor("sacrum", k, round(conf, 2), ANCHOR_LABELS["sacrum"], detail)], notes


def skull_anchor(frame: SpineFrame, bone: np.ndarray, c: np.ndarray,
                 ev: list[VertebraEvidence]) -> list[Anchor]:
    """C2 from the skull base: wide bone with the occiput behind it, just above the chain's top.

    Within :data:`C1_GAP_MM` above the first centroid, that vertebra is C1 and the next one C2;
    further up (up to :data:`C2_GAP_MM`), the first vertebra is C2 (C1 not detected).
    """
    steps = np.linalg.norm(np.diff(c[:4], axis=0), axis=1)
    ribs = [e.ribs for e in ev[:3]]
    if steps.size == 0 or float(np.median(steps)) > SKULL_STEP_MM or "full" in ribs or "stump" in ribs \
            or "none" not in ribs:
        return []  # not (seen to be) a cervical spine at the top of the chain
    vb = (frame.v >= -30.0) & (frame.v <= 80.0)
    post = frame.v >= 30.0
    ub = np.abs(frame.u) <= 70.0
    area = bone[:, vb][:, :, ub].sum(axis=(1, 2)) * frame.step ** 2
    back = bone[:, post][:, :, ub].sum(axis=(1, 2)) * frame.step ** 2
    skull = (area >= SKULL_AREA_MM2) & (back >= SKULL_BACK_MM2)
    rows = np.flatnonzero(skull & (frame.z > c[0, 2]))
    if rows.size < 3:
        return []
    # the lowest skull row with two more skull rows above it
    low = None
    for k in rows[::-1]:
        if k >= 2 and skull[k - 1] and skull[k - 2]:
            low = k
            break
    if low is None:
        return []
    gap = float(frame.z[low] - c[0, 2])
    if gap <= C1_GAP_MM:
        if len(c) < 2 or _gap(c, 0):
            return []
        ev[0].skull_above = True
        return [Anchor("C2", 1, 0.7, ANCHOR_LABELS["C2"], f"skull base {gap:.0f} mm above the vertebra above (C1)")]
    if gap <= C2_GAP_MM:
        ev[0].skull_above = True
        return [Anchor("C2", 0, 0.55, ANCHOR_LABELS["C2"], f"skull base {gap:.0f} mm above (C1 not detected)")]
    return []


# ============================================================================ entry point
def anchor_frame(image: Volume, centroids: np.ndarray) -> tuple[SpineFrame, np.ndarray]:
    """The spine-following frame the anchors are read in, around a chain of centroids (n, 3, LPS mm,
    cranial to caudal), and its bone (above :data:`BONE_HU`, inside the field of view)."""
    c = np.asarray(centroids, float).reshape(-1, 3)
    frame = spine_frame(working_grid(crop_around(image, c)), c)
    return frame, (frame.hu > BONE_HU) & frame.inside


def find_anchors(image: Volume, centroids: np.ndarray | list) -> AnchorReport:
    """Naming anchors around a chain of vertebra centroids.

    Args:
        image: the CT in HU, any orientation.
        centroids: (n, 3) LPS mm, cranial to caudal (as :func:`~.localize.detect_and_name` orders them).

    Returns:
        The per-vertebra evidence (in the order given) and the anchors, each naming one vertebra of
        the chain by its index.
    """
    c = np.asarray(centroids, float).reshape(-1, 3)
    if len(c) == 0:
        return AnchorReport([])
    if np.any(np.diff(c[:, 2]) > 0):
        raise ValueError("centroids must run cranial to caudal (decreasing LPS z)")
    frame, bone = anchor_frame(image, c)
    traces = trace_ribs(frame, bone)
    per_side, outside, offset = assign_ribs(frame, c, traces)
    ev = rib_status(frame, c, per_side, offset)
    anchors, notes = rib_anchors(c, ev, per_side)
    if -1 in outside and ev[0].ribs != "none":
        notes.append("ribs leave the spine above the first vertebra found: a rib-bearing vertebra was missed there")
    elif not any(a.kind == "first rib" for a in anchors):
        anchors += first_rib_below_the_view(frame, c, ev, per_side)
    sac, sac_notes = sacrum_anchor(frame, bone, c, ev)
    anchors += sac
    notes += sac_notes
    anchors += skull_anchor(frame, bone, c, ev)
    return AnchorReport(ev, sorted(anchors, key=lambda a: a.index), traces, notes)
