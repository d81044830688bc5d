"""The body around the spine: subject habitus, the spine reference along z, the outline with its
fat and muscle layers, the table, and the generic painters (level-keyframed tubes, blobs, capsules).

Structures are described per axial level relative to the spine (a :class:`SpineRef` interpolates
the vertebral-body centres along z), as tubes with elliptic cross-sections keyframed at the vertebral
levels, plus ellipsoidal organs. Sizes are adult means (anatomy atlases, CT morphometry) scaled by
the subject's size and habitus; each structure is evaluated in its own bounding box. Organs are in
:mod:`.organs`, the bones around the spine in :mod:`.skeleton`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from VertebralFractureLib.anatomy import vertebra as vertebra_info
from VertebralFractureLib.synth.shapes import F32, Box, capsule, ellipsoid
from VertebralFractureLib.synth.spine import SpinePlan
from VertebralFractureLib.synth.tissues import Canvas, Tissue

_BODY_LEVELS = np.array([-6.0, 0, 3, 6, 7, 9, 13, 17, 20, 22, 24, 26, 30])
_BODY_TABLE = {
    "width":  [150, 125, 115, 150, 300, 330, 320, 310, 300, 305, 320, 345, 360],
    "ap":     [175, 125, 112, 125, 150, 195, 220, 228, 222, 218, 212, 208, 205],
    "back":   [62, 55, 55, 60, 68, 72, 74, 76, 80, 82, 82, 70, 60],
    "fat":    [4, 4, 5, 7, 9, 11, 12, 15, 19, 21, 22, 22, 20],
    "muscle": [3, 6, 6, 8, 14, 16, 12, 10, 10, 10, 10, 10, 12],
}  # fmt: skip


@dataclass
class Subject:
    """Subject-level body habitus."""

    scale: float
    fat: float  # subcutaneous/visceral fat factor (0.3 lean … 2.5 obese)
    breadth: float  # width factor
    contrast: bool
    age: float
    lung_inflation: float
    offset_x: float


@dataclass
class SpineRef:
    """Interpolated spine reference along z: body centre, level index, body depth/width."""

    z: np.ndarray
    x: np.ndarray
    y: np.ndarray
    level: np.ndarray
    depth: np.ndarray
    width: np.ndarray
    canal_back: np.ndarray

    @classmethod
    def from_plan(cls, plan: SpinePlan) -> SpineRef:
        verts = plan.vertebrae
        z = [v.centre[2] for v in verts]
        x = [v.centre[0] for v in verts]
        y = [v.centre[1] for v in verts]
        lev = [float(vertebra_info(v.name).order) for v in verts]
        dep = [v.depth for v in verts]
        wid = [v.width for v in verts]
        cb = [v.centre[1] + v.depth / 2 + v.p("canal_d") + v.p("lam_t") for v in verts]
        if plan.sacrum is not None:
            sc = plan.sacrum
            z.append(sc.centre[2])
            x.append(sc.centre[0])
            y.append(sc.centre[1])
            lev.append(26.0)
            dep.append(sc.depth)
            wid.append(sc.width)
            cb.append(sc.centre[1] + sc.depth / 2 + 15 * sc.scale)
            # continue caudally along the sacrum's curve and cranially above C1
            down = sc.rot @ np.array([0.0, 0.35, -1.0])
            for k in (1, 2, 3):
                p = sc.centre + down * 35 * k
                z.append(p[2])
                x.append(p[0])
                y.append(p[1])
                lev.append(26.0 + 1.5 * k)
                dep.append(sc.depth * (1 - 0.2 * k))
                wid.append(sc.width * (1 - 0.2 * k))
                cb.append(p[1] + 20)
        top = verts[0]
        for k in (1, 2, 3):
            z.insert(0, top.centre[2] + 30 * k)
            x.insert(0, top.centre[0])
            y.insert(0, top.centre[1] - 5 * k)
            lev.insert(0, -2.0 * k)
            dep.insert(0, dep[0])
            wid.insert(0, wid[0])
            cb.insert(0, cb[0])
        order = np.argsort(z)
        arr = lambda a: np.asarray(a, float)[order]  # noqa: E731
        return cls(arr(z), arr(x), arr(y), arr(lev), arr(dep), arr(wid), arr(cb))

    def at(self, z: np.ndarray | float, what: str) -> np.ndarray:
        """Interpolate one quantity at z (linear extrapolation flat beyond the ends)."""
        return np.interp(z, self.z, getattr(self, what))

    def z_of_level(self, level: float) -> float:
        order = np.argsort(self.level)
        return float(np.interp(level, self.level[order], self.z[order]))


def _table(level: np.ndarray, key: str) -> np.ndarray:
    return np.interp(level, _BODY_LEVELS, np.asarray(_BODY_TABLE[key], float))


@dataclass
class Outline:
    """The body outline per slice of the working grid (arrays indexed by the grid's z index).

    The posterior surface of the trunk lies on the table (flattened); the anterior surface follows
    the spine at the level's body depth. Thicknesses (mm) of subcutaneous fat and of the muscular
    wall vary around the circumference (thick anterior abdominal fat, pectoral and rectus muscles).
    """

    cx: np.ndarray
    cy: np.ndarray
    rx: np.ndarray
    ry: np.ndarray
    fat: np.ndarray
    muscle: np.ndarray
    level: np.ndarray
    z: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    table_y: float
    lobes: tuple[float, float, float]


def body_outline(ref: SpineRef, subject: Subject, z: np.ndarray, rng: np.random.Generator,
                 table_y: float | None = None) -> Outline:
    """Per-slice outline parameters of the body at the slice positions ``z``.

    The trunk's cross-section is an ellipse whose posterior part is flattened by the table (the
    ellipse would reach ``flatten`` mm beyond the table top); the neck is free.

    Args:
        table_y: y (mm) of the table top; ``None`` derives it from the thoraco-lumbar back.
    """
    level = ref.at(z, "level")
    sx, sy = ref.at(z, "x"), ref.at(z, "y")
    s = subject.scale
    fat0 = _table(level, "fat")
    fat = fat0 * subject.fat
    width = _table(level, "width") * s * subject.breadth + 1.2 * (fat - fat0)
    ap = _table(level, "ap") * s + 1.6 * (fat - fat0)
    back = sy + _table(level, "back") * s + 0.8 * (fat - fat0)
    front = back - ap
    if table_y is None:
        lv = np.linspace(7, 26, 77)
        zz = np.array([ref.z_of_level(v) for v in lv])
        b = ref.at(zz, "y") + _table(lv, "back") * s + 0.8 * (_table(lv, "fat") * subject.fat - _table(lv, "fat"))
        table_y = float(np.max(b)) + 1.0
    # where the natural back reaches the table it is flattened against it (the ellipse would extend
    # ``flatten`` mm further); elsewhere (upper back of a kyphotic subject, neck) it stays round
    w_on = np.clip((level - 4.0) / 3.0, 0.0, 1.0)
    flatten = (6.0 + 0.25 * fat) * w_on
    back = back + flatten
    cy = (back + front) / 2
    ry = (back - front) / 2
    cx = sx + subject.offset_x
    muscle = _table(level, "muscle") * s
    lobes = (float(rng.uniform(-0.04, 0.06)), float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0, 2 * np.pi)))
    return Outline(cx, cy, width / 2, ry, fat, muscle, level, z, sx, sy, float(table_y), lobes)


def _slab_layers(o: Outline, box: Box, zsl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth under the skin (mm), subcutaneous fat and wall thickness for every pixel of a slab."""
    x, y, _ = box.coords()
    cx, cy = o.cx[zsl][:, None, None].astype(F32), o.cy[zsl][:, None, None].astype(F32)
    rx, ry = o.rx[zsl][:, None, None].astype(F32), o.ry[zsl][:, None, None].astype(F32)
    lev = o.level[zsl][:, None, None]
    X = x - cx
    Y = y - cy
    dist = np.sqrt(X * X + Y * Y) + F32(1e-3)
    xn, yn = X / rx, Y / ry
    rho = np.sqrt(xn * xn + yn * yn) + F32(1e-4)
    cos_y, cos_x = Y / dist, X / dist
    a2, a3, ph = o.lobes
    mod = F32(1.0) + F32(a2) * (cos_x * cos_x - cos_y * cos_y) + F32(a3) * (cos_x * F32(np.cos(ph)) + cos_y * F32(np.sin(ph)))
    depth = dist * (mod / rho - F32(1.0))
    trunk = (lev >= 5.5)
    flat = np.where(trunk, F32(o.table_y - 1.0) - y, F32(1e6)).astype(F32)
    depth = np.minimum(depth, flat)
    ant = np.maximum(-cos_y, F32(0))
    post = np.maximum(cos_y, F32(0))
    ant2 = ant * ant
    abdo = np.clip((lev - 16.0) / 4.0, 0, 1).astype(F32)
    fat = o.fat[zsl][:, None, None].astype(F32) * (F32(1.0) + F32(0.7) * abdo * ant - F32(0.6) * post * post)
    chest = np.clip(1 - np.abs(lev - 11.0) / 6.0, 0, 1).astype(F32)
    abd2 = np.clip((lev - 17.0) / 3.0, 0, 1).astype(F32)
    wall = (o.muscle[zsl][:, None, None].astype(F32) * F32(0.7)
            + F32(14.0) * chest * ant2 * np.minimum(np.abs(cos_x) * F32(2.5), F32(1.0))
            + F32(6.0) * abd2 * ant2 * ant2 * ant2)
    return depth, fat, wall


