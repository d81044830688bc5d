"""Sagittal report images: one vertebra on its mid-sagittal plane with keypoints and heights.

The slice is resampled from the CT on a plane through the vertebra, spanned by the spine's
superior direction and the anterior direction at that vertebra, both in LPS patient coordinates
(mapped to voxels through the image's direction matrix, so oblique scans are shown upright):

* with keypoints, the plane is the one the heights were measured on: superior = mean superior
  endplate point − mean inferior endplate point, anterior = mean anterior − mean posterior point;
* otherwise superior follows the spine between the neighbouring centroids (or the patient's
  superior axis) and anterior is the patient's anterior axis made perpendicular to it.

Displayed with anterior on the left and superior up, bone window (W 1500 / L 400).

Also the flat lateral projection used instead of the 3D picture where OpenGL is unavailable.
matplotlib's Agg canvas is used directly (no pyplot, no global state, no display).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from VertebralFractureLib.analysis import KEYPOINT_NAMES
from VertebralFractureLib.anatomy import FRACTURED_COLOR
from VertebralFractureLib.sagittal import ANTERIOR, SUPERIOR, local_spine_axis, sample_plane, unit

if TYPE_CHECKING:  # pragma: no cover
    from VertebralFractureLib.analysis import Analysis, VertebraResult

#: Bone window (width, level) in HU.
BONE_WINDOW: tuple[float, float] = (1500.0, 400.0)
#: Half the side of the square field shown around the vertebra (mm).
HALF_FIELD_MM = 40.0
#: Pixel size of the resampled slice (mm).
PIXEL_MM = 0.5
_HEIGHT_COLORS = {"A": "#ffb000", "M": "#40e0ff", "P": "#7cff5a"}


def new_figure(width_in: float, height_in: float, dpi: int = 100) -> tuple[Any, Any]:
    """A matplotlib figure on an Agg canvas with one axes filling it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    return fig, ax


def sagittal_frame(analysis: Analysis, v: VertebraResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, superior unit vector and anterior unit vector (LPS) of a vertebra's sagittal plane."""
    centre = np.asarray(v.centroid_lps_mm, dtype=float)
    sup = ant = None
    if v.keypoints_lps_mm is not None:
        kp = {k: np.asarray(p, dtype=float) for k, p in v.keypoints_lps_mm.items()}
        sup = np.mean([kp[f"{p}_sup"] for p in "AMP"], axis=0) - np.mean([kp[f"{p}_inf"] for p in "AMP"], axis=0)
        ant = (kp["A_sup"] + kp["A_inf"]) / 2 - (kp["P_sup"] + kp["P_inf"]) / 2
    else:
        sup = local_spine_axis(v.label, {u.label: u.centroid_lps_mm for u in analysis.vertebrae})
        ant = ANTERIOR
    sup_u = unit(sup, SUPERIOR)
    ant_u = unit(ant - np.dot(ant, sup_u) * sup_u, None)
    if ant_u is None:  # anterior parallel to superior: fall back to the patient axes
        sup_u, ant_u = SUPERIOR.copy(), ANTERIOR.copy()
    if v.keypoints_lps_mm is not None:  # move the plane (not its centre) onto the keypoints
        normal = np.cross(sup_u, ant_u)
        kp_mean = np.mean([np.asarray(v.keypoints_lps_mm[k], dtype=float) for k in KEYPOINT_NAMES], axis=0)
        centre = centre + np.dot(kp_mean - centre, normal) * normal
    return centre, sup_u, ant_u


def render_sagittal(analysis: Analysis, label: int | str, size_in: tuple[float, float] = (3.4, 3.4),
                    dpi: int = 100) -> bytes:
    """PNG of one vertebra's sagittal slice with mask outline, keypoints, heights and grade.

    Args:
        analysis: the analysis (``image`` gives the CT; without it the labelmap or a black
            background is shown).
        label: VerSe label or name ("L1") of a vertebra in the analysis.
        size_in: figure size in inches.
        dpi: resolution.

    Raises:
        KeyError: when the vertebra is not in the analysis.
    """
    v = analysis.vertebra(label)
    centre, sup, ant = sagittal_frame(analysis, v)
    half = HALF_FIELD_MM
    fig, ax = new_figure(*size_in, dpi=dpi)
    fig.patch.set_facecolor("black")
    extent = (-half, half, -half, half)
    width, level = BONE_WINDOW
    if analysis.image is not None:
        ct = sample_plane(analysis.image, centre, sup, ant, half_mm=HALF_FIELD_MM, pixel_mm=PIXEL_MM, order=1, fill=-1024.0)
        ax.imshow(ct, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, origin="lower",
                  extent=extent, interpolation="bilinear")
    else:
        ax.imshow(np.zeros((2, 2)), cmap="gray", vmin=0, vmax=1, origin="lower", extent=extent)
    fractured = v.status == "fractured"
    outline = "#ff3030" if fractured else "#30c8ff"
    if analysis.labelmap is not None:
        lab = sample_plane(analysis.labelmap, centre, sup, ant, half_mm=HALF_FIELD_MM, pixel_mm=PIXEL_MM, order=0, fill=0)
        mask = (lab == v.label).astype(float)
        if mask.any() and not mask.all():
            coords = np.linspace(-half, half, mask.shape[0])
            ax.contour(coords, coords, mask, levels=[0.5], colors=[outline], linewidths=1.2)
    if v.keypoints_lps_mm is not None:
        _draw_keypoints(ax, v, centre, sup, ant)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_axis_off()
    _annotate(ax, v, half)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor())
    return buf.getvalue()


