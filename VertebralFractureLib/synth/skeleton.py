"""Bones around the spine: ribs, sternum, clavicles, scapulae, sacrum and iliac wings (not labelled)."""

from __future__ import annotations

import numpy as np

from VertebralFractureLib.synth.body import (
    Outline,
    SpineRef,
    Subject,
    paint_blob,
    paint_capsule_world,
    surface_point,
    wall_depth,
)
from VertebralFractureLib.synth.shapes import F32, corners, rotation
from VertebralFractureLib.synth.spine import SpinePlan
from VertebralFractureLib.synth.tissues import Canvas, Tissue


def _truncate(pts: list[np.ndarray], length: float) -> list[np.ndarray]:
    """The first ``length`` mm of a polyline."""
    out = [pts[0]]
    left = float(length)
    for a, b in zip(pts, pts[1:]):
        d = float(np.linalg.norm(b - a))
        if d >= left:
            out.append(a + (b - a) * (left / max(d, 1e-9)))
            return out
        out.append(b)
        left -= d
    return out


def paint_ribs(canvas: Canvas, o: Outline, plan: SpinePlan, subject: Subject) -> None:
    """Ribs of every rib-bearing vertebra (``Vertebra.rib``): T1–T12, a T13, a lumbar rib on L1.

    A full rib has its head at the body, the tubercle at the transverse process, then runs around the
    inner chest wall, descending anteriorly; costal cartilage to the sternum (ribs 1–10). A stump is
    the first ``rib_mm`` mm of the same course. A lumbar rib starts at the tip of the transverse
    process (no head on the body)."""
    g = canvas.grid
    zmin, zmax = g.origin[2] - 40, g.origin[2] + g.spacing[2] * g.shape[0] + 120
    s = subject.scale
    thoracic = [v for v in plan.vertebrae if v.kind == "thoracic"]
    n = len(thoracic)
    ribbed = thoracic + [v for v in plan.vertebrae if v.kind == "lumbar" and v.rib]
    for i, vt in enumerate(ribbed):
        if vt.rib is None or not (zmin < vt.centre[2] < zmax):
            continue
        k = i + 1
        floating = k >= n - 1
        drop = float(np.interp(k, [1, 3, 7, 10, 12], [22, 65, 90, 80, 35])) * s
        end_angle = float(np.interp(k, [1, 2, 7, 10, 11, 12], [18, 12, 10, 40, 80, 105]))
        for side in (-1.0, 1.0):
            head = vt.centre + vt.rot @ np.array([side * (vt.width / 2 - 2 * s), vt.depth / 2 - 7 * s, vt.hp / 2 - 2 * s])
            span = vt.p("tp_span") / 2
            ang = np.deg2rad(vt.prior.tp_angle)
            tub = vt.centre + vt.rot @ np.array([side * span * 0.92 * np.cos(ang),
                                                 vt.depth / 2 + vt.p("canal_d") * 0.45 + span * 0.8 * np.sin(ang) - 5 * s,
                                                 0.0])
            angle_pt = tub + np.array([side * 28.0 * s, 10.0 * s, -4.0 * s])
            z0 = angle_pt[2]
            kz = int(np.clip(np.searchsorted(o.z, z0), 0, len(o.z) - 1))
            cx, cy = o.cx[kz], o.cy[kz]
            phi0 = np.degrees(np.arctan2(abs(angle_pt[0] - cx), -(angle_pt[1] - cy)))  # 0 anterior … 180 posterior
            first = surface_point(o, z0 - 3 * s, (side * np.sin(np.deg2rad(phi0 - 14)), -np.cos(np.deg2rad(phi0 - 14))),
                                  wall_depth(o, z0, (side * 0.6, 0.8)) + 2.0 * s)
            pts = [head, tub]
            for tb in (0.25, 0.5, 0.75):  # quadratic Bezier tubercle → (angle) → first wall point
                pts.append((1 - tb) ** 2 * tub + 2 * (1 - tb) * tb * angle_pt + tb * tb * first)
            pts.append(first)
            z0 = first[2]
            phis = np.linspace(phi0 - 24, end_angle, 12)
            shrink = {1: 0.55, 2: 0.8}.get(k, 1.0)
            for j, phi in enumerate(phis):
                t = (j + 1) / len(phis)
                a = np.deg2rad(phi)
                d = (side * np.sin(a), -np.cos(a))
                pz = z0 - drop * t ** 1.2
                depth = wall_depth(o, pz, d) + 2.0 * s
                p = surface_point(o, pz, d, depth)
                if shrink != 1.0:
                    p[:2] = np.array([cx, cy]) + (p[:2] - np.array([cx, cy])) * shrink
                pts.append(p)
            cart_from = len(pts) - (3 if not floating else 0)
            height = (10.0 if k > 1 else 8.0) * s
            j0 = 1 if vt.kind == "lumbar" else 0  # a lumbar rib articulates with the transverse process
            if vt.rib == "stump":
                pts = pts[:j0] + _truncate(pts[j0:], float(vt.rib_mm or 0.0))
            for j, (a, b) in enumerate(zip(pts, pts[1:])):
                if j < j0:
                    continue
                radii = (height / 2, 3.0 * s) if j > 0 else (4.5 * s, 4.5 * s)
                if j + 1 >= cart_from and k <= 10:
                    paint_capsule_world(canvas, a, b, (radii[0] * 0.9, radii[1] * 1.2), Tissue.CARTILAGE)
                else:
                    paint_capsule_world(canvas, a, b, radii, Tissue.CORTICAL, core=Tissue.MARROW, shell=1.0)


