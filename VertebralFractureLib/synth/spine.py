"""The spine plan: levels, per-vertebra dimensions, fractures, and the stacked 3D geometry.

Anatomical frame: x left, y posterior, z superior (mm), i.e. LPS before the patient's rotation in
the scanner. Each vertebra has a local frame (columns u = left, v = posterior, w = superior) whose
origin is the centre of its body. The body's endplates are the surfaces ``w = top(u, v)`` and
``w = bot(u, v)``: a wedge-shaped slab (anterior rim height Ha, posterior Hp) with concave
endplates (the normal middle-height deficit), deformed by an optional fracture.

The spine is built by stacking: vertebral body, disc, vertebral body, …; the disc wedge angles are
chosen so that the normal spine has the sampled segmental lordosis/kyphosis (VerSe priors), and a
fracture's height loss then adds its own local kyphosis, as in a real spine.

Numeric variants change the spine: a T13 or an L6 adds a vertebra. Rib variants (11 or 13 rib pairs,
the last pair full or a stump) and lumbosacral transitional vertebrae are drawn from a random stream
of their own (:func:`variant_rng`), so a case that draws none of them is identical whatever their
probabilities, and forcing a rib variant (probability 1) changes only the ribs.

The Genant keypoints lie on the mid-sagittal plane ``u = 0`` on the endplate surfaces, at the
anterior and posterior corners (inset from the rounded rim) and in the middle, so the heights are
exact functions of the shape; a fracture deformation is solved (bisection) so the measured heights
give the target grade with :func:`VertebralFractureLib.genant.grade`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from VertebralFractureLib import genant
from VertebralFractureLib.analysis import KEYPOINT_NAMES
from VertebralFractureLib.anatomy import vertebra as vertebra_info
from VertebralFractureLib.synth import priors
from VertebralFractureLib.synth.config import FractureSpec, FractureType, SynthConfig
from VertebralFractureLib.synth.shapes import eval_noise_2d, rotation, smooth_noise_2d

_DEG = np.pi / 180.0


@dataclass
class Fracture:
    """A planned fracture and its solved deformation.

    Attributes:
        grade, type: the target Genant grade and type.
        reduction: the target height reduction (fraction).
        endplate: "superior", "inferior" or "both" (wedge and biconcave).
        amplitude: depression depth (mm) for wedge/biconcave, height-scale loss for crush.
        ramp_start: wedge depression starts at this fraction of the depth from posterior.
        irregularity: endplate roughness amplitude (mm).
        band: thickness (mm) of the dense band of impacted bone under the fractured endplate(s).
        noise: smooth 2D bump terms of the irregular endplate.
        age: "fresh" (condensation band, irregular endplate) or "old" (band and roughness reduced to
            a thin sclerotic rim on a smooth endplate).
    """

    grade: int
    type: str
    reduction: float
    endplate: str = "superior"
    amplitude: float = 0.0
    ramp_start: float = 0.35
    irregularity: float = 0.8
    band: float = 5.0
    noise: list = field(default_factory=list)
    age: str = "fresh"


@dataclass
class Vertebra:
    """One vertebra's plan: dimensions (mm), frame and optional fracture."""

    label: int
    name: str
    kind: str  # "atlas", "axis", "cervical", "thoracic", "lumbar"
    prior: priors.LevelPrior
    scale: float
    width: float
    depth: float
    ha: float
    hp: float
    conc_sup: float
    conc_inf: float
    waist: float = 0.06
    cortex: float = 1.0
    endplate_t: float = 1.0
    round_r: float = 1.2
    post_concavity: float = 1.5
    crush_scale: float = 1.0
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))
    fracture: Fracture | None = None
    osteophyte: float = 0.0
    rib: str | None = None  # "full", "stump" or None: the rib pair this vertebra bears
    rib_mm: float | None = None  # stump length (centreline from the rib's proximal end)
    wings: dict = field(default_factory=dict)  # side (-1 right, +1 left) → (tip, "dysplastic"|"joint"|"fused")
    template: Any = None  # real posterior elements (:class:`~VertebralFractureLib.synth.templates.Draw`), else procedural

    # ------------------------------------------------------------------ shape
    @property
    def gradable(self) -> bool:
        """C1 has no body: no keypoints, no grade."""
        return self.kind != "atlas"

    def p(self, name: str) -> float:
        """A posterior-element prior scaled to this vertebra."""
        return float(getattr(self.prior, name)) * self.scale

    def rim(self, v: np.ndarray | float) -> np.ndarray | float:
        """Rim height (mm) at depth position v (anterior −D/2 … posterior +D/2), before concavity."""
        t = np.clip((self.depth / 2 - v) / self.depth, 0.0, 1.0)  # 0 posterior … 1 anterior
        return (self.hp + (self.ha - self.hp) * t) * self.crush_scale

    def _bowl(self, u, v, r: float = 0.42):
        """Endplate concavity profile: 1 at the centre, 0 at and beyond the A/P keypoints (u = 0)."""
        vc, rv = self._bowl_v()
        return np.clip(1.0 - (u / (r * self.width)) ** 2 - ((v - vc) / rv) ** 2, 0.0, 1.0)

    def _bowl_v(self) -> tuple[float, float]:
        """Centre and half-length (mm, along v) of the concave part of the endplates."""
        m = self.inset
        va, vp = -self.depth / 2 + m, self.depth / 2 - m - self.post_concavity
        return 0.5 * (va + vp), 0.5 * (vp - va)

    def _depression(self, u, v, which: str):
        """Fracture depression (mm, ≥ 0) of the superior or inferior endplate."""
        f = self.fracture
        if f is None or f.type == FractureType.CRUSH or f.amplitude == 0.0:
            return 0.0 if np.isscalar(u) and np.isscalar(v) else np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)), np.float32)
        share = {"superior": (1.0, 0.0), "inferior": (0.0, 1.0), "both": (0.6, 0.4)}[f.endplate]
        s = share[0] if which == "sup" else share[1]
        if s == 0.0:
            return 0.0 if np.isscalar(u) and np.isscalar(v) else np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)), np.float32)
        if f.type == FractureType.WEDGE:
            t = np.clip((self.depth / 2 - v) / self.depth, 0.0, 1.0)
            x = np.clip((t - f.ramp_start) / (1.0 - f.ramp_start), 0.0, 1.0)
            prof = x * x * (3 - 2 * x) + 0.0 * u
        else:  # biconcave
            prof = self._bowl(u, v, 0.45) ** 0.7
        rough = f.irregularity * (eval_noise_2d(f.noise, u, v) if f.noise else 0.0)
        return s * (f.amplitude * prof + rough * np.minimum(prof * 4.0, 1.0))

    def _crush_rough(self, u, v, which: str):
        f = self.fracture
        if f is None or f.type != FractureType.CRUSH or not f.noise:
            return 0.0
        sign = 1.0 if which == "sup" else -1.0
        bowl = self._bowl(u, v, 0.45)
        return 0.5 * f.irregularity * sign * eval_noise_2d(f.noise, u, v) * np.minimum(bowl * 3.0, 1.0)

    def top(self, u, v):
        """Superior endplate surface ``w`` (mm) at (u, v)."""
        return (self.rim(v) / 2 - self.conc_sup * self.crush_scale * self._bowl(u, v)
                - self._depression(u, v, "sup") - self._crush_rough(u, v, "sup"))

    def bot(self, u, v):
        """Inferior endplate surface ``w`` (mm) at (u, v)."""
        return (-self.rim(v) / 2 + self.conc_inf * self.crush_scale * self._bowl(u, v)
                + self._depression(u, v, "inf") + self._crush_rough(u, v, "inf"))

    # ------------------------------------------------------------------ truth
    @property
    def inset(self) -> float:
        """Distance (mm) of the anterior/posterior keypoints from the body's front/back wall."""
        return max(self.round_r + 0.6, 0.06 * self.depth)

    def keypoint_v(self) -> dict[str, float]:
        """Depth positions of the anterior, middle and posterior keypoints (the posterior wall is
        concave in the midline by ``post_concavity``)."""
        vc, rv = self._bowl_v()
        return {"A": vc - rv, "M": vc, "P": vc + rv}

    def keypoints_local(self) -> dict[str, np.ndarray]:
        """The six Genant keypoints in local coordinates (u = 0, on the endplate surfaces)."""
        out = {}
        for key, v in self.keypoint_v().items():
            out[f"{key}_sup"] = np.array([0.0, v, float(self.top(0.0, v))])
            out[f"{key}_inf"] = np.array([0.0, v, float(self.bot(0.0, v))])
        return {k: out[k] for k in KEYPOINT_NAMES}

    def heights(self) -> dict[str, float]:
        """Anterior, middle, posterior heights (mm) measured between the keypoints."""
        return genant.heights_from_keypoints(self.keypoints_local())

    def keypoints_anat(self) -> dict[str, np.ndarray]:
        return {k: self.centre + self.rot @ p for k, p in self.keypoints_local().items()}

    def planes(self) -> tuple[float, float, float, float]:
        """Superior and inferior endplate 'rim planes' through the A/P keypoints.

        Returns:
            ``(h_sup, tilt_sup, h_inf, tilt_inf)``: plane heights at v = 0 (mm) and kyphotic tilts
            (rad; positive when the anterior side is lower on top / higher at the bottom).
        """
        kp = self.keypoints_local()
        va, vp = kp["A_sup"][1], kp["P_sup"][1]
        ws_a, ws_p = kp["A_sup"][2], kp["P_sup"][2]
        wi_a, wi_p = kp["A_inf"][2], kp["P_inf"][2]
        span = vp - va
        h_sup = ws_a + (ws_p - ws_a) * (0 - va) / span
        h_inf = wi_a + (wi_p - wi_a) * (0 - va) / span
        return h_sup, float(np.arctan2(ws_p - ws_a, span)), h_inf, float(np.arctan2(wi_a - wi_p, span))


