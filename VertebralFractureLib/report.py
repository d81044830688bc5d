"""The human-readable results: ``report.csv`` (a row per vertebra) and ``report.html``.

The HTML report is one self-contained file (images embedded as base64 PNG, no scripts, no
external assets) for a radiologist: a summary line, the 3D picture, the table with fractured
vertebrae highlighted, a sagittal image per vertebra with its keypoints and heights, the
warnings, the method's limits with the models' provenance, and the software versions. It holds
no patient identifiers: only what the :class:`~VertebralFractureLib.analysis.Analysis` holds,
which never includes names, IDs, dates or file paths.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from VertebralFractureLib.analysis import SCHEMA_VERSION
from VertebralFractureLib.genant import GRADE_THRESHOLDS, SEED_THRESHOLDS

if TYPE_CHECKING:  # pragma: no cover
    from VertebralFractureLib.analysis import Analysis, VertebraResult

#: Columns of ``report.csv``, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "label", "name", "complete", "status", "status_reason", "naming_anchor", "naming_confidence",
    "fracture_probability", "fracture_probability_spread", "localization_score",
    "centroid_x_lps_mm", "centroid_y_lps_mm", "centroid_z_lps_mm",
    "height_anterior_mm", "height_middle_mm", "height_posterior_mm",
    "genant_ratio", "genant_grade", "genant_type", "seed_ratio", "seed_class", "keypoint_method",
    "radiomics_fracture_probability", "slice_fracture_probability",
)  # fmt: skip

DISCLAIMER = "Research software, not for diagnosis. Every result must be checked by a qualified reader."

#: Key of the 3D picture in the ``images`` mapping of :func:`write_html`.
SPINE3D_KEY = "spine3d"


# ---------------------------------------------------------------------------------------- CSV
def csv_row(v: VertebraResult) -> dict[str, Any]:
    """One vertebra as a CSV row (``None`` → empty cell)."""
    h = v.heights_mm or {}
    g = v.genant
    c = v.centroid_lps_mm
    return {
        "label": v.label,
        "name": v.name,
        "complete": int(bool(v.complete)),
        "status": v.status,
        "status_reason": v.status_reason,
        "naming_anchor": None if v.naming is None else v.naming["anchor"],
        "naming_confidence": None if v.naming is None else _r(v.naming["confidence"], 3),
        "fracture_probability": _r(v.fracture_probability),
        "fracture_probability_spread": _r(v.fracture_probability_spread),
        "localization_score": _r(v.localization_score),
        "centroid_x_lps_mm": _r(c[0], 3),
        "centroid_y_lps_mm": _r(c[1], 3),
        "centroid_z_lps_mm": _r(c[2], 3),
        "height_anterior_mm": _r(h.get("anterior"), 2),
        "height_middle_mm": _r(h.get("middle"), 2),
        "height_posterior_mm": _r(h.get("posterior"), 2),
        "genant_ratio": None if g is None else _r(g.ratio),
        "genant_grade": None if g is None else g.grade,
        "genant_type": None if g is None else g.type,
        "seed_ratio": None if g is None else _r(g.seed_ratio),
        "seed_class": None if g is None else g.seed_class,
        "keypoint_method": v.keypoint_method,
        "radiomics_fracture_probability": _r(v.radiomics_fracture_probability),
        "slice_fracture_probability": _r(v.slice_fracture_probability),
    }


def write_csv(path: str | Path, analysis: Analysis) -> None:
    """Write ``report.csv``: a header row and one row per vertebra, cranial to caudal."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for v in analysis.vertebrae:
            writer.writerow({k: ("" if val is None else val) for k, val in csv_row(v).items()})


def _r(value: float | None, ndigits: int = 4) -> float | None:
    return None if value is None else round(float(value), ndigits)