def paint_sternum_clavicles(canvas: Canvas, ref: SpineRef, o: Outline, subject: Subject) -> None:
    """Sternum (manubrium and body), clavicles and scapulae."""
    s = subject.scale
    g = canvas.grid
    z_hi = g.origin[2] + g.spacing[2] * g.shape[0]
    if ref.z_of_level(17.0) > z_hi + 20:
        return
    pts = []
    for lev in np.linspace(8.0, 16.8, 8):
        z = ref.z_of_level(lev)
        p = surface_point(o, z, (0.0, -1.0), wall_depth(o, z, (0.0, -1.0)) + 7 * s)
        pts.append(p)
    for j, (a, b) in enumerate(zip(pts, pts[1:])):
        w = (17 if j < 2 else 13) * s
        paint_capsule_world(canvas, a, b, (w, 6.5 * s), Tissue.CORTICAL, core=Tissue.MARROW, up=(1.0, 0.0, 0.0),
                             shell=1.0)
    top = pts[0]
    for side in (-1.0, 1.0):
        mid = top + np.array([side * 70, 12, 10]) * s
        end = top + np.array([side * 140, 60, 16]) * s
        paint_capsule_world(canvas, top + [side * 12 * s, 0, 4 * s], mid, (6.5 * s, 6.5 * s), Tissue.CORTICAL,
                             core=Tissue.MARROW)
        paint_capsule_world(canvas, mid, end, (6.5 * s, 6.0 * s), Tissue.CORTICAL, core=Tissue.MARROW)
        zs = ref.z_of_level(11.0)
        for dz, depth in ((-30, 14), (0, 14), (30, 16)):
            p = surface_point(o, zs + dz * s, (side * 0.8, 0.6), wall_depth(o, zs, (side * 0.8, 0.6)) - depth * s)
            c = p
            rot = rotation("z", side * np.deg2rad(38))
            paint_blob(canvas, c, np.array([40, 14, 26]) * s, rot, Tissue.MUSCLE,
                       only=(int(Tissue.FAT), int(Tissue.LUNG), int(Tissue.SKIN)))
            paint_blob(canvas, c, np.array([36, 1.8, 24]) * s, rot, Tissue.CORTICAL, only=(int(Tissue.MUSCLE),))


