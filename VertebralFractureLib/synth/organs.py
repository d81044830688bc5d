"""Organs around the spine: neck (airway, vessels, thyroid, skull base), thorax (lungs, heart),
great vessels, and abdomen (liver, spleen, stomach, pancreas, kidneys, bowel region).

Each organ is a level-keyframed tube or an ellipsoidal blob positioned relative to the spine
(adult means scaled by the subject's size), painted only over the tissues it may displace.
"""

from __future__ import annotations

import numpy as np

from VertebralFractureLib.synth.body import (
    FAT_MUSCLE,
    SOFT,
    Outline,
    SpineRef,
    Subject,
    paint_blob,
    paint_capsule_world,
    paint_level_tube,
    run_chunks,
)
from VertebralFractureLib.synth.shapes import F32, Box, rotation
from VertebralFractureLib.synth.tissues import Canvas, Tissue


def paint_neck(canvas: Canvas, ref: SpineRef, o: Outline, subject: Subject) -> None:
    """Pharynx/larynx/trachea and bronchi (air), oesophagus, thyroid, carotid and jugular vessels,
    skull base and mandible."""
    s = subject.scale
    g = canvas.grid
    soft = FAT_MUSCLE + (int(Tissue.LUNG),)
    air = {-3.0: (0, -22, 13, 8), 0.0: (0, -23, 12, 6), 2.0: (0, -26, 10, 5), 3.5: (0, -33, 8, 6),
           5.0: (0, -36, 8, 7), 7.0: (0, -37, 8.5, 8), 9.0: (0, -38, 8.5, 8.5), 10.8: (0, -36, 8, 7.5)}
    wall = {lv: (a, b, c + 2.0, d + 2.0) for lv, (a, b, c, d) in air.items() if lv >= 3.5}
    paint_level_tube(canvas, o, wall, s, Tissue.ORGAN, only=soft)
    paint_level_tube(canvas, o, air, s, Tissue.GAS, only=soft + (int(Tissue.ORGAN),))
    for side in (-1.0, 1.0):
        bronchus = {10.8: (side * 4, -36, 6, 6), 11.5: (side * 16, -36, 5.5, 5.5), 12.5: (side * 30, -34, 4.5, 4.5),
                    13.5: (side * 40, -30, 3.5, 3.5)}
        paint_level_tube(canvas, o, bronchus, s, Tissue.GAS, only=soft)
        carotid = {-1.0: (side * 27, -16, 4.5, 4.5), 3.0: (side * 24, -27, 4.5, 4.5), 6.5: (side * 22, -32, 5, 5),
                   8.5: (side * 14, -40, 5, 5)}
        paint_level_tube(canvas, o, carotid, s, Tissue.BLOOD, only=FAT_MUSCLE)
        jug = {lv: (dx + side * 9, dy - 3, r + 2.5, r + 1.0) for lv, (dx, dy, r, _r) in carotid.items()}
        paint_level_tube(canvas, o, jug, s, Tissue.VENOUS_BLOOD, only=FAT_MUSCLE)
        thyroid = {4.8: (side * 13, -40, 5, 7), 6.0: (side * 15, -40, 8, 9), 7.0: (side * 14, -39, 6, 7)}
        paint_level_tube(canvas, o, thyroid, s, Tissue.ORGAN, only=FAT_MUSCLE)
    oes = {3.5: (2, -18, 6, 4), 7.0: (4, -22, 7, 5), 11.0: (8, -24, 8, 6), 16.0: (12, -28, 8, 7), 18.0: (24, -40, 9, 8)}
    paint_level_tube(canvas, o, oes, s, Tissue.MUSCLE, only=(int(Tissue.FAT), int(Tissue.MUSCLE), int(Tissue.LUNG)))
    # skull base (occiput) and mandible when C1/C2 are near the field of view
    zc1 = ref.z_of_level(0.0)
    if zc1 - 40 < g.origin[2] + g.spacing[2] * g.shape[0]:
        sx, sy = ref.at(zc1, "x"), ref.at(zc1, "y")
        centre = np.array([sx, sy - 5 * s, zc1 + 62 * s])
        radii = np.array([68, 85, 58]) * s
        paint_blob(canvas, centre, radii + 6 * s, np.eye(3), Tissue.CORTICAL)
        paint_blob(canvas, centre, radii + 3 * s, np.eye(3), Tissue.MARROW)
        paint_blob(canvas, centre, radii, np.eye(3), Tissue.BRAIN)
        z2 = ref.z_of_level(2.0)
        sy2 = ref.at(z2, "y")
        pts = [(-45, -30, 25), (-40, -60, 5), (-20, -85, -5), (0, -90, -8), (20, -85, -5), (40, -60, 5), (45, -30, 25)]
        pts = [np.array([sx + a * s, sy2 + b * s, z2 + c * s]) for a, b, c in pts]
        for a, b in zip(pts, pts[1:]):
            paint_capsule_world(canvas, a, b, (9 * s, 5 * s), Tissue.CORTICAL, core=Tissue.MARROW)