@dataclass
class Sacrum:
    """The sacrum's S1 frame (centre of the S1 body) and dimensions."""

    centre: np.ndarray
    rot: np.ndarray
    width: float
    depth: float
    height: float
    length: float
    curvature: float
    ala_span: float
    scale: float
    segments: int = 5  # four where the first sacral segment is lumbarised (drawn as L6)


@dataclass
class Lstv:
    """A lumbosacral transitional vertebra.

    Attributes:
        kind: "sacralisation" (of the last lumbar vertebra) or "lumbarisation" (of S1, drawn as L6).
        level: name of the transitional vertebra (L5, or L6).
        castellvi: Castellvi type: "Ia", "Ib", "IIa", "IIb", "IIIa", "IIIb" or "IV" (a unilateral,
            b bilateral).
        sides: "left"/"right" → "dysplastic" (enlarged, no contact), "joint" (pseudo-articulation
            with the sacral ala) or "fused" (bony fusion with the ala).
        disc_factor: the disc below is this fraction of its normal thickness.
        contacts: side → the point (anatomical frame, mm) on the upper surface of the sacral ala
            under the wing's tip.
    """

    kind: str
    level: str
    castellvi: str
    sides: dict[str, str]
    disc_factor: float
    contacts: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SpinePlan:
    """A subject's whole spine (C1 to the sacrum) and the range meant to be imaged."""

    vertebrae: list[Vertebra]
    sacrum: Sacrum | None
    range_names: tuple[str, str]
    scale: float
    osteoporotic: bool
    age: float
    discs: list[tuple[int, float]]  # (index of the vertebra above, central thickness mm)
    rib_variant: str | None = None  # None, "11", "13-T13" or "13-L1"
    lstv: Lstv | None = None

    def rib_facts(self) -> dict:
        """The rib pairs of this spine, for the case metadata.

        ``pairs`` counts the rib-bearing vertebrae (stumps included), ``full_pairs`` only those with
        full ribs; ``last_level`` is the lowest rib-bearing vertebra, ``last`` whether its ribs are
        "full" or a "stump" and ``last_mm`` the stump length (``None`` for full ribs);
        ``stumps`` lists the vertebrae with stumps; ``variant`` is the drawn rib variant.
        """
        ribbed = [v for v in self.vertebrae if v.rib]
        last = ribbed[-1]
        return {"variant": self.rib_variant, "pairs": len(ribbed),
                "full_pairs": sum(v.rib == "full" for v in ribbed), "last_level": last.name, "last": last.rib,
                "last_mm": None if last.rib_mm is None else round(float(last.rib_mm), 1),
                "stumps": [v.name for v in ribbed if v.rib == "stump"]}

    def variant_facts(self) -> dict:
        """Every drawn numeric or transitional variant, for the case metadata."""
        names = {v.name for v in self.vertebrae}
        lstv = None
        if self.lstv is not None:
            x = self.lstv
            lstv = {"kind": x.kind, "level": x.level, "castellvi": x.castellvi, "sides": dict(x.sides),
                    "disc_factor": round(x.disc_factor, 2)}
        return {"t13": "T13" in names, "l6": "L6" in names,
                "presacral": len(self.vertebrae), "ribs": self.rib_facts(), "lstv": lstv}

    def by_name(self, name: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(f"no vertebra {name} in this spine")

    def index(self, name: str) -> int:
        return [v.name for v in self.vertebrae].index(name)

    def in_range(self) -> list[Vertebra]:
        i0, i1 = self.index(self.range_names[0]), self.index(self.range_names[1])
        return self.vertebrae[i0:i1 + 1]


# ============================================================================== sampling
def _names(t13: bool, l6: bool) -> list[str]:
    names = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    names += ["T13"] if t13 else []
    names += [f"L{i}" for i in range(1, 6)] + (["L6"] if l6 else [])
    return names


def _kind(name: str) -> str:
    if name == "C1":
        return "atlas"
    if name == "C2":
        return "axis"
    return {"C": "cervical", "T": "thoracic", "L": "lumbar"}[name[0]]


def _choose_range(rng: np.random.Generator, names: list[str], config: SynthConfig) -> tuple[str, str]:
    if config.levels is not None:
        first, last = config.levels
        if first not in names or last not in names:
            raise ValueError(f"levels {config.levels} are not in this spine ({names[0]}–{names[-1]})")
        return first, last
    lo, hi = config.n_vertebrae
    n = int(rng.integers(lo, min(hi, len(names)) + 1))
    # ranges centred on the thoracolumbar spine (where most fractures are) are drawn more often
    starts = np.arange(len(names) - n + 1)
    centre = starts + (n - 1) / 2
    tl = names.index("T12")
    w = 0.35 + np.exp(-0.5 * ((centre - tl) / 5.0) ** 2)
    start = int(rng.choice(starts, p=w / w.sum()))
    return names[start], names[start + n - 1]


def _sample_vertebra(rng: np.random.Generator, name: str, scale: float, config: SynthConfig,
                     icd_local: float) -> Vertebra:
    pr = priors.LEVELS[name]
    kind = _kind(name)
    jit = lambda sd=config.level_sd: float(np.clip(rng.normal(1.0, sd), 1 - 2.5 * sd, 1 + 2.5 * sd))  # noqa: E731
    width, depth = pr.width * scale * jit(), pr.depth * scale * jit()
    hp = pr.hp_icd * icd_local * jit(0.02)
    lim = priors.NORMAL_MAX_REDUCTION
    ha_hp = float(np.clip(rng.normal(pr.ha_hp, 0.03), 1 - lim + 0.02, 1.18))
    hm_hp = float(np.clip(rng.normal(pr.hm_hp, 0.02), 1 - lim + 0.01, 0.95))
    # rim heights so that the keypoint heights (inset from the walls) give the sampled ratios
    ha = hp * ha_hp  # rim heights and concavities are refined below once the keypoint positions are known
    conc = max(0.0, (ha + hp) / 2 - hp * hm_hp)
    split = rng.uniform(0.4, 0.6)
    v = Vertebra(label=vertebra_info(name).label, name=name, kind=kind, prior=pr, scale=scale,
                 width=width, depth=depth, ha=ha, hp=hp, conc_sup=conc * split, conc_inf=conc * (1 - split),
                 waist=rng.uniform(0.03, 0.08), cortex=rng.uniform(0.7, 1.3) * min(1.0, scale),
                 endplate_t=rng.uniform(0.8, 1.4), round_r=rng.uniform(0.9, 1.6) * scale,
                 post_concavity=rng.uniform(0.5, 2.5) * scale)
    # the A/P keypoints sit inside the walls: set the rim heights so the *measured* ratios are the drawn ones
    kv = v.keypoint_v()
    t_a = (v.depth / 2 - kv["A"]) / v.depth
    t_p = (v.depth / 2 - kv["P"]) / v.depth
    # measured Ha = hp + (ha - hp) t_a and Hp = hp + (ha - hp) t_p; Ha / Hp = k gives ha
    k = ha_hp
    v.ha = hp * (1 + (k - 1) / (t_a - k * t_p))
    mid = float(v.rim(kv["M"]))
    total = max(0.0, mid - hm_hp * float(v.rim(kv["P"])))
    v.conc_sup, v.conc_inf = total * split, total * (1 - split)
    return v



def _neighbour_hp(verts: list[Vertebra], i: int, visible: set[int]) -> list[float]:
    out = []
    for j in (i - 1, i + 1):
        if 0 <= j < len(verts) and j in visible and verts[j].gradable:
            out.append(verts[j].heights()["posterior"])
    return out


def measured_grade(verts: list[Vertebra], i: int, visible: set[int]) -> genant.GenantResult:
    """Genant result of vertebra ``i`` from its measured heights and its visible neighbours."""
    return genant.grade(verts[i].heights(), _neighbour_hp(verts, i, visible))


def _solve(fn, target: float, lo: float, hi: float, iters: int = 60) -> float:
    """Bisection for an increasing function ``fn`` on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _apply_fracture(v: Vertebra, spec: FractureSpec, rng: np.random.Generator,
                    verts: list[Vertebra], i: int, visible: set[int], attempts: int = 12) -> None:
    """Deform vertebra ``i`` so that its measured Genant grade and type are the requested ones."""
    ftype = FractureType(spec.type).value
    nb = _neighbour_hp(verts, i, visible)
    if ftype == "crush" and not nb:
        raise ValueError(f"a crush fracture of {v.name} needs a graded neighbour")
    lo, hi = priors.GRADE_REDUCTION[spec.grade]
    for _ in range(attempts):
        target = float(rng.uniform(lo, hi))
        endplate = str(rng.choice(["superior", "inferior", "both"], p=[0.65, 0.15, 0.20]))
        f = Fracture(grade=spec.grade, type=ftype, reduction=target, endplate=endplate,
                     ramp_start=float(rng.uniform(0.3, 0.5)), irregularity=float(rng.uniform(0.3, 0.9)),
                     band=float(rng.uniform(3.0, 7.0)), noise=smooth_noise_2d(rng, 5, (5.0, 14.0)), age=spec.age)
        if spec.age == "old":  # remodelled: a smooth endplate and a thin sclerotic rim (no new draws)
            f.band, f.irregularity = f.band / 4.0, f.irregularity / 3.0
        v.fracture, v.crush_scale = f, 1.0

        def reduction(x: float, f: Fracture = f) -> float:
            if ftype == "crush":
                v.crush_scale = 1.0 - x
                return 1.0 - v.heights()["posterior"] / float(np.mean(nb))
            f.amplitude = x
            h = v.heights()
            return 1.0 - (h["anterior"] if ftype == "wedge" else h["middle"]) / h["posterior"]

        x = _solve(reduction, target, 0.0, 0.9 if ftype == "crush" else 0.95 * max(v.ha, v.hp))
        reduction(x)
        g = measured_grade(verts, i, visible)
        if g.grade == spec.grade and g.type == ftype:
            return
    raise RuntimeError(f"could not shape a grade {spec.grade} {ftype} fracture of {v.name}")  # pragma: no cover


def _plan_fractures(rng: np.random.Generator, verts: list[Vertebra], rng_idx: tuple[int, int],
                    config: SynthConfig) -> dict[int, FractureSpec]:
    """Fracture specs by vertebra index, among the interior of the imaged range."""
    i0, i1 = rng_idx
    interior = [i for i in range(i0 + 1, i1) if verts[i].gradable and verts[i - 1].gradable]
    if config.fractures is not None:
        out = {}
        for name, spec in config.fractures.items():
            idx = [k for k, v in enumerate(verts) if v.name == name]
            if not idx or idx[0] not in range(i0, i1 + 1):
                raise ValueError(f"fracture level {name} is outside the imaged range {verts[i0].name}–{verts[i1].name}")
            k = idx[0]
            if spec.type == FractureType.CRUSH and k not in interior:
                raise ValueError(f"a crush fracture needs graded neighbours on both sides; {name} is at the range end")
            out[k] = spec
        return out
    eligible = [i for i in interior if verts[i].name in config.fracture_levels]
    if not eligible or rng.random() >= config.p_fractured_case:
        return {}
    n = int(rng.integers(1, config.max_fractures + 1))
    weights = np.array([1.6 if verts[i].name in ("T11", "T12", "L1", "L2") else 1.0 for i in eligible])
    chosen = rng.choice(eligible, size=min(n, len(eligible)), replace=False, p=weights / weights.sum())
    out = {}
    gw = np.asarray(config.grade_weights, float)
    tw = np.asarray(config.type_weights, float)
    for k in sorted(int(c) for c in chosen):
        ftype = [FractureType.WEDGE, FractureType.BICONCAVE, FractureType.CRUSH][int(rng.choice(3, p=tw / tw.sum()))]
        if ftype == FractureType.CRUSH and any(out.get(j) is not None and out[j].type == FractureType.CRUSH
                                               for j in (k - 1, k + 1)):
            ftype = FractureType.WEDGE
        grade = int(rng.choice([1, 2, 3], p=gw / gw.sum()))
        age = "old" if config.p_old_fracture > 0 and rng.random() < config.p_old_fracture else "fresh"
        out[k] = FractureSpec(grade, ftype, age)
    return out


def _ensure_normal(verts: list[Vertebra]) -> None:
    """Make sure no unfractured vertebra measures as crushed against any subset of its neighbours.

    Normal level-to-level size variation must stay under :data:`priors.NORMAL_MAX_REDUCTION` whether
    both neighbours, or only the one above or below, are in the field of view.
    """
    limit = priors.NORMAL_MAX_REDUCTION
    for _ in range(6):
        changed = False
        for i, v in enumerate(verts):
            if not v.gradable or v.fracture is not None:
                continue
            hp_nb = [verts[j].heights()["posterior"] for j in (i - 1, i + 1)
                     if 0 <= j < len(verts) and verts[j].gradable]
            if not hp_nb:
                continue
            ref = max(hp_nb + [float(np.mean(hp_nb))])
            hp = v.heights()["posterior"]
            if 1.0 - hp / ref > limit:
                f = (1.0 - limit + 0.02) * ref / hp
                v.ha *= f
                v.hp *= f
                v.conc_sup *= f
                v.conc_inf *= f
                changed = True
        if not changed:
            return


def plan_spine(rng: np.random.Generator, config: SynthConfig) -> SpinePlan:
    """Draw a subject's spine (all levels C1–L5/L6 plus the sacrum) and the range to image.

    Args:
        rng: the case's random generator.
        config: the ranges.

    Returns:
        The plan, with every vertebra placed in the anatomical frame.
    """
    age = float(rng.uniform(25, 90))
    p_op = config.p_osteoporotic
    osteoporotic = bool(rng.random() < p_op)
    scale = float(np.clip(rng.normal(1.0, config.size_sd), 1 - 2.5 * config.size_sd, 1 + 2.5 * config.size_sd))
    t13 = bool(rng.random() < config.p_t13)
    l6 = bool(rng.random() < config.p_l6)
    if config.levels is not None:
        t13 = t13 or "T13" in config.levels
        l6 = l6 or "L6" in config.levels
    rib_variant, stump_mm, lstv = draw_variants(variant_rng(rng), config, t13)
    l6 = l6 or (lstv is not None and lstv.kind == "lumbarisation")
    names = _names(t13, l6)
    range_names = _choose_range(rng, names, config)

    icd = {n: priors.LEVELS[n].icd * scale * float(np.clip(rng.normal(1, config.level_sd), 0.9, 1.1)) for n in names}
    if l6:
        icd["L5"] = priors.LEVELS["L4"].icd * scale
    icd_local = {}
    for k, n in enumerate(names):
        prev = icd[names[k - 1]] if k > 0 else icd[n]
        icd_local[n] = 0.5 * (prev + icd[n])
    verts = [_sample_vertebra(rng, n, scale, config, icd_local[n]) for n in names]
    _set_ribs(verts, rib_variant, stump_mm)
    i0, i1 = names.index(range_names[0]), names.index(range_names[1])
    visible = set(range(i0, i1 + 1))

    # pre-fracture planes define the disc wedges (the normal curve)
    _ensure_normal(verts)
    planes0 = [v.planes() for v in verts]
    specs = _plan_fractures(rng, verts, (i0, i1), config)
    for k in sorted(specs, key=lambda j: specs[j].type == FractureType.CRUSH):  # crush last (uses neighbours)
        _apply_fracture(verts[k], specs[k], rng, verts, k, visible)
    for i, v in enumerate(verts):
        if i in visible and v.gradable:
            _check_grade(verts, i, visible, specs.get(i))
        if v.kind == "lumbar" and not v.fracture and age > 55 and rng.random() < 0.5:
            v.osteophyte = float(rng.uniform(1.0, 4.0))

    discs = _stack(rng, verts, planes0, icd, config, age, osteoporotic)
    sacrum = _place_sacrum(rng, verts, scale, config, lstv)
    _align(verts, sacrum, rng)
    if rng.random() < config.p_scoliosis:
        _scoliosis(rng, verts, sacrum, config)
    if lstv is not None:
        lstv.level = verts[-1].name
        _place_wings(verts[-1], sacrum, lstv)
    return SpinePlan(verts, sacrum, range_names, scale, osteoporotic, age, discs, rib_variant, lstv)


# ============================================================================== variants
_VARIANT_KEY = 0x7A41


def variant_rng(rng: np.random.Generator) -> np.random.Generator:
    """The random stream of the rib and lumbosacral variants of a case.

    It is derived from the seed sequence of ``rng`` without drawing from ``rng``, so these variants
    leave every other random choice of the case as it was.
    """
    bg = rng.bit_generator
    seq = getattr(bg, "seed_seq", None) or getattr(bg, "_seed_seq", None)
    if isinstance(seq, np.random.SeedSequence):
        return np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, _VARIANT_KEY)))
    return np.random.default_rng(rng.integers(2**63))  # pragma: no cover - generators without a seed sequence


_CASTELLVI = ("I", "II", "III", "IV")
#: Radii (mm, × the subject's scale; u, v, w) of the broad tip of a transitional vertebra's wing.
WING_TIP = (13.0, 10.0, 6.0)
_CONTACT = {"I": "dysplastic", "II": "joint", "III": "fused"}


def draw_variants(vrng: np.random.Generator, config: SynthConfig,
                  t13: bool) -> tuple[str | None, float | None, Lstv | None]:
    """Draw the rib variant and the lumbosacral transitional vertebra of one spine.

    Args:
        vrng: the case's variant stream (:func:`variant_rng`); always the same number of draws.
        config: the probabilities.
        t13: whether the spine has a T13 (then it is the 13th rib-bearing vertebra and no other rib
            variant is drawn).

    Returns:
        ``(rib_variant, stump_mm, lstv)``: "11", "13-T13", "13-L1" or ``None``; the length of the
        variant's last rib pair when it is a stump, else ``None``; the :class:`Lstv` (its ``level``
        is set once the spine is built) or ``None``.
    """
    u_rib, u_stump, stump_mm = vrng.random(), vrng.random(), float(vrng.uniform(*config.rib_stump_mm))
    u_lstv, u_type, u_bilateral, u_side, u_fused, disc = (vrng.random(), vrng.random(), vrng.random(),
                                                         vrng.random(), vrng.random(), vrng.uniform(0.4, 0.8))
    if t13:
        rib_variant: str | None = "13-T13"
    elif u_rib < config.p_11_ribs:
        rib_variant = "11"
    elif u_rib < config.p_11_ribs + config.p_lumbar_rib:
        rib_variant = "13-L1"
    else:
        rib_variant = None
    stump = rib_variant is not None and u_stump < config.p_rib_stump
    if u_lstv < config.p_sacralisation:
        kind = "sacralisation"
    elif u_lstv < config.p_sacralisation + config.p_lumbarisation:
        kind = "lumbarisation"
    else:
        return rib_variant, stump_mm if stump else None, None
    w = np.asarray(config.castellvi_weights, float)
    ctype = _CASTELLVI[int(np.searchsorted(np.cumsum(w / w.sum()), u_type, side="right").clip(0, 3))]
    if ctype == "IV":
        fused_left = u_fused < 0.5
        sides = {"left": "fused" if fused_left else "joint", "right": "joint" if fused_left else "fused"}
        label = "IV"
    elif u_bilateral < 0.5:
        sides = {"left": _CONTACT[ctype], "right": _CONTACT[ctype]}
        label = ctype + "b"
    else:
        sides = {"left" if u_side < 0.5 else "right": _CONTACT[ctype]}
        label = ctype + "a"
    lstv = Lstv(kind=kind, level="", castellvi=label, sides=sides, disc_factor=float(disc))
    return rib_variant, stump_mm if stump else None, lstv


def _set_ribs(verts: list[Vertebra], rib_variant: str | None, stump_mm: float | None) -> None:
    """Full ribs on every thoracic vertebra, then the rib variant's last pair."""
    for v in verts:
        if v.kind == "thoracic":
            v.rib = "full"
    level = {"11": "T12", "13-T13": "T13", "13-L1": "L1"}.get(rib_variant or "")
    if level is None:
        return
    v = next(v for v in verts if v.name == level)
    if stump_mm is not None:
        v.rib, v.rib_mm = "stump", stump_mm
    else:
        v.rib = None if rib_variant == "11" else "full"