def _draw_keypoints(ax: Any, v: VertebraResult, centre: np.ndarray, sup: np.ndarray, ant: np.ndarray) -> None:
    def plane_xy(p: np.ndarray) -> tuple[float, float]:
        d = np.asarray(p, dtype=float) - centre
        return -float(np.dot(d, ant)), float(np.dot(d, sup))

    heights = v.heights_mm or {}
    for p, name in zip("AMP", ("anterior", "middle", "posterior")):
        (x0, y0), (x1, y1) = plane_xy(v.keypoints_lps_mm[f"{p}_sup"]), plane_xy(v.keypoints_lps_mm[f"{p}_inf"])
        color = _HEIGHT_COLORS[p]
        ax.plot([x0, x1], [y0, y1], "-", color=color, linewidth=1.4)
        ax.plot([x0, x1], [y0, y1], "o", color=color, markersize=3.5, markeredgecolor="black", markeredgewidth=0.5)
        if name in heights and heights[name] is not None:
            ax.text((x0 + x1) / 2, min(y0, y1) - 2.0, f"H{p.lower()} {heights[name]:.1f}", color=color,
                    fontsize=6.5, ha="center", va="top")


def _annotate(ax: Any, v: VertebraResult, half: float) -> None:
    title = v.name
    if v.status == "fractured":
        title += " fractured"
    elif v.status == "normal":
        title += " normal"
    if v.genant is not None:
        title += f", Genant {v.genant.grade}" + (f" {v.genant.type}" if v.genant.type else "")
    elif not v.complete:
        title += ", not graded (cut by field of view)"
    color = "#ff5050" if v.status == "fractured" else "white"
    box = {"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 2}
    ax.text(-half + 2, half - 2, title, color=color, fontsize=8, fontweight="bold", ha="left", va="top", bbox=box)
    if v.keypoint_method is not None:  # learned (2D M-SCN) or measured on the mask (geometric)
        ax.text(-half + 2, -half + 2, f"keypoints: {v.keypoint_method}", color="white", fontsize=6,
                ha="left", va="bottom", bbox=box)
    ax.text(-half + 2, 0, "A", color="yellow", fontsize=8, ha="left", va="center")
    ax.text(half - 2, 0, "P", color="yellow", fontsize=8, ha="right", va="center")
    ax.plot([half - 14, half - 4], [-half + 4, -half + 4], "-", color="white", linewidth=2)
    ax.text(half - 9, -half + 5, "10 mm", color="white", fontsize=6, ha="center", va="bottom")


# ---------------------------------------------------------------------------------------- 3D fallback
def lateral_projection_png(analysis: Analysis, size: tuple[int, int] = (800, 1000)) -> bytes:
    """A flat lateral projection (matplotlib) of the vertebrae, for machines without OpenGL.

    Voxels (or centroids, without a labelmap) are projected onto the patient's sagittal plane:
    anterior left, superior up, fractured red, normal white.
    """
    from VertebralFractureLib.picture import BACKGROUND, annotation, caption, vertebra_color

    w, h = size
    fig, ax = new_figure(w / 100.0, h / 100.0)
    ax.set_facecolor(BACKGROUND)
    fig.patch.set_facecolor(BACKGROUND)
    by_label = {v.label: v for v in analysis.vertebrae}
    labelmap = analysis.labelmap
    if labelmap is not None and np.any(labelmap.array):
        zyx = np.argwhere(labelmap.array > 0)
        values = labelmap.array[tuple(zyx.T)]
        lps = labelmap.zyx_to_lps(zyx)
        px = max(labelmap.spacing)  # coarse enough to leave no holes between voxel rows
        u, t = -lps[:, 1], lps[:, 2]  # anterior to the left, superior up
        cols = np.round((u - u.min()) / px).astype(int)
        rows = np.round((t - t.min()) / px).astype(int)
        rgba = np.zeros((rows.max() + 1, cols.max() + 1, 4))
        labels = sorted((int(x) for x in np.unique(values)),
                        key=lambda lab: vertebra_color(by_label.get(lab)) == FRACTURED_COLOR)  # red on top
        for label in labels:
            sel = values == label
            rgba[rows[sel], cols[sel]] = (*vertebra_color(by_label.get(label)), 1.0)
        extent = (u.min() - px / 2, u.max() + px / 2, t.min() - px / 2, t.max() + px / 2)
        ax.imshow(rgba, origin="lower", extent=extent, interpolation="nearest")
    else:
        for v in analysis.vertebrae:
            c = v.centroid_lps_mm
            ax.scatter([-c[1]], [c[2]], s=400, color=vertebra_color(v))
    for v in analysis.vertebrae:
        ax.annotate(annotation(v), (0.03, v.centroid_lps_mm[2]), xycoords=("axes fraction", "data"),
                    ha="left", va="center", color="#ff5a5a" if v.status == "fractured" else "#d9d9d9",
                    fontsize=9)
    ax.set_axis_off()
    _fit_equal_aspect(ax, w / h)
    fig.text(0.02, 0.01, caption(analysis, fallback=True), color="#cccccc", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor())
    return buf.getvalue()


def _fit_equal_aspect(ax: Any, aspect: float) -> None:
    """Limits with 1 mm = 1 mm on both axes, a label column on the left and a caption strip below."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    x0 -= 1.2 * (x1 - x0)  # room for the labels (anterior side)
    x1 += 0.2 * (x1 - x0) / 2.4
    y0 -= 0.10 * (y1 - y0)
    y1 += 0.05 * (y1 - y0)
    width, height = x1 - x0, y1 - y0
    if width / height < aspect:
        grow = (height * aspect - width) / 2
        x0, x1 = x0 - grow, x1 + grow
    else:
        grow = (width / aspect - height) / 2
        y0, y1 = y0 - grow, y1 + grow
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
