"""Rasterising one vertebra (body, posterior elements), its discs and its canal into the canvas.

Every part is an implicit shape in the vertebra's local frame (u left, v posterior, w superior;
origin at the body centre) evaluated in its own sub-box. A vertebra is the union of its parts; the
cortical shell is the union minus the union of the parts' cores, so parts merge without internal
walls. The body uses the exact endplate surfaces of :class:`~VertebralFractureLib.synth.spine.Vertebra`,
so the ground-truth keypoints lie on the rasterised endplates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from VertebralFractureLib.synth.shapes import F32, Box, capsule, capsule_box_points, corners, ellipsoid
from VertebralFractureLib.synth.spine import WING_TIP, Vertebra
from VertebralFractureLib.synth.tissues import Canvas, Tissue

_SHELL = 1.3  # mm, cortical shell of the posterior elements


@dataclass
class Part:
    """One implicit part: ``fn(u, v, w)`` ≤ 1 inside; ``core`` threshold for the marrow; local bounds."""

    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    lo: np.ndarray
    hi: np.ndarray
    core: float  # f ≤ core is marrow (0 → all cortical)
    hole: bool = False


def _cap(p0, p1, ra, rb, up=(0.0, 0.0, 1.0), shell: float = _SHELL, hole: bool = False) -> Part:
    r = max(ra[0], ra[1], rb[0], rb[1])
    pts = capsule_box_points(p0, p1, r)
    rmin = min(ra[0], ra[1], rb[0], rb[1])
    core = max(0.0, 1.0 - shell / rmin) ** 2 if rmin > shell * 1.6 else 0.0
    return Part(lambda u, v, w: capsule(u, v, w, p0, p1, ra, rb, up), pts.min(0), pts.max(0), core, hole)


def _ell(c, r, shell: float = _SHELL, hole: bool = False) -> Part:
    c, r = np.asarray(c, float), np.asarray(r, float)
    rmin = float(r.min())
    core = max(0.0, 1.0 - shell / rmin) ** 2 if rmin > shell * 1.6 else 0.0
    return Part(lambda u, v, w: ellipsoid(u, v, w, c, r), c - r, c + r, core, hole)


def _lamina(v_c: float, cw: float, cd: float, lt: float, u_max: float, w_lo: float, w_hi: float, shear: float,
            s: float) -> Part:
    """The posterior arch: a band around the posterior half of the canal, sheared (roof-tile slope)."""
    a_in, b_in = cw / 2, cd / 2
    a_out, b_out = cw / 2 + lt + s, cd / 2 + lt

    def fn(u, v, w):
        vc = F32(v_c) - F32(shear) * w
        dv = v - vc
        f_out = (u / F32(a_out)) ** 2 + (dv / F32(b_out)) ** 2
        f_in = (u / F32(a_in)) ** 2 + (dv / F32(b_in)) ** 2
        # map to a "≤ 1 inside" value with a core: band position between the two ellipses
        band = np.where((f_in > 1) & (dv > -0.15 * b_in) & (np.abs(u) <= u_max) & (w >= w_lo) & (w <= w_hi),
                        f_out, F32(9.0))
        return band

    core = max(0.0, 1.0 - 1.1 / (lt + s)) ** 2 if lt > 2.5 else 0.0
    lo = np.array([-a_out, v_c - shear * w_hi - 0.2 * b_in, w_lo])
    hi = np.array([a_out, v_c - shear * w_lo + b_out, w_hi])
    return Part(fn, lo, hi, core)


def _canal_geometry(vt: Vertebra) -> tuple[float, float, float]:
    cw, cd = vt.p("canal_w"), vt.p("canal_d")
    v_c = vt.depth / 2 + cd / 2 - 0.3 * vt.post_concavity
    return cw, cd, v_c


def posterior_parts(vt: Vertebra) -> list[Part]:
    """The posterior elements (and the dens / the atlas ring) as implicit parts."""
    s = vt.scale
    if vt.kind == "atlas":
        return _atlas_parts(vt)
    D, hp = vt.depth, vt.hp
    cw, cd, v_c = _canal_geometry(vt)
    pw, ph, lt = vt.p("ped_w"), vt.p("ped_h"), vt.p("lam_t")
    kind = vt.kind
    cerv = kind in ("cervical", "axis")
    u_f = cw / 2 + pw / 2 - 0.5
    w_p = max(0.0, hp / 2 - ph / 2 - 1.0 * s)
    v_f = v_c + 0.2 * cd
    du_pillar = {"cervical": 3.0, "axis": 3.0, "thoracic": 1.0, "lumbar": 2.0}[kind] * s
    u_f2 = u_f + du_pillar
    parts: list[Part] = []
    for side in (-1.0, 1.0):
        # pedicle
        parts.append(_cap((side * u_f, D / 2 - 5 * s, w_p), (side * u_f2, v_f, 0.8 * w_p),
                          (ph / 2, pw / 2), (ph / 2, pw / 2 * 1.1)))
        # articular pillar and processes
        if cerv:
            pr = (6.0 * s, 6.0 * s, hp / 2 + 0.5 * s)
        elif kind == "thoracic":
            pr = (4.5 * s, 5.0 * s, 0.35 * hp)
        else:
            pr = (6.0 * s, 6.0 * s, 0.35 * hp)
        parts.append(_ell((side * u_f2, v_f, 0.1 * hp), pr))
        if kind == "lumbar":
            sap = ((side * u_f2, v_f, 0.1 * hp), (side * (u_f2 + 3 * s), v_f - 1 * s, hp / 2 + 5 * s))
            iap = ((side * u_f2, v_f + 2 * s, 0.0), (side * (u_f2 - 3 * s), v_f + 5 * s, -hp / 2 - 6 * s))
            r_ap = (4.5 * s, 3.2 * s)
        else:
            sap = ((side * u_f2, v_f - 1 * s, 0.1 * hp), (side * u_f2, v_f - 2.5 * s, hp / 2 + 3.5 * s))
            iap = ((side * u_f2, v_f + 1 * s, 0.0), (side * u_f2, v_f + 4 * s, -hp / 2 - 4 * s))
            r_ap = (4.0 * s, 3.0 * s) if not cerv else (5.0 * s, 3.2 * s)
        parts.append(_cap(*sap, r_ap, r_ap, up=(0.0, 1.0, 0.0)))
        parts.append(_cap(*iap, r_ap, r_ap, up=(0.0, 1.0, 0.0)))
        # transverse process
        span, ang = vt.p("tp_span") / 2, np.deg2rad(vt.prior.tp_angle)
        if cerv:
            p0 = np.array([side * (u_f - 1 * s), D / 2 - 3 * s, 0.0])
            d = np.array([side * np.cos(np.deg2rad(15)), -np.sin(np.deg2rad(15)), -0.05])
            length = max(6.0 * s, span - abs(p0[0]))
            p1 = p0 + d / np.linalg.norm(d) * length
            parts.append(_cap(p0, p1, (4.5 * s, 3.5 * s), (3.5 * s, 3.0 * s)))
            hole = p0 + d / np.linalg.norm(d) * (0.45 * length)
            parts.append(_cap(hole + [0, 0, -6 * s], hole + [0, 0, 6 * s], (2.6 * s, 2.6 * s), (2.6 * s, 2.6 * s),
                              up=(1.0, 0.0, 0.0), hole=True))
        elif kind == "thoracic":
            p0 = np.array([side * u_f2, v_f - 1 * s, 0.7 * w_p])
            d = np.array([side * np.cos(ang), np.sin(ang), 0.12])
            p1 = p0 + d / np.linalg.norm(d) * max(8.0 * s, span - u_f2)
            parts.append(_cap(p0, p1, (5.0 * s, 4.5 * s), (4.5 * s, 4.0 * s)))
            parts.append(_ell(p1, (5.0 * s, 5.0 * s, 5.5 * s)))
        elif side in vt.wings:  # transitional vertebra: a tall wing down to the sacral ala
            p0 = np.array([side * u_f, v_f - 2 * s, 0.4 * w_p])
            tip = np.asarray(vt.wings[side][0], float)
            # the plate ends above the tip, so the tip's ellipsoid alone faces the ala
            parts.append(_cap(p0, tip + np.array([0.0, 0.0, 7.0 * s]), (9.0 * s, 5.0 * s), (8.0 * s, 6.0 * s)))
            parts.append(_ell(tip, np.array(WING_TIP) * s))
        else:
            p0 = np.array([side * u_f, v_f - 2 * s, 0.4 * w_p])
            d = np.array([side * np.cos(ang), np.sin(ang), 0.0])
            p1 = p0 + d / np.linalg.norm(d) * max(8.0 * s, span - u_f)
            parts.append(_cap(p0, p1, (7.0 * s, 3.6 * s), (4.5 * s, 2.6 * s)))
    # laminae
    shear = {"cervical": 0.3, "axis": 0.3, "thoracic": 0.5, "lumbar": 0.25}[kind]
    w_lo = -hp / 2 - {"cervical": 2.0, "axis": 2.0, "thoracic": 4.0, "lumbar": 3.0}[kind] * s
    parts.append(_lamina(v_c, cw, cd, lt, u_f2, w_lo, 0.5 * hp / 2 + 2 * s, shear, s))
    # spinous process
    theta = np.deg2rad(vt.prior.sp_angle)
    thick = {"cervical": 5.0, "axis": 7.5, "thoracic": 8.0, "lumbar": 8.0}[kind] * s
    w0 = -0.15 * hp
    p0 = np.array([0.0, v_c - shear * w0 + cd / 2 + 0.3 * lt, w0])
    d = np.array([0.0, np.cos(theta), -np.sin(theta)])
    up = np.array([0.0, np.sin(theta), np.cos(theta)])
    sp_h, sp_len = vt.p("sp_h"), vt.p("sp_len")
    p1 = p0 + d * sp_len
    taper = 0.75 if kind == "thoracic" else 0.8
    parts.append(_cap(p0 - d * 2 * s, p1, (sp_h / 2, thick / 2), (taper * sp_h / 2, 0.85 * thick / 2), up=tuple(up)))
    if cerv and vt.name not in ("C7",):
        for side in (-1.0, 1.0):
            parts.append(_cap(p1 - d * 4 * s, p1 + d * 2 * s + [side * 3.5 * s, 0, 0], (3.0 * s, 2.5 * s),
                              (2.5 * s, 2.2 * s), up=tuple(up)))
    else:
        parts.append(_ell(p1, (thick / 2, 3.5 * s, max(0.42 * sp_h, 4.0 * s))))
    if kind == "axis":  # the dens
        parts.append(_cap((0.0, -0.5 * s, hp / 2 - 3 * s), (0.0, -1.5 * s, hp / 2 + 13 * s), (5.0 * s, 5.0 * s),
                          (4.3 * s, 4.3 * s), up=(1.0, 0.0, 0.0), shell=1.2))
        parts.append(_ell((0.0, -1.5 * s, hp / 2 + 13 * s), (4.0 * s, 4.0 * s, 3.5 * s), shell=1.2))
        for side in (-1.0, 1.0):  # the large superior articular surfaces of C2
            parts.append(_ell((side * (cw / 2 + 3.0 * s), 1.0 * s, hp / 2 - 1 * s), (7.0 * s, 7.5 * s, 5.0 * s)))
    return parts


def _atlas_parts(vt: Vertebra) -> list[Part]:
    s = vt.scale
    parts: list[Part] = []
    for side in (-1.0, 1.0):
        parts.append(_ell((side * 13 * s, -1 * s, 0), (6.5 * s, 9.0 * s, 8.0 * s), shell=1.2))
        chain = [(side * 13, -6, 0), (side * 7, -11.5, 0), (0, -13, 0)]
        for a, b in zip(chain, chain[1:]):
            parts.append(_cap(np.multiply(a, s), np.multiply(b, s), (5.0 * s, 3.2 * s), (5.0 * s, 3.2 * s)))
        chain = [(side * 12, 6, 0), (side * 11, 16, 0), (side * 6, 24, 0), (0, 26, 0)]
        for a, b in zip(chain, chain[1:]):
            parts.append(_cap(np.multiply(a, s), np.multiply(b, s), (4.5 * s, 3.5 * s), (4.2 * s, 3.3 * s)))
        span = vt.p("tp_span") / 2
        parts.append(_cap((side * 16 * s, 0, 0), (side * span, 2 * s, 0), (4.0 * s, 4.0 * s), (4.5 * s, 4.5 * s)))
        h = np.array([side * 24 * s, 1 * s, 0.0])
        parts.append(_cap(h + [0, 0, -6 * s], h + [0, 0, 6 * s], (2.6 * s, 2.6 * s), (2.6 * s, 2.6 * s),
                          up=(1.0, 0.0, 0.0), hole=True))
    parts.append(_ell((0, -13.5 * s, 0), (4.5 * s, 3.5 * s, 5.5 * s)))
    parts.append(_ell((0, 27 * s, -1 * s), (5.0 * s, 4.0 * s, 5.0 * s)))
    return parts


def body_bounds(vt: Vertebra) -> tuple[np.ndarray, np.ndarray]:
    """Local bounds of the vertebral body (mm)."""
    h = max(vt.ha, vt.hp) * max(vt.crush_scale, 0.3) / 2 + 1.0
    o = vt.osteophyte
    return (np.array([-vt.width / 2 - o - 1, -vt.depth / 2 - o - 1, -h - o]),
            np.array([vt.width / 2 + o + 1, vt.depth / 2 + 1, h + o]))


def body_masks(vt: Vertebra, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the vertebral body: ``outer``, ``core`` (trabecular), ``endplate``, ``band``, ``vein``, ``spur``."""
    s = vt.scale
    a0, b0 = F32(vt.width / 2), F32(vt.depth / 2)
    un0, vn0 = u / a0, v / b0
    xs0 = np.where(v < 0, un0 * un0 + vn0 * vn0, (un0 * un0) ** 2 + (vn0 * vn0) ** 2)
    o = vt.osteophyte
    grow = (1.0 + (o + 1.0) / float(min(a0, b0))) ** 2
    cand = xs0 <= grow
    out = {k: np.zeros(u.shape, bool) for k in ("outer", "core", "endplate", "band", "vein", "spur")}
    if not cand.any():
        return out
    uu, vv, ww = u[cand], v[cand], w[cand]
    top, bot = vt.top(uu, vv).astype(F32), vt.bot(uu, vv).astype(F32)
    dt, db = top - ww, ww - bot
    dmin = np.minimum(dt, db)
    r = F32(vt.round_r)
    e = np.clip(r - dmin, 0, r)
    extra = r - np.sqrt(np.maximum(r * r - e * e, 0))
    hc = F32(max((vt.ha + vt.hp) / 2 * vt.crush_scale, 1.0))
    wn = np.clip((2 * ww / hc) ** 2, 0, 1)
    sc = 1 - F32(vt.waist) * (1 - wn)
    conc = F32(vt.post_concavity) * np.clip(1 - (uu / (0.45 * a0 * 2)) ** 2, 0, 1)

    def xsec(shrink: float | np.ndarray) -> np.ndarray:
        a = a0 * sc - extra - shrink
        b = b0 * sc - extra - shrink
        un, vn = uu / a, vv / b
        f = np.where(vv < 0, un * un + vn * vn, (un * un) ** 2 + (vn * vn) ** 2)
        return (f <= 1) & (vv <= b - conc) & (a > 0) & (b > 0)

    inside_h = (dt >= 0) & (db >= 0)
    outer = inside_h & xsec(0.0)
    t_c, t_e = F32(vt.cortex), F32(vt.endplate_t)
    core = (dt >= t_e) & (db >= t_e) & xsec(t_c)
    endplate = outer & (dmin < t_e + 0.3)
    vein = ((uu / F32(2.2 * s)) ** 2 + (ww / F32(1.4 * s)) ** 2 <= 1) & (vv > b0 - F32(7.0 * s)) & (vv <= b0 * sc)
    band = np.zeros_like(outer)
    f = vt.fracture
    if f is not None:
        if f.type == "crush":
            band = core & (dmin < t_e + F32(f.band * 0.7))
        else:
            dep_s = np.asarray(vt._depression(uu, vv, "sup"), F32)
            dep_i = np.asarray(vt._depression(uu, vv, "inf"), F32)
            band = core & (((dep_s > 0.4) & (dt < t_e + F32(f.band))) | ((dep_i > 0.4) & (db < t_e + F32(f.band))))
    spur = np.zeros_like(outer)
    if o > 0:
        near = (dt > -o * 0.35) & (db > -o * 0.35) & (dmin < 3.0)
        spur = near & ~outer & xsec(-o * np.clip(1 - np.maximum(dmin, 0) / 2.5, 0, 1)) & (vv < 0.3 * b0)
    for key, val in (("outer", outer), ("core", core), ("endplate", endplate), ("band", band),
                     ("vein", vein & outer), ("spur", spur)):
        out[key][cand] = val
    return out