def _place_wings(tv: Vertebra, sacrum: Sacrum, lstv: Lstv) -> None:
    """Enlarged transverse processes of the transitional vertebra, reaching down to the sacral ala.

    The tip of each wing lies over the upper surface of the ala (the ala as painted by
    :func:`~VertebralFractureLib.synth.skeleton.paint_pelvis`): ~8 mm above it when dysplastic, a
    1.5 mm joint space above it when articulating, sunk 3 mm into it when fused.
    """
    s = sacrum.scale
    rot, c = sacrum.rot, sacrum.centre
    up = rot[:, 2]
    # half-extent of the wing's tip (an ellipsoid in the vertebra's frame) along the sacral axis
    foot = float(np.sqrt(np.sum((tv.rot.T @ up) ** 2 * (np.array(WING_TIP) * tv.scale) ** 2)))
    for name, contact in lstv.sides.items():
        side = 1.0 if name == "left" else -1.0
        p0 = c + rot @ np.array([side * sacrum.width * 0.35, 4 * s, 2 * s])
        p1 = c + rot @ np.array([side * sacrum.ala_span / 2, 10 * s, -6 * s])
        axis = (p1 - p0) / np.linalg.norm(p1 - p0)
        e1 = up - axis * (up @ axis)
        e1 /= np.linalg.norm(e1)
        top = p0 + 0.55 * (p1 - p0) + e1 * 20 * s  # the ala's radius along the sacral axis is 20 s
        gap = {"dysplastic": 8.0, "joint": 1.5, "fused": -3.0}[contact]
        tip = top + up * (foot + gap)
        tv.wings[side] = (tv.rot.T @ (tip - tv.centre), contact)
        lstv.contacts[name] = top