def paint_outline(canvas: Canvas, o: Outline, threads: int = 1) -> None:
    """Skin, subcutaneous fat, the muscular wall and the cavity filling (by region).

    Stores the depth inside the muscular wall (mm, float16) as ``canvas.cavity`` for the organs.
    """
    g = canvas.grid
    chunk = 16
    canvas.cavity = np.full(g.shape, -100.0, np.float16)

    def work(z0: int) -> None:
        z1 = min(g.shape[0], z0 + chunk)
        zsl = slice(z0, z1)
        # only the body's bounding box needs the per-pixel geometry
        lo = [float(np.min(o.cx[zsl] - o.rx[zsl])) - 6, float(np.min(o.cy[zsl] - o.ry[zsl])) - 6, g.origin[2]]
        hi = [float(np.max(o.cx[zsl] + o.rx[zsl])) + 6, float(np.max(o.cy[zsl] + o.ry[zsl])) + 6, g.origin[2]]
        bb = g.box(lo, hi, margin=0.0)
        if bb is None:
            return
        box = Box(g, (z0, z1), bb.y, bb.x)
        d, fat, wall = _slab_layers(o, box, zsl)
        t = canvas.tissue[box.slices]
        t[d >= 0] = Tissue.SKIN
        t[d >= 2.0] = Tissue.FAT
        t[d >= fat + 2.0] = Tissue.MUSCLE
        cav = d - fat - wall - F32(2.0)
        canvas.cavity[box.slices] = cav
        neck = o.level[zsl] < 6.5
        c = cav >= 0
        c[neck] = False
        t[c] = Tissue.FAT

    run_chunks(work, range(0, g.shape[0], chunk), threads)