# ---------------------------------------------------------------------------------------- summary
def summary(analysis: Analysis) -> str:
    """One sentence: how many vertebrae, which are fractured and their grade."""
    vs = analysis.vertebrae
    if not vs:
        return "No vertebrae were found."
    span = vs[0].name if len(vs) == 1 else f"{vs[0].name}–{vs[-1].name}"
    text = f"{len(vs)} vertebra{'e' if len(vs) != 1 else ''} analysed ({span})."
    fractured = [v for v in vs if v.status == "fractured"]
    if fractured:
        items = [f"{v.name} ({_grade_words(v)})" for v in fractured]
        text += f" Fractured: {', '.join(items)}."
    elif any(v.status in ("normal", "fractured") for v in vs):
        text += " No fracture found."
    else:
        text += " Fracture status was not assessed."
    weak = [v.name for v in vs if v.status == "not assessable"]
    if weak:
        text += f" Not assessable (evidence too weak, see the reasons): {', '.join(weak)}."
    if vs and all(v.naming is not None and v.naming.get("anchor") is None for v in vs):
        text += " Level names are not anchored to a rib, the sacrum or C2 and may be off by one or more levels."
    cut = [v.name for v in vs if not v.complete]
    if cut:
        text += f" Cut by the field of view, not graded: {', '.join(cut)}."
    return text