def paint_thorax(canvas: Canvas, ref: SpineRef, o: Outline, subject: Subject, rng: np.random.Generator,
                 threads: int = 1) -> None:
    """Lungs (apices, diaphragm domes, mediastinal and paravertebral borders) and the heart."""
    g = canvas.grid
    s = subject.scale
    z_apex = ref.z_of_level(6.0) + 14 * s
    z_dome_r = ref.z_of_level(16.2 + rng.uniform(-0.8, 0.8))
    z_dome_l = z_dome_r - rng.uniform(8, 22)
    lev = o.level
    ks = np.flatnonzero((lev > 5.0) & (lev < 21.0))
    if ks.size == 0:
        return
    infl = subject.lung_inflation
    hw_all = s * np.interp(lev, [6, 8, 11, 13, 16, 19], [18, 22, 30, 36, 38, 30])
    shift_all = s * np.interp(lev, [6, 11, 14, 19], [0, 6, 14, 12])
    dep_all = ref.at(o.z, "depth")
    wid_all = ref.at(o.z, "width")
    chunk = 16

    def work(k0: int) -> None:
        k1 = min(int(ks[-1]) + 1, k0 + chunk)
        zsl = slice(k0, k1)
        box = _outline_slab(g, o, k0, k1)
        if box is None:
            return
        x, y, z = box.coords()
        cavity = canvas.cavity[box.slices] >= F32(9.0 * s)
        sx = o.sx[zsl][:, None, None].astype(F32)
        sy = o.sy[zsl][:, None, None].astype(F32)
        dep = dep_all[zsl][:, None, None].astype(F32)
        wid = wid_all[zsl][:, None, None].astype(F32)
        # vertebral body + prevertebral tissue, and posterior elements + paraspinal muscles
        e1 = ((x - sx) / (wid / 2 + F32(8 * s))) ** 2 + ((y - sy - dep * F32(0.15)) / (dep / 2 + F32(9 * s))) ** 2 <= 1
        yb = sy + dep / 2 + F32(42 * s)
        e2 = ((x - sx) / F32(64 * s)) ** 2 + ((y - yb) / F32(46 * s)) ** 2 <= 1
        # mediastinum: a spindle from the sternum to the spine, shifted to the left at the heart
        front = (o.cy[zsl] - o.ry[zsl])[:, None, None].astype(F32) + F32(30 * s)
        back = sy - dep / 2
        ym = (front + back) / 2
        rym = np.maximum((back - front) / 2, 5) + F32(4 * s)
        hw = hw_all[zsl][:, None, None].astype(F32)
        xm = sx + shift_all[zsl][:, None, None].astype(F32)
        med = ((x - xm) / hw) ** 2 + ((y - ym) / rym) ** 2 <= 1
        lung = cavity & ~e1 & ~e2 & ~med
        for side, z_dome in ((-1.0, z_dome_r), (1.0, z_dome_l)):
            xa = sx + F32(side * 42 * s)
            apex = z < F32(z_apex) - F32(0.004 / s) * ((x - xa) ** 2 + ((y - sy + F32(25 * s)) * F32(0.8)) ** 2)
            xc = sx + F32(side * 70 * s)
            yc = sy - F32(55 * s)
            r2 = ((x - xc) / F32(95 * s)) ** 2 + ((y - yc) / F32(85 * s)) ** 2
            zd = F32(z_dome) - F32(60 * s * infl) * np.minimum(r2, 1.7)
            m = lung & apex & ((x - sx) * F32(side) > 0) & (z > zd)
            canvas.paint_where(box, m, Tissue.LUNG, only=(int(Tissue.FAT), int(Tissue.MUSCLE)))

    run_chunks(work, range(int(ks[0]), int(ks[-1]) + 1, chunk), threads)
    # heart: ellipsoid in the anterior mediastinum, leaning to the left, sitting on the left dome
    zh = ref.z_of_level(15.2)
    c = np.array([ref.at(zh, "x") + 28 * s, ref.at(zh, "y") - 78 * s, zh])
    rot = rotation("z", np.deg2rad(-40)) @ rotation("x", np.deg2rad(30)) @ rotation("y", np.deg2rad(-20))
    only = (int(Tissue.FAT), int(Tissue.LUNG))
    r = np.array([46, 33, 40]) * s
    paint_blob(canvas, c, r + 3 * s, rot, Tissue.FAT, only=only)
    paint_blob(canvas, c, r, rot, Tissue.MYOCARDIUM, only=only)
    # chambers: right ventricle (anterior right), left ventricle (thick wall), atria (posterior)
    paint_blob(canvas, c + rot @ np.array([-8, -11, 4]) * s, np.array([27, 11, 25]) * s, rot, Tissue.BLOOD,
               only=(int(Tissue.MYOCARDIUM),))
    paint_blob(canvas, c + rot @ np.array([12, 4, -6]) * s, np.array([19, 13, 21]) * s, rot, Tissue.BLOOD,
               only=(int(Tissue.MYOCARDIUM),))
    paint_blob(canvas, c + rot @ np.array([0, 21, 11]) * s, np.array([25, 11, 18]) * s, rot, Tissue.BLOOD,
               only=(int(Tissue.MYOCARDIUM), int(Tissue.FAT)))


