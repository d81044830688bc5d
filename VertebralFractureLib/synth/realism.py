"""Realism report: SynthSpine next to real CT (HU histograms, body sizes and spacing, sagittal views).

For every real CT in a folder (``../shared/data/real-ct``: a chest CT reconstructed on a 200 mm
spine field of view and an abdominal CT on a body field of view) synthetic cases with the same
spacing, field of view and spinal levels are generated, and both are summarised the same way:

* HU statistics of threshold-based regions (no labels exist for the real CTs): air < −900 HU, fat
  −150…−50 HU, soft tissue −50…150 HU, bone > 200 HU — volume fraction and 5th/50th/95th
  percentiles, plus histograms;
* vertebral spacing and shape: inter-centroid distances per level of 200 synthetic spines against
  the VerSe centroid lists, and Ha/Hp, Hm/Hp against the neuro-ml six-point annotations (when the
  annotation folder is given or found beside the real CTs);
* mid-sagittal and axial images side by side.

Writes ``synth_realism.png``, ``synth_sagittal.png``, ``realism.json`` and ``realism.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.volume import Volume

#: Threshold regions (HU, inclusive-exclusive).
REGIONS: dict[str, tuple[float, float]] = {
    "air": (-1100.0, -900.0),
    "fat": (-150.0, -50.0),
    "soft": (-50.0, 150.0),
    "bone": (200.0, 3100.0),
}

#: Acquisition and anatomy of the synthetic counterpart of each known real CT (by file-name prefix).
MATCH: dict[str, dict[str, Any]] = {
    "lidc": {"levels": ("T2", "T12"), "contrast": 0.0, "title": "chest CT, spine FOV (LIDC-IDRI)"},
    "crlm": {"levels": ("T11", "L4"), "contrast": 1.0, "title": "abdominal CT, body FOV (Colorectal-Liver-Metastases)"},
}


def load_real(folder: str | Path) -> dict[str, Volume]:
    """The real CT volumes of a folder (``*.nii.gz``, ``*.nii``, ``*.nrrd``, ``*.mha``) by file stem."""
    import SimpleITK as sitk

    out = {}
    for p in sorted(Path(folder).iterdir()):
        if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
            stem = p.name.split(".")[0]
            out[stem] = Volume.from_sitk(sitk.ReadImage(str(p)))
    if not out:
        raise ValueError(f"no CT volumes (.nii.gz, .nii, .nrrd, .mha) in {folder}")
    return out


def hu_regions(array: np.ndarray) -> dict[str, dict[str, float]]:
    """Volume fraction and 5th/50th/95th HU percentiles of the threshold regions."""
    a = np.asarray(array, np.float32).reshape(-1)
    if a.size > 4_000_000:
        a = a[:: a.size // 4_000_000 + 1]
    out = {}
    for name, (lo, hi) in REGIONS.items():
        v = a[(a >= lo) & (a < hi)]
        p = np.percentile(v, [5, 50, 95]) if v.size else [np.nan] * 3
        out[name] = {"fraction": round(float(v.size / a.size), 4), "p5": round(float(p[0]), 1),
                     "p50": round(float(p[1]), 1), "p95": round(float(p[2]), 1)}
    return out


def spine_x(vol: Volume, labelmap: np.ndarray | None = None) -> int:
    """Index (x) of the mid-sagittal plane: the median x of the vertebra labels, or the column with the most bone."""
    if labelmap is not None and labelmap.any():
        return int(np.median(np.nonzero(labelmap)[2]))
    a = vol.array
    nx = a.shape[2]
    bone = (a > 250).sum(axis=(0, 1)).astype(float)
    w = np.exp(-0.5 * ((np.arange(nx) - nx / 2) / (0.25 * nx)) ** 2)  # prefer the centre
    k = max(3, int(round(8.0 / vol.spacing[0])))
    return int(np.argmax(np.convolve(bone, np.ones(k) / k, mode="same") * w))


def _sagittal(vol: Volume, x: int) -> tuple[np.ndarray, float]:
    """The sagittal slice (z up, anterior left) and its display aspect (z spacing / y spacing)."""
    img = vol.array[:, :, x].astype(np.float32)
    d = vol.direction
    if d[1, 1] < 0:  # anterior first
        img = img[:, ::-1]
    if d[2, 2] < 0:
        img = img[::-1]
    return img, vol.spacing[2] / vol.spacing[1]


def _axial(vol: Volume, z: int) -> np.ndarray:
    img = vol.array[z].astype(np.float32)
    d = vol.direction
    if d[1, 1] < 0:
        img = img[::-1]
    if d[0, 0] < 0:
        img = img[:, ::-1]
    return img


def synthetic_counterpart(real: Volume, stem: str, seed: int) -> Any:
    """A synthetic case with the real CT's spacing, field of view, (known) levels and contrast phase."""
    from VertebralFractureLib.synth.config import SynthConfig
    from VertebralFractureLib.synth.generator import generate_case

    key = next((k for k in MATCH if stem.lower().startswith(k)), None)
    levels = MATCH[key]["levels"] if key else ("T10", "L3")
    contrast = MATCH[key]["contrast"] if key else 0.5
    fov = float(min(real.extent_mm()[:2]))
    # the real scans are well aligned (no visible yaw/roll), so the counterparts are too
    cfg = SynthConfig(levels=levels, spacing=tuple(real.spacing), fov=fov, p_cut=0.5, orientation="LPS",
                      p_contrast=contrast, rotation_deg=(4.0, 0.0, 0.0))
    return generate_case(seed, cfg)