def _grade_words(v: VertebraResult) -> str:
    if v.genant is None:
        return "not graded"
    words = f"Genant grade {v.genant.grade}"
    return words + (f", {v.genant.type}" if v.genant.type else "")


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; color: #1d1d1f; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; padding-bottom: 3px; margin-top: 1.6em; }
.summary { font-size: 1.1em; font-weight: 600; }
.disclaimer { background: #fff4d6; border: 1px solid #e0b84c; padding: 6px 10px; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; }
td.name, th.name { text-align: left; font-weight: 600; }
tr.fractured td { background: #fbd9d9; color: #8b0000; font-weight: 600; }
tr.weak td { background: #f6edd4; color: #6b5300; }
.accuracy { background: #eef4fb; border: 1px solid #8fb3d9; padding: 6px 10px; border-radius: 4px; }
.figure3d img { max-width: 420px; width: 100%; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.grid figure { margin: 0; width: 250px; }
.grid img { width: 250px; }
figcaption { font-size: 0.85em; color: #444; }
figure.fractured figcaption { color: #a00000; font-weight: 600; }
.small { font-size: 0.85em; color: #444; }
"""


def write_html(path: str | Path, analysis: Analysis, images: Mapping[str, bytes | str | Path] | None = None) -> None:
    """Write the self-contained HTML report.

    Args:
        path: the ``.html`` file to write.
        analysis: the analysis to report.
        images: PNG images (bytes or file paths): :data:`SPINE3D_KEY` for the 3D picture and a
            vertebra name ("L1") for its sagittal image. Missing sagittal images are rendered
            with :func:`.figures.render_sagittal` when the analysis has an image, a labelmap or
            keypoints for that vertebra.

    Raises:
        OSError: when an image file cannot be read or the report cannot be written.
    """
    images = dict(images or {})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Vertebral fracture analysis</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Vertebral fracture analysis</h1>",
        f'<p class="summary">{_e(summary(analysis))}</p>',
        f'<p class="disclaimer">{_e(DISCLAIMER)}</p>',
    ]
    accuracy = [w.split(":", 1)[1].strip() for w in analysis.warnings if w.startswith("accuracy:")]
    if accuracy:
        parts.append('<div class="accuracy"><b>How accurate is this?</b> ' + " ".join(_e(a) for a in accuracy) + "</div>")
    if SPINE3D_KEY in images:
        text = "Lateral view from the patient's left (anterior left, superior up); red = fractured, white = normal."
        if analysis.labelmap is None:
            text += " No segmentation: spheres mark the vertebra centres."
        parts += [
            "<h2>Spine</h2>",
            '<figure class="figure3d">',
            _img(images[SPINE3D_KEY], "lateral view of the spine"),
            f"<figcaption>{_e(text)}</figcaption></figure>",
        ]
    parts += ["<h2>Vertebrae</h2>", _table(analysis)]
    parts += ["<h2>Sagittal images</h2>", _sagittal_grid(analysis, images)]
    parts += ["<h2>Warnings</h2>", _list(analysis.warnings, "No warnings.")]
    parts += ["<h2>Method and limits</h2>", _method(analysis)]
    parts += ["<h2>Software</h2>", _software(analysis)]
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts) + "\n", encoding="utf-8")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _img(image: bytes | str | Path, alt: str) -> str:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if spec else str(value)


def _table(analysis: Analysis) -> str:
    head = ["Vertebra", "Name from", "Status", "P(fracture) ± spread", "Genant grade", "Type", "Height ratio",
            "Ha / Hm / Hp (mm)", "Seed G (class)", "Complete", "Keypoints", "Why not assessable"]
    radiomics = any(v.radiomics_fracture_probability is not None for v in analysis.vertebrae)
    if radiomics:
        head.append("P(fracture), radiomics")
    slice_based = any(v.slice_fracture_probability is not None for v in analysis.vertebrae)
    if slice_based:
        head.append("P(fracture), slices")
    rows = ['<table><thead><tr>' + "".join(
        f'<th{" class=name" if i == 0 else ""}>{_e(h)}</th>' for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    for v in analysis.vertebrae:
        g, h = v.genant, v.heights_mm
        heights = "–" if h is None else " / ".join(f"{h[k]:.1f}" for k in ("anterior", "middle", "posterior"))
        seed = "–" if g is None or g.seed_ratio is None else f"{g.seed_ratio:.2f} ({g.seed_class})"
        anchor = None if v.naming is None else (v.naming["anchor"] or "not anchored")
        p = _fmt(v.fracture_probability, ".2f")
        if v.fracture_probability is not None and v.fracture_probability_spread is not None:
            p += f" ± {v.fracture_probability_spread / 2:.2f}"
        cells = [
            v.name,
            _fmt(anchor),
            _fmt(v.status),
            p,
            _fmt(None if g is None else g.grade),
            _fmt(None if g is None else g.type),
            _fmt(None if g is None else g.ratio, ".2f"),
            heights,
            seed,
            _fmt(v.complete),
            _fmt(v.keypoint_method),
            _fmt(v.status_reason),
        ]
        if radiomics:
            cells.append(_fmt(v.radiomics_fracture_probability, ".2f"))
        if slice_based:
            cells.append(_fmt(v.slice_fracture_probability, ".2f"))
        cls = {"fractured": ' class="fractured"', "not assessable": ' class="weak"'}.get(v.status or "", "")
        tds = "".join(f'<td{" class=name" if i == 0 else ""}>{_e(c)}</td>' for i, c in enumerate(cells))
        rows.append(f"<tr{cls}>{tds}</tr>")
    rows.append("</tbody></table>")
    if not analysis.vertebrae:
        return "<p>No vertebrae.</p>"
    return "\n".join(rows)


def _sagittal_grid(analysis: Analysis, images: dict[str, Any]) -> str:
    figures = []
    for v in analysis.vertebrae:
        png = images.get(v.name)
        if png is None and (analysis.image is not None or analysis.labelmap is not None
                            or v.keypoints_lps_mm is not None):
            from VertebralFractureLib.figures import render_sagittal

            png = render_sagittal(analysis, v.label)
        cls = ' class="fractured"' if v.status == "fractured" else ""
        text = f"{v.name}: {v.status or 'status not assessed'}"
        if v.genant is not None:
            text += f", {_grade_words(v)}, height ratio {v.genant.ratio:.2f}"
        elif v.status_reason:
            text += f" ({v.status_reason})"
        elif not v.complete:
            text += ", cut by the field of view (not graded)"
        body = _img(png, f"sagittal image of {v.name}") if png is not None else "<p>(no image)</p>"
        figures.append(f"<figure{cls}>{body}<figcaption>{_e(text)}</figcaption></figure>")
    if not figures:
        return "<p>No vertebrae.</p>"
    legend = ('<p class="small">Each image: the vertebra\'s mid-sagittal plane, anterior left, superior up, '
              "bone window (W 1500 / L 400); outline = segmentation; lines = anterior (Ha), middle (Hm) "
              "and posterior (Hp) heights between the endplate keypoints, in mm.</p>")
    return legend + '<div class="grid">' + "".join(figures) + "</div>"


def _list(items: list[str], empty: str) -> str:
    if not items:
        return f"<p>{_e(empty)}</p>"
    return "<ul>" + "".join(f"<li>{_e(w)}</li>" for w in items) + "</ul>"


def _method(analysis: Analysis) -> str:
    g0, g1, g2 = (int(round(100 * t)) for t in GRADE_THRESHOLDS)
    s0, s1 = SEED_THRESHOLDS
    text = [
        f"<p><strong>{_e(DISCLAIMER)}</strong> It is not a medical device and has not been validated for "
        "clinical use.</p>",
        "<p>Method: vertebrae are localized on the CT, segmented, and classified as fractured or normal; "
        "six endplate keypoints on each vertebra's mid-sagittal plane give the anterior, middle and "
        "posterior heights (Ha, Hm, Hp). Genant semi-quantitative grade: height reduction against the "
        f"same vertebra's reference height, &lt; {g0} % grade 0, {g0}–{g1} % grade 1, {g1}–{g2} % grade 2, "
        f"&gt; {g2} % grade 3; the type (wedge, biconcave, crush) follows the smallest height. The seed "
        f"score G = min/max(Ha, Hm, Hp) is shown beside it (G &lt; {s0} moderate-severe, {s0}–{s1} mild).</p>",
        "<p>Limits: heights come from a single sagittal plane per vertebra; vertebrae cut by the field of "
        "view are not graded; non-compression fractures (e.g. of the posterior elements), old versus "
        "acute fractures and pathological fractures are not distinguished; results on scans unlike "
        "the training data (children, implants, severe scoliosis, very low dose) are less reliable.</p>",
    ]
    if any(v.radiomics_fracture_probability is not None for v in analysis.vertebrae):
        text.append(
            "<p>Radiomics second opinion (seed 001): pyradiomics features of each complete vertebra, "
            "LASSO-selected, fed to a classifier trained on synthetic CT only; its probability is "
            "shown beside the network's and does not change the status.</p>")
    if any(v.slice_fracture_probability is not None for v in analysis.vertebrae):
        text.append(
            "<p>Slice second opinion (seed 000): a network trained on synthetic CT only reads each complete "
            "vertebra's mid-sagittal and mid-axial slice; the mean of its two probabilities is shown "
            "beside the network's and does not change the status.</p>")
    if analysis.models:
        items = []
        for name, info in analysis.models.items():
            if isinstance(info, Mapping):
                detail = "; ".join(f"{k}: {_short(v)}" for k, v in info.items())
            else:
                detail = _short(info)
            items.append(f"<li><strong>{_e(name)}</strong>: {_e(detail)}</li>")
        text.append("<p>Models used (provenance):</p><ul>" + "".join(items) + "</ul>")
    else:
        text.append("<p>Models used: none (this result did not come from a trained model).</p>")
    return "\n".join(text)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _software(analysis: Analysis) -> str:
    geom = analysis.input_geometry or {}
    rows = [
        ("Software", f"VertebralFracture {analysis.software_version}"),
        ("Result schema", SCHEMA_VERSION),
        ("Input", analysis.input_description or "–"),
    ]
    if geom:
        size = "×".join(str(int(s)) for s in geom.get("size_xyz", []))
        spacing = " × ".join(f"{float(s):.3g}" for s in geom.get("spacing_mm", []))
        rows.append(("Input grid", f"{size} voxels, {spacing} mm"))
    for name, info in analysis.models.items():
        version = info.get("version", info.get("sha256", "")) if isinstance(info, Mapping) else info
        rows.append((f"Model {name}", _short(version, 80)))
    if analysis.timings_s:
        rows.append(("Timings", ", ".join(f"{k} {float(v):.1f} s" for k, v in analysis.timings_s.items())))
    body = "".join(f'<tr><td class="name">{_e(k)}</td><td style="text-align:left">{_e(v)}</td></tr>'
                   for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"