def paint_pelvis(canvas: Canvas, ref: SpineRef, plan: SpinePlan, subject: Subject) -> None:
    """Sacrum (S1–S5 with alae) and the iliac wings."""
    sc = plan.sacrum
    if sc is None:
        return
    g = canvas.grid
    if sc.centre[2] - sc.length > g.origin[2] + g.spacing[2] * g.shape[0] or sc.centre[2] + 80 < g.origin[2]:
        return
    s = sc.scale
    # sacral bodies, curving posteriorly
    c = sc.centre.copy()
    rot = sc.rot.copy()
    w, d, h = sc.width, sc.depth, sc.height
    for _ in range(sc.segments):
        box = g.box_of_points(c + corners([-w / 2 - 2, -d / 2 - 2, -h / 2 - 2], [w / 2 + 2, d / 2 + 2, h / 2 + 2]) @ rot.T)
        if box is not None:
            u, v, ww = box.local(c, rot)
            f = (u / F32(w / 2)) ** 2 + (v / F32(d / 2)) ** 2 + (ww / F32(h / 2)) ** 4
            canvas.paint(box, f <= 1, Tissue.CORTICAL)
            canvas.paint(box, f <= (1 - 1.5 / min(w, d, h) * 2) ** 2, Tissue.MARROW)
        step = h * 0.9
        rot = rot @ rotation("x", sc.curvature / 5)
        c = c - rot[:, 2] * step + rot[:, 1] * 0.0
        w, d, h = w * 0.78, d * 0.85, h * 0.82
    # alae and posterior sacral plate (median crest)
    for side in (-1.0, 1.0):
        p0 = sc.centre + sc.rot @ np.array([side * sc.width * 0.35, 4 * s, 2 * s])
        p1 = sc.centre + sc.rot @ np.array([side * sc.ala_span / 2, 10 * s, -6 * s])
        paint_capsule_world(canvas, p0, p1, (20 * s, 16 * s), Tissue.CORTICAL, core=Tissue.MARROW,
                             up=tuple(sc.rot[:, 2]))
        p2 = sc.centre + sc.rot @ np.array([side * sc.ala_span * 0.32, 12 * s, -40 * s])
        paint_capsule_world(canvas, p1, p2, (18 * s, 14 * s), Tissue.CORTICAL, core=Tissue.MARROW,
                             up=tuple(sc.rot[:, 2]))
    back0 = sc.centre + sc.rot @ np.array([0, sc.depth / 2 + 14 * s, 0])
    back1 = back0 + sc.rot @ np.array([0, 6 * s, -60 * s])
    paint_capsule_world(canvas, back0, back1, (22 * s, 5 * s), Tissue.CORTICAL, core=Tissue.MARROW,
                         up=(1.0, 0.0, 0.0))
    # iliac wings: curved plates flaring laterally and anteriorly from the sacroiliac joints
    for side in (-1.0, 1.0):
        base = sc.centre + sc.rot @ np.array([side * (sc.ala_span / 2 + 6 * s), 12 * s, -10 * s])
        prev = None
        for t in np.linspace(0, 1, 9):
            a = np.deg2rad(10 + 100 * t)
            p = base + np.array([side * 65 * s * np.sin(a) * (0.6 + 0.4 * t), -75 * s * (1 - np.cos(a)) * 0.8,
                                 35 * s * np.sin(np.pi * t) + 20 * s])
            if prev is not None:
                for dz, r, tissue in ((0.0, (11 * s, 4.5 * s), Tissue.CORTICAL),):
                    paint_capsule_world(canvas, prev + [0, 0, dz], p + [0, 0, dz], r, tissue, core=Tissue.MARROW,
                                         up=(0.0, 0.0, 1.0))
                paint_capsule_world(canvas, prev - [0, 0, 22 * s], p - [0, 0, 22 * s], (14 * s, 3.0 * s),
                                     Tissue.CORTICAL, up=(0.0, 0.0, 1.0))
            prev = p
        # gluteal muscles behind the wings
        paint_blob(canvas, base + np.array([side * 35, 35, 0]) * s, np.array([55, 30, 50]) * s, rotation("z", side * 0.5),
                   Tissue.MUSCLE, only=(int(Tissue.FAT),))
    del ref, subject