def paint_table(ct: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float],
                table_y: float, centre_x: float, hu: float, air: float) -> None:
    """The patient table in the scanner frame (axis-aligned, under the patient): two thin curved carbon
    shells with foam between, painted into the air of the output image (LPS, identity direction)."""
    ny, nx = ct.shape[1:]
    x = origin[0] + spacing[0] * np.arange(nx, dtype=F32)
    y = origin[1] + spacing[1] * np.arange(ny, dtype=F32)
    yy = y[:, None] - F32(table_y) + F32(1.0 / 900.0) * (x[None, :] - F32(centre_x)) ** 2
    inx = (np.abs(x - centre_x) < 225)[None, :]
    shell = (((yy >= 0) & (yy < 2.5)) | ((yy >= 40) & (yy < 43))) & inx
    foam = (yy >= 2.5) & (yy < 40) & inx
    if not (shell.any() or foam.any()):
        return
    for k in range(ct.shape[0]):
        sl = ct[k]
        empty = sl < F32(-900)
        sl[shell & empty] = F32(hu)
        sl[foam & empty] = F32(air + 30.0)


def run_chunks(fn, starts, threads: int) -> None:
    """Run ``fn(start)`` for every slab start, on ``threads`` threads (numpy releases the GIL)."""
    starts = list(starts)
    if threads <= 1 or len(starts) < 2:
        for z0 in starts:
            fn(z0)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, starts))