def _sub(box: Box, vt: Vertebra, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Slices (relative to ``box``) of the sub-box containing local bounds lo..hi."""
    pts = vt.centre + corners(lo, hi) @ vt.rot.T
    sub = box.grid.box_of_points(pts, margin=1.0)
    if sub is None:
        return None
    z0, z1 = max(sub.z[0], box.z[0]), min(sub.z[1], box.z[1])
    y0, y1 = max(sub.y[0], box.y[0]), min(sub.y[1], box.y[1])
    x0, x1 = max(sub.x[0], box.x[0]), min(sub.x[1], box.x[1])
    if z1 <= z0 or y1 <= y0 or x1 <= x0:
        return None
    return (slice(z0 - box.z[0], z1 - box.z[0]), slice(y0 - box.y[0], y1 - box.y[0]), slice(x0 - box.x[0], x1 - box.x[0]))


def paint_vertebra(canvas: Canvas, vt: Vertebra) -> None:
    """Paint the bone of one vertebra (tissue classes and its VerSe label)."""
    tpl = vt.template  # real posterior elements (synth.templates) instead of the procedural parts
    parts = [] if tpl is not None else posterior_parts(vt)
    blo, bhi = body_bounds(vt)
    has_body = vt.kind != "atlas"
    back = vt.depth / 2 - 0.5 * vt.post_concavity  # where the posterior elements meet the body
    tlo, thi = tpl.bounds(back) if tpl is not None else (None, None)
    los = [p.lo for p in parts] + ([blo] if has_body else []) + ([tlo] if tpl is not None else [])
    his = [p.hi for p in parts] + ([bhi] if has_body else []) + ([thi] if tpl is not None else [])
    lo, hi = np.min(los, axis=0), np.max(his, axis=0)
    box = canvas.grid.box_of_points(vt.centre + corners(lo, hi) @ vt.rot.T, margin=1.0)
    if box is None:
        return
    u, v, w = box.local(vt.centre, vt.rot)
    outer = np.zeros(box.shape, bool)
    core = np.zeros(box.shape, bool)
    holes = np.zeros(box.shape, bool)
    for p in parts:
        sl = _sub(box, vt, p.lo, p.hi)
        if sl is None:
            continue
        f = p.fn(u[sl], v[sl], w[sl])
        if p.hole:
            holes[sl] |= f <= 1
            continue
        outer[sl] |= f <= 1
        if p.core > 0:
            core[sl] |= f <= p.core
    if tpl is not None:
        sl = _sub(box, vt, tlo, thi)
        if sl is not None:
            d = tpl.distance(u[sl], v[sl], w[sl], back)
            outer[sl] |= d <= 0
            core[sl] |= d <= -tpl.shell
    body = None
    if has_body:
        sl = _sub(box, vt, blo, bhi)
        if sl is not None:
            body = (sl, body_masks(vt, u[sl], v[sl], w[sl]))
    label = vt.label
    b_outer = np.zeros(box.shape, bool)
    b_core = np.zeros(box.shape, bool)
    if body is not None:
        sl, m = body
        b_outer[sl] = m["outer"]
        b_core[sl] = m["core"]
    outer |= b_outer
    outer &= ~holes
    core &= ~holes
    marrow_post = core & ~b_outer
    trab = b_core | (core & b_outer)
    cortex = outer & ~trab & ~marrow_post
    canvas.paint(box, cortex, Tissue.CORTICAL, label)
    canvas.paint(box, marrow_post, Tissue.POSTERIOR_MARROW, label)
    canvas.paint(box, trab, Tissue.TRABECULAR, label)
    if body is not None:
        sl, m = body
        sub = Box(box.grid, (box.z[0] + sl[0].start, box.z[0] + sl[0].stop),
                  (box.y[0] + sl[1].start, box.y[0] + sl[1].stop), (box.x[0] + sl[2].start, box.x[0] + sl[2].stop))
        canvas.paint(sub, m["endplate"] & ~trab[sl], Tissue.ENDPLATE, label)
        canvas.paint(sub, m["band"], Tissue.IMPACTED, label)
        canvas.paint(sub, m["vein"], Tissue.VEIN, label)
        canvas.paint(sub, m["spur"], Tissue.OSTEOPHYTE, label)


# ------------------------------------------------------------------------------------ discs and canal
def paint_disc(canvas: Canvas, a: Vertebra, b: Vertebra, thickness: float, degeneration: float = 0.0) -> None:
    """Paint the disc between vertebra ``a`` (above) and ``b`` (below): annulus and nucleus."""
    s = 0.5 * (a.scale + b.scale)
    width, depth = 0.5 * (a.width + b.width) * 1.02, 0.5 * (a.depth + b.depth) * 1.02
    ha = max(a.ha, a.hp) * a.crush_scale / 2
    hb = max(b.ha, b.hp) * b.crush_scale / 2
    pts = np.concatenate([a.centre + corners([-width / 2, -depth / 2, -ha - 3], [width / 2, depth / 2, 0]) @ a.rot.T,
                          b.centre + corners([-width / 2, -depth / 2, 0], [width / 2, depth / 2, hb + 3]) @ b.rot.T])
    box = canvas.grid.box_of_points(pts, margin=1.0)
    if box is None:
        return
    ub, vb, wb = box.local(b.centre, b.rot)
    rough = (np.abs(ub) <= width / 2 + 1) & (np.abs(vb) <= depth / 2 + 1)
    if not rough.any():
        return
    ua, va, wa = (x[rough] for x in box.local(a.centre, a.rot))
    ub, vb, wb = ub[rough], vb[rough], wb[rough]
    un, vn = ub / F32(width / 2), vb / F32(depth / 2)
    xs = np.where(vb < 0, un * un + vn * vn, (un * un) ** 2 + (vn * vn) ** 2)
    between = (wa <= a.bot(ua, va).astype(F32) + 0.3) & (wb >= b.top(ub, vb).astype(F32) - 0.3)
    disc = (xs <= 1) & between
    nucleus = disc & (un * un + ((vb + F32(0.05 * depth)) / F32(depth / 2)) ** 2 <= F32(0.3 + 0.1 * (1 - degeneration)))
    t = canvas.tissue[box.slices]
    i = canvas.instance[box.slices]
    tv = t[rough]
    iv = i[rough]
    tv[disc] = int(Tissue.ANNULUS)
    tv[nucleus] = int(Tissue.NUCLEUS)
    iv[disc] = 0
    t[rough] = tv
    i[rough] = iv
    del s, thickness


def paint_canal(canvas: Canvas, vt: Vertebra, reach: float) -> None:
    """Paint the canal contents around one vertebra: dural sac (CSF), cord, epidural and foraminal fat.

    Args:
        reach: half-length (mm) of the canal segment along the vertebra's axis.
    """
    s = vt.scale
    if vt.kind == "atlas":
        cw, cd, v_c = 26.0 * s, 22.0 * s, 12.0 * s
    else:
        cw, cd, v_c = _canal_geometry(vt)
    lo = np.array([-cw / 2 - 14 * s, v_c - cd / 2 - 8 * s, -reach])
    hi = np.array([cw / 2 + 14 * s, v_c + cd / 2, reach])
    box = canvas.grid.box_of_points(vt.centre + corners(lo, hi) @ vt.rot.T, margin=1.0)
    if box is None:
        return
    u, v, w = box.local(vt.centre, vt.rot)
    dv = v - F32(v_c)
    canal = ((u / F32(cw / 2)) ** 2 + (dv / F32(cd / 2)) ** 2 <= 1) & (np.abs(w) <= reach)
    lumbar = vt.kind == "lumbar"
    margin = 2.5 * s if lumbar else 1.0 * s
    sac = ((u / F32(cw / 2 - margin)) ** 2 + ((dv + F32(0.6 * margin)) / F32(cd / 2 - margin)) ** 2 <= 1) & canal
    canvas.paint(box, canal, Tissue.FAT)
    canvas.paint(box, sac, Tissue.CSF)
    order = {"atlas": 0, "axis": 1}.get(vt.kind, 2)
    name = vt.name
    cord_r = None
    if order < 2 or name[0] == "C":
        cord_r = (6.5 * s, 4.5 * s)
    elif name[0] == "T" and name not in ("T12", "T13"):
        cord_r = (4.5 * s, 4.0 * s)
    elif name in ("T12", "T13", "L1"):
        cord_r = (3.5 * s, 3.2 * s)
    if cord_r is not None:
        cord = ((u / F32(cord_r[0])) ** 2 + ((dv + F32(0.1 * cd)) / F32(cord_r[1])) ** 2 <= 1) & (np.abs(w) <= reach)
        canvas.paint(box, cord, Tissue.CORD)
    # foraminal fat below each pedicle (the intervertebral foramen)
    if vt.kind != "atlas":
        for side in (-1.0, 1.0):
            c = (side * (cw / 2 + 3 * s), v_c - 0.15 * cd, -vt.hp / 2 - 1.0 * s)
            fat = ellipsoid(u, v, w, c, (5.0 * s, 5.5 * s, 6.0 * s)) <= 1
            canvas.paint_where(box, fat, Tissue.FAT, only=(int(Tissue.MUSCLE), int(Tissue.FAT)))