def _check_grade(verts: list[Vertebra], i: int, visible: set[int], spec: FractureSpec | None) -> None:
    g = measured_grade(verts, i, visible)
    want_grade = 0 if spec is None else spec.grade
    want_type = None if spec is None else FractureType(spec.type).value
    if g.grade != want_grade or g.type != want_type:  # pragma: no cover - guarded by the priors' margins
        raise RuntimeError(f"{verts[i].name}: planned grade {want_grade} {want_type}, measured {g.grade} {g.type}")


# ============================================================================== stacking
def _stack(rng: np.random.Generator, verts: list[Vertebra], planes0: list, icd: dict[str, float],
           config: SynthConfig, age: float, osteoporotic: bool) -> list[tuple[int, float]]:
    """Place every vertebra by stacking bodies and discs from C2 downwards; C1 above C2."""
    cs = config.curvature_sd
    # thoracic kyphosis around the VerSe (supine CT) mean, more with age or osteoporosis
    f_thor = float(np.clip(rng.normal(0.95, cs) * (1.1 if (age > 65 or osteoporotic) else 1.0), 0.5, 1.4))
    f_cerv = float(np.clip(rng.normal(1.0, 1.5 * cs) + 1.5 * (f_thor - 1.0), -0.5, 2.5))  # compensating lordosis
    f_lumb = float(np.clip(rng.normal(1.0, cs), 0.4, 1.6))

    def factor(name: str) -> float:
        return {"C": f_cerv, "T": f_thor, "L": f_lumb}[name[0]]

    lord = {}
    for v in verts:
        pr = v.prior
        lord[v.name] = factor(v.name) * pr.lordosis + rng.normal(0, 0.5 * pr.lordosis_sd)
    i2 = 1  # C2
    rot = np.eye(3)
    centre = np.zeros(3)
    verts[i2].rot, verts[i2].centre = rot, centre
    discs = []
    for k in range(i2, len(verts) - 1):
        a, b = verts[k], verts[k + 1]
        kappa = -0.5 * (lord[a.name] + lord[b.name]) * _DEG  # kyphosis positive
        _hs0, ts0, hi0, ti0 = planes0[k + 1][0], planes0[k + 1][1], planes0[k][2], planes0[k][3]
        delta = kappa - ti0 - ts0
        t = icd[a.name] - abs(hi0) - _hs0
        t *= rng.uniform(0.75, 1.1) if age > 50 else rng.uniform(0.9, 1.1)
        t = max(t, 1.5 * a.scale)
        hs, ts, hi, ti = b.planes()[0], b.planes()[1], a.planes()[2], a.planes()[3]
        r_inf = a.rot @ rotation("x", -ti)
        mid = r_inf @ rotation("x", -delta / 2)
        e = a.centre + a.rot @ np.array([0.0, 0.0, hi])
        s = e - t * mid[:, 2]
        r_sup = r_inf @ rotation("x", -delta)
        b.rot = r_sup @ rotation("x", -ts)
        b.centre = s - b.rot @ np.array([0.0, 0.0, hs])
        discs.append((k, t))
    # C1: above C2 along C2's axis, tilted by the C1/C2 angle
    c1, c2 = verts[0], verts[1]
    ang = lord["C1"] * _DEG * 0.5
    c1.rot = c2.rot @ rotation("x", ang)
    c1.centre = c2.centre + icd["C1"] * (c2.rot @ rotation("x", ang / 2))[:, 2] + c2.rot @ np.array([0, 1.5 * c2.scale, 0])
    return discs