# ============================================================================ generic tubes and blobs
def paint_level_tube(canvas: Canvas, o: Outline, spec: dict[float, tuple[float, float, float, float]], s: float,
                     tissue: int, only: tuple[int, ...] | None = None) -> None:
    """A tube relative to the spine: ``{level: (dx, dy, rx, ry)}`` (mm × ``s``), interpolated per slice.

    The tube exists between its first and last keyframe level; the cross-section is an ellipse.
    """
    levels = np.array(sorted(spec), float)
    vals = np.array([spec[lv] for lv in sorted(spec)], float) * s
    lev = o.level
    valid = (lev >= levels[0]) & (lev <= levels[-1])
    ks = np.flatnonzero(valid)
    if ks.size == 0:
        return
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    p = [np.interp(lev[k0:k1], levels, vals[:, j]) for j in range(4)]
    cx, cy = o.sx[k0:k1] + p[0], o.sy[k0:k1] + p[1]
    rx, ry = np.maximum(p[2], 0.1), np.maximum(p[3], 0.1)
    g = canvas.grid
    bx = g.box([float(np.min(cx - rx)), float(np.min(cy - ry)), g.origin[2]],
                [float(np.max(cx + rx)), float(np.max(cy + ry)), g.origin[2]])
    if bx is None:
        return
    box = Box(g, (k0, k1), bx.y, bx.x)
    x, y, _ = box.coords()
    c = [a[:, None, None].astype(F32) for a in (cx, cy, rx, ry)]
    m = ((x - c[0]) / c[2]) ** 2 + ((y - c[1]) / c[3]) ** 2 <= 1
    if only is None:
        canvas.paint(box, m, tissue)
    else:
        canvas.paint_where(box, m, tissue, only)


def paint_blob(canvas: Canvas, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray, tissue: int,
               only: tuple[int, ...] | None = None, lobes: tuple[float, float] = (0.0, 0.0)) -> None:
    """An ellipsoidal organ (optionally lobulated) rotated by ``rot``."""
    r = float(np.max(radii)) * (1 + abs(lobes[0]))
    box = canvas.grid.box(centre - r, centre + r)
    if box is None:
        return
    u, v, w = box.local(centre, rot)
    f = ellipsoid(u, v, w, (0, 0, 0), radii)
    if lobes[0]:
        f = f * (1 + F32(lobes[0]) * np.sin(F32(0.08) * u + F32(lobes[1])) * np.cos(F32(0.07) * w + F32(lobes[1] * 2)))
    m = f <= 1
    if only is None:
        canvas.paint(box, m, tissue)
    else:
        canvas.paint_where(box, m, tissue, only)


SOFT = (int(Tissue.FAT), int(Tissue.MUSCLE), int(Tissue.BOWEL), int(Tissue.ORGAN), int(Tissue.LUNG))
FAT_MUSCLE = (int(Tissue.FAT), int(Tissue.MUSCLE))


# ============================================================================ regions
def paint_muscles(canvas: Canvas, ref: SpineRef, o: Outline, subject: Subject) -> None:
    """Paraspinal (erector spinae + multifidus), psoas, quadratus lumborum and neck muscles."""
    g = canvas.grid
    s = subject.scale
    lev = o.level
    canal_back = ref.at(o.z, "canal_back")
    back = o.cy + o.ry
    post_fat = o.fat * 0.55 + 2.0
    y_front = canal_back - 10.0 * s
    y_back = np.maximum(back - post_fat - 1.0, y_front + 12.0)
    rx = np.interp(lev, [-2, 6, 10, 18, 22, 26, 30], [16, 18, 19, 21, 24, 20, 14]) * s
    for side in (-1.0, 1.0):
        cx = o.sx + side * (rx * 0.95 + 3.0 * s)
        cy = (y_front + y_back) / 2
        ry = (y_back - y_front) / 2
        bx = g.box([float(np.min(cx - rx)), float(np.min(cy - ry)), g.origin[2]],
                [float(np.max(cx + rx)), float(np.max(cy + ry)), g.origin[2]])
        if bx is None:
            continue
        chunk = 48
        for z0 in range(0, g.shape[0], chunk):
            z1 = min(g.shape[0], z0 + chunk)
            box = Box(g, (z0, z1), bx.y, bx.x)
            x, y, _ = box.coords()
            c = [a[z0:z1, None, None].astype(F32) for a in (cx, cy, rx, ry)]
            xn, yn = ((x - c[0]) / c[2]) ** 2, ((y - c[1]) / c[3]) ** 2
            m = xn * xn + yn * yn <= 1  # boxy (superellipse p = 4)
            canvas.paint_where(box, m, Tissue.MUSCLE, only=FAT_MUSCLE + (int(Tissue.SKIN),))
        # psoas: from T12/L1 into the pelvis, growing caudally, beside the vertebral bodies
        spec = {}
        for lv, r in ((18.5, 5), (20, 10), (21, 13), (22, 17), (23, 20), (24, 23), (26, 25), (29, 24)):
            w = float(np.interp(lv, [18, 24, 26], [40, 50, 58]))
            spec[lv] = (side * (w / 2 + r * 0.75), -6 + 0.5 * r, r, r * 0.85)
        paint_level_tube(canvas, o, spec, s, Tissue.MUSCLE, only=(int(Tissue.FAT), int(Tissue.BOWEL)))
        spec = {19.0: (side * 50, 22, 8, 7), 21.0: (side * 58, 26, 15, 8), 23.0: (side * 62, 26, 17, 8),
                24.5: (side * 66, 24, 11, 7)}
        paint_level_tube(canvas, o, spec, s, Tissue.MUSCLE, only=(int(Tissue.FAT),))
        # neck: sternocleidomastoid, longus colli / scalenes
        spec = {-1.0: (side * 42, -15, 11, 9), 3.0: (side * 46, -32, 9, 8), 6.0: (side * 34, -55, 8, 7)}
        paint_level_tube(canvas, o, spec, s, Tissue.MUSCLE, only=FAT_MUSCLE)
        spec = {0.0: (side * 8, -11, 6, 4), 6.0: (side * 9, -13, 5, 3.5), 9.0: (side * 9, -12, 3, 2.5)}
        paint_level_tube(canvas, o, spec, s, Tissue.MUSCLE, only=FAT_MUSCLE)