def paint_vessels(canvas: Canvas, ref: SpineRef, o: Outline, subject: Subject, rng: np.random.Generator) -> None:
    """Aorta (ascending, arch, descending, abdominal, iliac) and the inferior vena cava."""
    s = subject.scale * (1.0 + 0.003 * max(0.0, subject.age - 40))
    soft = SOFT + (int(Tissue.MYOCARDIUM), int(Tissue.BLOOD))
    r = 12.5
    asc = {9.8: (-4, -52, r + 1, r + 1), 11.0: (-8, -60, r + 2, r + 2), 13.5: (-6, -66, r + 2, r + 2)}
    paint_level_tube(canvas, o, asc, s, Tissue.BLOOD, only=soft)
    z_arch = ref.z_of_level(9.5)
    sx, sy = ref.at(z_arch, "x"), ref.at(z_arch, "y")
    pts = [(-4, -52, -4), (0, -45, 6), (10, -30, 9), (18, -18, 4), (20, -14, -6)]
    pts = [np.array([sx + a * s, sy + b * s, z_arch + c * s]) for a, b, c in pts]
    for a, b in zip(pts, pts[1:]):
        paint_capsule_world(canvas, a, b, (r * s, r * s), Tissue.BLOOD, only=soft)
    desc = {9.6: (20, -14, r, r), 13.0: (19, -16, r, r), 17.0: (13, -22, r - 0.5, r - 0.5),
            19.5: (6, -28, r - 1, r - 1), 22.0: (7, -28, r - 2, r - 2), 23.6: (8, -26, r - 3, r - 3)}
    paint_level_tube(canvas, o, desc, s, Tissue.BLOOD, only=soft)
    for side in (-1.0, 1.0):
        iliac = {23.6: (8 + side * 4, -26, 7, 7), 25.0: (side * 28, -28, 6.5, 6.5), 28.0: (side * 50, -32, 6, 6)}
        paint_level_tube(canvas, o, iliac, s, Tissue.BLOOD, only=soft)
    ivc = {15.5: (-22, -42, 12, 13), 19.0: (-22, -33, 12, 10), 22.0: (-20, -29, 11, 8), 24.0: (-14, -26, 10, 7)}
    paint_level_tube(canvas, o, ivc, s, Tissue.VENOUS_BLOOD, only=soft)
    if subject.age > 60 and rng.random() < 0.6:  # calcified plaques in the aortic wall
        for _ in range(int(rng.integers(3, 14))):
            lv = float(rng.uniform(14.0, 23.5))
            zc = ref.z_of_level(lv)
            dx = float(np.interp(lv, [13, 17, 19.5, 22, 23.6], [19, 13, 6, 7, 8])) * s
            dy = float(np.interp(lv, [13, 17, 19.5, 22, 23.6], [-16, -22, -28, -28, -26])) * s
            rr = float(np.interp(lv, [13, 23.6], [r, r - 3])) * s
            ang = rng.uniform(0, 2 * np.pi)
            p = np.array([ref.at(zc, "x") + dx + rr * np.cos(ang), ref.at(zc, "y") + dy + rr * np.sin(ang), zc])
            paint_blob(canvas, p, np.array([1.4, 1.4, rng.uniform(2, 5)]), np.eye(3), Tissue.CORTICAL)