def shape_statistics(n_spines: int = 200, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Inter-centroid distance (to the next level), Hp, Ha/Hp and Hm/Hp per level of normal synthetic spines."""
    from VertebralFractureLib.synth.config import SynthConfig
    from VertebralFractureLib.synth.spine import plan_spine

    out: dict[str, dict[str, list[float]]] = {}
    cfg = SynthConfig(p_fractured_case=0.0)
    for i in range(n_spines):
        plan = plan_spine(np.random.default_rng([seed, i]), cfg)
        verts = plan.vertebrae
        for k, v in enumerate(verts):
            d = out.setdefault(v.name, {"icd": [], "hp": [], "ha_hp": [], "hm_hp": []})
            if k + 1 < len(verts):
                d["icd"].append(float(np.linalg.norm(verts[k + 1].centre - v.centre)))
            if v.gradable:
                h = v.heights()
                d["hp"].append(h["posterior"])
                d["ha_hp"].append(h["anterior"] / h["posterior"])
                d["hm_hp"].append(h["middle"] / h["posterior"])
    return out


def _real_shape_statistics(data_root: Path | None) -> dict[str, Any]:
    """VerSe inter-centroid distances and neuro-ml height ratios, when the annotation folder is present."""
    if data_root is None:
        return {}
    from VertebralFractureLib.synth import derive_priors

    ann = data_root / "annotations"
    out: dict[str, Any] = {}
    if (ann / "verse-centroids").is_dir():
        out["verse"] = derive_priors.verse_centroid_stats(ann / "verse-centroids")
    nm = ann / "neuro-ml-anchor-free-genant" / "annotation"
    if nm.is_dir():
        out["neuroml"] = derive_priors.neuroml_shape_stats(nm)
    return out


def _med(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    if a.size == 0:
        return float("nan"), float("nan")
    m = float(np.median(a))
    return round(m, 3), round(float(1.4826 * np.median(np.abs(a - m))), 3)


def compare_real(real_dir: str | Path, out_dir: str | Path, synthetic_dir: str | Path | None = None,
                 seed: int = 0, n_spines: int = 200) -> dict[str, Any]:
    """Write the realism report (figures, JSON, markdown) comparing SynthSpine with the real CTs.

    Args:
        real_dir: folder of real CT volumes (``../shared/data/real-ct``).
        out_dir: where the report goes (created).
        synthetic_dir: optional existing synthetic dataset (VerSe layout) to summarise as well.
        seed: seed of the synthetic counterparts.
        n_spines: synthetic spines (plans only) for the shape statistics.

    Returns:
        The report as a dictionary (also ``realism.json``); ``files`` lists what was written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_dir, out = Path(real_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    real = load_real(real_dir)
    data_root = real_dir.parent if (real_dir.parent / "annotations").is_dir() else None
    pairs = []
    report: dict[str, Any] = {"real_dir": real_dir.name, "pairs": {}, "shape": {}}
    for k, (stem, vol) in enumerate(real.items()):
        case = synthetic_counterpart(vol, stem, seed + k)
        key = next((m for m in MATCH if stem.lower().startswith(m)), None)
        pairs.append((stem, vol, case, MATCH[key]["title"] if key else stem))
        report["pairs"][stem] = {
            "real": {"spacing_mm": [round(s, 3) for s in vol.spacing], "size": list(vol.shape_xyz),
                     "hu": hu_regions(vol.array)},
            "synthetic": {"seed": seed + k, "levels": case.meta["levels"], "spacing_mm": case.meta["spacing_mm"],
                          "size": list(case.ct.shape_xyz), "noise_hu": case.meta["noise_hu"],
                          "contrast": case.meta["contrast"], "hu": hu_regions(case.ct.array),
                          "vertebrae": [e["name"] for e in case.truth]},
        }
    if synthetic_dir is not None:
        report["synthetic_dataset"] = _summarise_dataset(Path(synthetic_dir))

    synth_shape = shape_statistics(n_spines, seed)
    real_shape = _real_shape_statistics(data_root)
    levels = [f"C{i}" for i in range(2, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    for name in levels:
        s = synth_shape.get(name, {})
        row: dict[str, Any] = {"synthetic": {m: _med(s.get(m, [])) for m in ("icd", "hp", "ha_hp", "hm_hp")}}
        if "verse" in real_shape and name in real_shape["verse"]["icd_to_next_mm"]:
            r = real_shape["verse"]["icd_to_next_mm"][name]
            row["verse_icd"] = (r["median"], r["spread"], r["n"])
        if "neuroml" in real_shape and name in real_shape["neuroml"]:
            nm = real_shape["neuroml"][name]
            row["neuroml"] = {m: (v["median"], v["spread"], v["n"]) for m, v in nm.items()}
        report["shape"][name] = row

    files = {}
    files["synth_realism.png"] = _figure_overview(plt, pairs, report, levels, out / "synth_realism.png")
    files["synth_sagittal.png"] = _figure_sagittal(plt, pairs, out / "synth_sagittal.png")
    (out / "realism.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    files["realism.json"] = out / "realism.json"
    (out / "realism.md").write_text(_markdown(report, levels), encoding="utf-8")
    files["realism.md"] = out / "realism.md"
    report["files"] = {k: str(v) for k, v in files.items()}
    return report


def _summarise_dataset(root: Path) -> dict[str, Any]:
    from VertebralFractureLib.io.verse import list_cases

    cases = list_cases(root)
    acc: dict[str, list[float]] = {}
    n_vert = n_frac = 0
    for vc in cases:
        truth = json.loads(vc.genant.read_text())
        n_vert += len(truth)
        n_frac += sum(1 for e in truth if (e["grade"] or 0) > 0)
        import SimpleITK as sitk

        a = sitk.GetArrayFromImage(sitk.ReadImage(str(vc.ct)))
        for region, st in hu_regions(a).items():
            acc.setdefault(region, []).append(st["p50"])
    return {"cases": len(cases), "vertebrae": n_vert, "fractured": n_frac,
            "median_of_case_p50": {k: round(float(np.nanmedian(v)), 1) for k, v in acc.items()}}


def _figure_sagittal(plt: Any, pairs: list, path: Path) -> Path:
    """Mid-sagittal real vs synthetic, same window and physical scale."""
    fig, axes = plt.subplots(1, 2 * len(pairs), figsize=(5.2 * len(pairs) * 2, 8.5), facecolor="black")
    for j, (_stem, vol, case, title) in enumerate(pairs):
        for k, (v, lab, who) in enumerate(((vol, None, "real"), (case.ct, case.labelmap.array, "SynthSpine"))):
            ax = axes[2 * j + k]
            img, aspect = _sagittal(v, spine_x(v, lab))
            ax.imshow(img, cmap="gray", vmin=-400, vmax=1000, origin="lower", aspect=aspect, interpolation="bilinear")
            label = f"{who}: {title}" if who == "real" else f"SynthSpine ({', '.join(case.meta['levels'])} range)"
            ax.set_title(label, color="white", fontsize=10)
            ax.axis("off")
    fig.suptitle("Mid-sagittal CT, window −400…1000 HU: real (left of each pair) vs SynthSpine with the same "
                 "spacing and field of view", color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
    return path


def _figure_overview(plt: Any, pairs: list, report: dict, levels: list[str], path: Path) -> Path:
    n = len(pairs)
    fig = plt.figure(figsize=(5.0 * 2 * n, 15))
    gs = fig.add_gridspec(3, 2 * n)
    bins = np.linspace(-1100, 1600, 271)
    for j, (stem, vol, case, title) in enumerate(pairs):
        for k, (v, lab, who) in enumerate(((vol, None, "real"), (case.ct, case.labelmap.array, "SynthSpine"))):
            ax = fig.add_subplot(gs[0, 2 * j + k])
            img, aspect = _sagittal(v, spine_x(v, lab))
            ax.imshow(img, cmap="gray", vmin=-400, vmax=1000, origin="lower", aspect=aspect)
            ax.set_title(f"{who}: {title}" if who == "real" else "SynthSpine counterpart", fontsize=9)
            ax.axis("off")
            ax = fig.add_subplot(gs[1, 2 * j + k])
            if lab is not None:
                zs = np.nonzero(lab)[0]
                z = int(np.median(zs)) if zs.size else v.array.shape[0] // 2
            else:
                z = v.array.shape[0] // 2
            ax.imshow(_axial(v, z), cmap="gray", vmin=-400, vmax=1000)
            ax.set_title(f"{who}: axial", fontsize=9)
            ax.axis("off")
        ax = fig.add_subplot(gs[2, j])
        for v, who, color in ((vol, "real", "tab:blue"), (case.ct, "SynthSpine", "tab:orange")):
            a = v.array.reshape(-1).astype(np.float32)
            ax.hist(a, bins=bins, density=True, histtype="step", color=color, label=who, log=True)
        for name, (lo, hi) in REGIONS.items():
            if name != "air":
                ax.axvspan(lo, min(hi, 1600), alpha=0.06, color="k")
        ax.set_title(f"HU histogram — {stem}", fontsize=9)
        ax.set_xlabel("HU")
        ax.legend(fontsize=8)
    # spacing and shape by level
    ax = fig.add_subplot(gs[2, n])
    xs = np.arange(len(levels))
    syn = [report["shape"][lv]["synthetic"]["icd"] for lv in levels]
    ax.errorbar(xs + 0.1, [s[0] for s in syn], yerr=[s[1] for s in syn], fmt="o", color="tab:orange",
                label="SynthSpine (200 spines)", ms=4)
    rv = [report["shape"][lv].get("verse_icd") for lv in levels]
    if any(r is not None for r in rv):
        ax.errorbar([x - 0.1 for x, r in zip(xs, rv) if r], [r[0] for r in rv if r], yerr=[r[1] for r in rv if r],
                    fmt="s", color="tab:blue", label="VerSe centroids", ms=4)
    ax.set_xticks(xs)
    ax.set_xticklabels(levels, rotation=90, fontsize=7)
    ax.set_ylabel("distance to next centroid (mm)")
    ax.set_title("Vertebral spacing", fontsize=9)
    ax.legend(fontsize=8)
    if 2 * n > n + 1:
        ax = fig.add_subplot(gs[2, n + 1])
        for metric, marker in (("ha_hp", "o"), ("hm_hp", "^")):
            syn = [report["shape"][lv]["synthetic"][metric] for lv in levels]
            ax.plot(xs + 0.1, [s[0] for s in syn], marker, color="tab:orange", ms=4,
                    label=f"SynthSpine {metric.replace('_', '/')}")
            nm = [report["shape"][lv].get("neuroml", {}).get(metric.replace("_", "/").replace("h", "H")) for lv in levels]
            if any(r is not None for r in nm):
                ax.plot([x - 0.1 for x, r in zip(xs, nm) if r], [r[0] for r in nm if r], marker, color="tab:blue",
                        ms=4, mfc="none", label=f"neuro-ml {metric.replace('_', '/')}")
        ax.axhline(0.8, color="k", lw=0.5, ls=":")
        ax.set_xticks(xs)
        ax.set_xticklabels(levels, rotation=90, fontsize=7)
        ax.set_ylim(0.6, 1.25)
        ax.set_title("Normal body shape: Ha/Hp, Hm/Hp (0.8 = grade-1 threshold)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def _markdown(report: dict, levels: list[str]) -> str:
    lines = ["# SynthSpine realism report", ""]
    lines.append("| CT | region | real fraction | real p5 / p50 / p95 (HU) | SynthSpine fraction | SynthSpine p5 / p50 / p95 (HU) |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for stem, pr in report["pairs"].items():
        for region in REGIONS:
            r, s = pr["real"]["hu"][region], pr["synthetic"]["hu"][region]
            lines.append(f"| {stem} | {region} | {r['fraction']:.3f} | {r['p5']:.0f} / {r['p50']:.0f} / {r['p95']:.0f} "
                         f"| {s['fraction']:.3f} | {s['p5']:.0f} / {s['p50']:.0f} / {s['p95']:.0f} |")
    lines += ["", "| level | SynthSpine ICD (mm) | VerSe ICD (mm) | SynthSpine Hp (mm) | SynthSpine Ha/Hp | "
              "neuro-ml Ha/Hp | SynthSpine Hm/Hp | neuro-ml Hm/Hp |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for lv in levels:
        row = report["shape"][lv]
        s = row["synthetic"]
        v = row.get("verse_icd")
        nm = row.get("neuroml", {})

        def fmt(t: Any) -> str:
            return "–" if t is None or (isinstance(t[0], float) and np.isnan(t[0])) else f"{t[0]:.2f} ± {t[1]:.2f}"

        lines.append(f"| {lv} | {fmt(s['icd'])} | {fmt(v)} | {fmt(s['hp'])} | {fmt(s['ha_hp'])} | {fmt(nm.get('Ha/Hp'))} "
                     f"| {fmt(s['hm_hp'])} | {fmt(nm.get('Hm/Hp'))} |")
    if "synthetic_dataset" in report:
        d = report["synthetic_dataset"]
        lines += ["", f"Synthetic dataset: {d['cases']} cases, {d['vertebrae']} vertebrae, {d['fractured']} fractured; "
                  f"median region p50 (HU): {d['median_of_case_p50']}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ vertebra by vertebra
#: Half-width (mm) of the square shown around each vertebra.
VERTEBRA_HALF_MM = 45.0


def vertebra_planes(ct: Volume, labelmap: Volume, label: int, half_mm: float = VERTEBRA_HALF_MM) -> dict[str, Any]:
    """The sagittal and axial 1 mm planes through one vertebra's centre of mass, with its mask.

    Both come from the LPS-aligned 1 mm grid of a box ``2 × half_mm`` wide around the vertebra, so
    real and synthetic vertebrae are shown at the same physical scale: sagittal anterior left and
    cranial up, axial anterior up and the patient's right on the left (radiological view).

    Returns:
        ``{"sagittal": (image, mask), "axial": (image, mask)}``, images in HU.

    Raises:
        ValueError: ``label`` is not in ``labelmap``.
    """
    from VertebralFractureLib.slices import mask_centres, plane_grid, sample_plane

    centre = mask_centres(labelmap, [label]).get(label)
    if centre is None:
        raise ValueError(f"label {label} is not in the labelmap")
    n = int(round(2 * half_mm)) + 1
    mask_volume = labelmap.with_array((np.asarray(labelmap.array) == label).astype(np.uint8))
    planes = {}
    for view in ("sagittal", "axial"):  # 1 mm pixels
        grid = plane_grid(centre, view, px=n, field_mm=float(n))
        img = sample_plane(ct, grid, -1000.0)
        mask = mask_volume.resample_like(grid, interpolation="nearest").array > 0
        # LPS-aligned (z, y, x): sagittal rows z (shown with origin lower), columns y: anterior left;
        # axial rows y: anterior first (up), columns x: the patient's right on the left
        planes[view] = (img[:, :, 0], mask[:, :, 0]) if view == "sagittal" else (img[0], mask[0])
    return planes


def synthetic_vertebra(name: str, seed: int, spacing_mm: float = 1.0,
                       templates: tuple[str, ...] = ()) -> tuple[Volume, Volume, int]:
    """A SynthSpine case around vertebra ``name`` (one level above and below, with the body), its
    labelmap and the vertebra's label; ``templates``: real masks for the posterior elements
    (:mod:`.templates`)."""
    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.synth.config import SynthConfig
    from VertebralFractureLib.synth.generator import generate_case

    v = vertebra(name)
    order = [n for n in ("C3 C4 C5 C6 C7 T1 T2 T3 T4 T5 T6 T7 T8 T9 T10 T11 T12 L1 L2 L3 L4 L5").split()]
    k = order.index(v.name)
    levels = (order[max(0, k - 1)], order[min(len(order) - 1, k + 1)])
    cfg = SynthConfig(levels=levels, spacing=(spacing_mm,) * 3, fov=150.0, p_cut=0.0, orientation="LPS",
                      rotation_deg=(0.0, 0.0, 0.0), templates=tuple(templates))
    case = generate_case(seed, cfg)
    return case.ct, case.labelmap, v.label


def vertebra_figure(real: list[tuple[str, Volume, Volume, int]], path: str | Path, seed: int = 7,
                    templates: tuple[str, ...] = ()) -> Path:
    """Each real vertebra beside a SynthSpine vertebra of the same level: sagittal and axial planes
    through the centre of mass, the mask outlined (posterior elements included), window −400…1000 HU.

    Args:
        real: ``(title, ct, labelmap, label)`` per real vertebra.
        path: the PNG to write.
        seed: seed of the first synthetic case (one case per row, ``seed + row``).
        templates: real masks for SynthSpine's posterior elements (:mod:`.templates`): a third pair of
            columns shows the same synthetic vertebra with them.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from VertebralFractureLib.anatomy import name_of

    if not real:
        raise ValueError("no real vertebra given")
    rows = len(real)
    cols = 6 if templates else 4
    fig = Figure(figsize=(13.0 * cols / 4, 3.4 * rows + 0.6), dpi=80, facecolor="black")
    FigureCanvasAgg(fig)
    ext = [-VERTEBRA_HALF_MM, VERTEBRA_HALF_MM, -VERTEBRA_HALF_MM, VERTEBRA_HALF_MM]
    for r, (title, ct, labelmap, label) in enumerate(real):
        name = name_of(label)
        s_ct, s_lab, s_label = synthetic_vertebra(name, seed + r)
        pairs = [(f"real {name}: {title}", vertebra_planes(ct, labelmap, label)),
                 (f"SynthSpine {name} (seed {seed + r})", vertebra_planes(s_ct, s_lab, s_label))]
        if templates:
            t_ct, t_lab, t_label = synthetic_vertebra(name, seed + r, templates=templates)
            pairs.append((f"SynthSpine {name}, real posterior elements", vertebra_planes(t_ct, t_lab, t_label)))
        for k, (who, planes) in enumerate(pairs):
            for j, view in enumerate(("sagittal", "axial")):
                ax = fig.add_subplot(rows, cols, cols * r + 2 * k + j + 1)
                img, mask = planes[view]
                ax.imshow(img, cmap="gray", vmin=-400, vmax=1000, origin="lower" if view == "sagittal" else "upper",
                          extent=ext, interpolation="bilinear")
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors="#40ff60",
                               linewidths=0.8, extent=ext, origin="lower" if view == "sagittal" else "upper")
                ax.set_title(f"{who} — {view}", color="white", fontsize=8)
                ax.set_axis_off()
    fig.text(0.5, 0.005, "1 mm planes through each vertebra's centre of mass, 90 mm square; mask outlined in green; "
             "sagittal: anterior left, axial: anterior up, patient's right on the left",
             color="white", fontsize=8, ha="center", va="bottom")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.3 / (3.4 * rows + 0.6), wspace=0.04, hspace=0.18)
    fig.savefig(path, facecolor="black")
    return Path(path)