def paint_capsule_world(canvas: Canvas, p0: np.ndarray, p1: np.ndarray, radii: tuple[float, float],
                         tissue: int, core: int | None = None, up: tuple[float, float, float] = (0.0, 0.0, 1.0),
                         shell: float = 1.2, only: tuple[int, ...] | None = None) -> None:
    r = max(radii)
    box = canvas.grid.box(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)
    if box is None:
        return
    x, y, z = box.coords()
    f = capsule(np.broadcast_to(x, box.shape), np.broadcast_to(y, box.shape), np.broadcast_to(z, box.shape),
                p0, p1, radii, radii, up)
    if only is None:
        canvas.paint(box, f <= 1, tissue)
    else:
        canvas.paint_where(box, f <= 1, tissue, only)
    if core is not None and min(radii) > shell * 1.5:
        canvas.paint(box, f <= (1 - shell / min(radii)) ** 2, core)


def surface_point(o: Outline, z: float, direction: tuple[float, float], depth: float) -> np.ndarray:
    """The point at ``depth`` mm under the body surface along an in-plane direction from the outline centre."""
    k = int(np.clip(np.searchsorted(o.z, z), 0, len(o.z) - 1))
    dx, dy = direction
    n = float(np.hypot(dx, dy))
    dx, dy = dx / n, dy / n
    rho = float(np.hypot(dx / o.rx[k], dy / o.ry[k]))
    a2, a3, ph = o.lobes
    mod = 1.0 + a2 * (dx * dx - dy * dy) + a3 * (dx * np.cos(ph) + dy * np.sin(ph))
    t = mod / rho
    if dy > 1e-6 and o.level[k] >= 5.5:
        t = min(t, (o.table_y - 1.0 - o.cy[k]) / dy)
    t -= depth
    return np.array([o.cx[k] + t * dx, o.cy[k] + t * dy, z])


def wall_depth(o: Outline, z: float, direction: tuple[float, float]) -> float:
    """Fat + muscular wall thickness (mm) at slice z in an in-plane direction (scalar version)."""
    k = int(np.clip(np.searchsorted(o.z, z), 0, len(o.z) - 1))
    n = float(np.hypot(*direction))
    cx, cy = direction[0] / n, direction[1] / n
    lev = o.level[k]
    ant, post = max(-cy, 0.0), max(cy, 0.0)
    abdo = float(np.clip((lev - 16.0) / 4.0, 0, 1))
    fat = o.fat[k] * (1 + 0.7 * abdo * ant - 0.6 * post * post)
    chest = float(np.clip(1 - abs(lev - 11.0) / 6.0, 0, 1))
    abd2 = float(np.clip((lev - 17.0) / 3.0, 0, 1))
    wall = o.muscle[k] * 0.7 + 14.0 * chest * ant * ant * min(abs(cx) * 2.5, 1.0) + 6.0 * abd2 * ant ** 6
    return float(fat + wall + 2.0)


__all__ = ["FAT_MUSCLE", "SOFT", "Outline", "SpineRef", "Subject", "body_outline", "paint_blob", "paint_capsule_world",
           "paint_level_tube", "paint_muscles", "paint_outline", "paint_table", "run_chunks", "surface_point",
           "wall_depth"]