def _place_sacrum(rng: np.random.Generator, verts: list[Vertebra], scale: float, config: SynthConfig,
                  lstv: Lstv | None = None) -> Sacrum:
    last = verts[-1]
    sp = priors.SACRUM
    lordosis = rng.normal(15.0, 5.0) * _DEG
    hi, ti = last.planes()[2], last.planes()[3]
    t = rng.uniform(8.0, 12.0) * scale
    if lstv is not None:  # the disc below a transitional vertebra is rudimentary
        t *= lstv.disc_factor
    r_inf = last.rot @ rotation("x", -ti)
    delta = -lordosis - ti
    mid = r_inf @ rotation("x", -delta / 2)
    e = last.centre + last.rot @ np.array([0.0, 0.0, hi])
    s = e - t * mid[:, 2]
    rot = r_inf @ rotation("x", -delta)
    h = 28.0 * scale
    centre = s - rot @ np.array([0.0, 0.0, h / 2])
    return Sacrum(centre=centre, rot=rot, width=sp["width"] * scale, depth=sp["depth"] * scale, height=h,
                  length=sp["length"] * scale, curvature=rng.normal(sp["curvature"], 8.0) * _DEG,
                  ala_span=sp["ala_span"] * scale, scale=scale,
                  segments=4 if lstv is not None and lstv.kind == "lumbarisation" else 5)