def paint_abdomen(canvas: Canvas, ref: SpineRef, o: Outline, subject: Subject, rng: np.random.Generator) -> None:
    """Liver, spleen, kidneys, stomach and the bowel region (loops, gas and mesenteric fat at render time)."""
    g = canvas.grid
    s = subject.scale
    only = (int(Tissue.FAT),)

    def at(level: float, dx: float, dy: float, dz: float = 0.0) -> np.ndarray:
        z = ref.z_of_level(level)
        return np.array([ref.at(z, "x") + dx * s, ref.at(z, "y") + dy * s, z + dz * s])

    lev = o.level
    ks = np.flatnonzero((lev > 18.0) & (lev < 31.0))
    dep_all = ref.at(o.z, "depth")
    chunk = 24
    for k0 in range(int(ks[0]) if ks.size else 0, int(ks[-1]) + 1 if ks.size else 0, chunk):
        k1 = min(int(ks[-1]) + 1, k0 + chunk)
        zsl = slice(k0, k1)
        box = _outline_slab(g, o, k0, k1)
        if box is None:
            continue
        _, y, _ = box.coords()
        cav = canvas.cavity[box.slices] >= F32(6 * s)
        sy = o.sy[zsl][:, None, None].astype(F32)
        dep = dep_all[zsl][:, None, None].astype(F32)
        m = cav & (y < sy + dep / 2)
        canvas.paint_where(box, m, Tissue.BOWEL, only=(int(Tissue.FAT),))
    # liver: right lobe + left lobe, under the right dome
    paint_blob(canvas, at(16.8, -62, -38, 0), np.array([72, 78, 62]) * s, rotation("y", np.deg2rad(-20)),
               Tissue.LIVER, only=only + (int(Tissue.BOWEL),), lobes=(0.06, rng.uniform(0, 6)))
    paint_blob(canvas, at(16.5, 12, -82, 5), np.array([52, 28, 32]) * s, rotation("z", 0.3), Tissue.LIVER,
               only=only + (int(Tissue.BOWEL),))
    paint_blob(canvas, at(17.6, 84, 8, 0), np.array([22, 48, 52]) * s, rotation("z", -0.6), Tissue.SPLEEN,
               only=only + (int(Tissue.BOWEL),))
    st = at(17.8, 52, -72, -10)
    paint_blob(canvas, st, np.array([46, 38, 52]) * s, rotation("z", 0.5), Tissue.MUSCLE,
               only=only + (int(Tissue.BOWEL),))
    paint_blob(canvas, st, np.array([42, 34, 48]) * s, rotation("z", 0.5), Tissue.ORGAN, only=(int(Tissue.MUSCLE),))
    paint_blob(canvas, st + np.array([0, -14, 12]) * s, np.array([34, 18, 28]) * s, rotation("z", 0.5), Tissue.GAS,
               only=(int(Tissue.ORGAN),))
    # pancreas (retroperitoneal, across the spine at ~L1)
    for dx, r in ((-10, 12), (25, 11), (55, 9)):
        paint_blob(canvas, at(19.8, dx, -48 + abs(dx) * 0.3), np.array([16, r, 10]) * s, np.eye(3), Tissue.ORGAN,
                   only=only + (int(Tissue.BOWEL),))
    # kidneys: retroperitoneal, the right one lower; cortex, medulla, sinus fat
    for side, lv in ((-1.0, 21.2), (1.0, 20.6)):
        c = at(lv + rng.uniform(-0.3, 0.3), side * 68, 16)
        rk = rotation("z", side * np.deg2rad(25)) @ rotation("x", np.deg2rad(-15)) @ rotation("y", side * np.deg2rad(-12))
        paint_blob(canvas, c, np.array([34, 30, 64]) * s, rk, Tissue.FAT, only=only + (int(Tissue.BOWEL), int(Tissue.MUSCLE)))
        paint_blob(canvas, c, np.array([25, 21, 52]) * s, rk, Tissue.KIDNEY, only=only + (int(Tissue.BOWEL),))
        for dz in (-25, 0, 25):
            paint_blob(canvas, c + rk @ np.array([-side * 5, -3, dz]) * s, np.array([9, 8, 11]) * s, rk,
                       Tissue.KIDNEY_MEDULLA, only=(int(Tissue.KIDNEY),))
        paint_blob(canvas, c + rk @ np.array([-side * 14, -6, 0]) * s, np.array([8, 7, 20]) * s, rk, Tissue.FAT,
                   only=(int(Tissue.KIDNEY), int(Tissue.KIDNEY_MEDULLA)))


def _outline_slab(g, o, k0: int, k1: int) -> Box | None:
    """The box of slices ``k0:k1`` that holds the body outline ``o`` (None when it is outside the grid)."""
    zsl = slice(k0, k1)
    lo = [float(np.min(o.cx[zsl] - o.rx[zsl])), float(np.min(o.cy[zsl] - o.ry[zsl])), g.origin[2]]
    hi = [float(np.max(o.cx[zsl] + o.rx[zsl])), float(np.max(o.cy[zsl] + o.ry[zsl])), g.origin[2]]
    bb = g.box(lo, hi, margin=0.0)
    return None if bb is None else Box(g, (k0, k1), bb.y, bb.x)