def _align(verts: list[Vertebra], sacrum: Sacrum, rng: np.random.Generator) -> None:
    """Rotate the whole spine (about x) into the supine scanner orientation, sacrum at the origin.

    The angle makes the vertebrae's sagittal tilts match, on average over the levels, the median
    tilts of supine CT (:data:`priors.SUPINE_TILT`, VerSe); a subject-level deviation (SD 4°) is added.
    """
    diffs = []
    for v in verts:
        if v.name in priors.SUPINE_TILT and v.name[0] in "TL":
            tilt = np.degrees(np.arctan2(-v.rot[1, 2], v.rot[2, 2]))
            diffs.append(priors.SUPINE_TILT[v.name] - tilt)
    angle = float(np.mean(diffs)) * _DEG if diffs else 0.0
    r = rotation("x", angle + rng.normal(0.0, 4.0) * _DEG)
    origin = sacrum.centre.copy()
    for v in verts:
        v.centre = r @ (v.centre - origin)
        v.rot = r @ v.rot
    sacrum.centre = np.zeros(3)
    sacrum.rot = r @ sacrum.rot


def _scoliosis(rng: np.random.Generator, verts: list[Vertebra], sacrum: Sacrum, config: SynthConfig) -> None:
    """Bend the spine in the coronal plane (C- or S-curve) and rotate the apical vertebrae axially."""
    z = np.array([v.centre[2] for v in verts])
    z0, z1 = z.min(), z.max()
    cobb = rng.uniform(*config.scoliosis_deg) * _DEG
    s_curve = rng.random() < 0.5
    sign = rng.choice([-1.0, 1.0])
    length = z1 - z0

    def lateral(zz: np.ndarray) -> np.ndarray:
        x = (zz - z0) / length
        base = np.sin(np.pi * x) if not s_curve else np.sin(2 * np.pi * x)
        return sign * base * length * np.tan(cobb / 2) / (np.pi if not s_curve else 2 * np.pi)

    def slope(zz: np.ndarray) -> np.ndarray:
        h = 1.0
        return (lateral(zz + h) - lateral(zz - h)) / (2 * h)

    for v in verts:
        dx = float(lateral(np.array(v.centre[2])))
        tilt = float(np.arctan(slope(np.array(v.centre[2]))))
        axial = -0.8 * dx / max(length, 1.0) * 4.0
        v.centre = v.centre + np.array([dx, 0.0, 0.0])
        v.rot = rotation("y", tilt) @ v.rot @ rotation("z", axial)
    del sacrum  # the sacrum stays: the curve vanishes at the lowest vertebra
