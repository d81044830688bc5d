"""Builders of small synthetic inputs and analyses with known truth, for tests."""

from __future__ import annotations

import json

import numpy as np

from VertebralFractureLib.analysis import Analysis, VertebraResult
from VertebralFractureLib.genant import grade, heights_from_keypoints
from VertebralFractureLib.volume import Volume


def oblique_direction(angle_deg: float = 20.0) -> np.ndarray:
    """An orthonormal direction matrix rotated about two axes (an oblique acquisition)."""
    a, b = np.deg2rad(angle_deg), np.deg2rad(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def make_analysis(
    labels: tuple[int, ...] = (19, 20, 21),
    fractured: tuple[int, ...] = (20,),
    spacing: tuple[float, float, float] = (1.0, 1.0, 2.0),
    direction: np.ndarray | None = None,
) -> Analysis:
    """A small analysis: box-shaped vertebral bodies stacked along z, one labelled box each.

    The fractured ones lose 35 % of their anterior height (a grade 2 wedge).
    """
    nz = 12 * len(labels) + 8
    shape = (nz, 48, 40)  # z, y, x
    ct = np.full(shape, -100, dtype=np.int16)
    lab = np.zeros(shape, dtype=np.uint8)
    frac = np.zeros(shape, dtype=np.uint8)
    vol = Volume(ct, spacing=spacing, origin=(-20.0, -30.0, 100.0),
                 direction=np.eye(3) if direction is None else direction)
    results = []
    # caudal vertebrae at lower z (superior = +z in LPS): cranial label at the top
    for k, label in enumerate(labels):
        z0 = nz - 4 - 12 * (k + 1)
        sl = (slice(z0 + 1, z0 + 11), slice(14, 34), slice(10, 30))
        ct[sl] = 250
        lab[sl] = label
        frac[sl] = 2 if label in fractured else 1
        centre_zyx = np.array([z0 + 5.5, 23.5, 19.5])
        c = vol.zyx_to_lps(centre_zyx)
        sup = 10 * spacing[2] / 2 * vol.direction[:, 2]
        ant = -10 * spacing[1] * vol.direction[:, 1]  # anterior = -y in LPS for identity direction
        scale_a = 0.65 if label in fractured else 1.0
        kp = {
            "A_sup": c + ant + sup * scale_a, "A_inf": c + ant - sup * scale_a,
            "M_sup": c + sup, "M_inf": c - sup,
            "P_sup": c - ant + sup, "P_inf": c - ant - sup,
        }
        kp = {k2: tuple(float(x) for x in v) for k2, v in kp.items()}
        h = heights_from_keypoints(kp)
        results.append(VertebraResult(
            label=label, centroid_lps_mm=tuple(c), localization_score=0.9, complete=True,
            status="fractured" if label in fractured else "normal",
            fracture_probability=0.93 if label in fractured else 0.04,
            keypoints_lps_mm=kp, heights_mm=h, genant=grade(h), keypoint_method="test",
        ))
    return Analysis(
        vertebrae=results, input_geometry=vol.geometry_dict(),
        labelmap=vol.with_array(lab), fracture_map=vol.with_array(frac), image=vol,
        timings_s={"localize": 0.1}, warnings=[], models={}, input_description="synthetic test volume",
    )


def tiny_verse_folder(root, n_cases: int = 2):
    """Bright boxes for T12–L2 in a soft-tissue block with fat at its left and right sides (a CT's
    Hounsfield scale, as the input check asks), in the VerSe layout, with true centroids, vertebra
    masks and fracture maps (L1 fractured)."""
    from VertebralFractureLib.io.readers import write_volume
    from VertebralFractureLib.io.verse import VerseCase, write_centroids

    for k in range(n_cases):
        arr = np.full((60, 40, 40), 40, np.int16)  # z, y, x at 2 mm: 80 × 80 × 120 mm
        arr[:, :, :2] = arr[:, :, -2:] = -100
        vol = Volume(arr, (2.0, 2.0, 2.0), (-40.0, -40.0, -60.0 + 4 * k))
        cents = {}
        mask = np.zeros(arr.shape, np.uint8)
        for j, label in enumerate((19, 20, 21)):
            z0 = 40 - 15 * j
            arr[z0 - 5:z0 + 5, 12:28, 14:26] = 400
            mask[z0 - 5:z0 + 5, 12:28, 14:26] = label
            cents[label] = vol.zyx_to_lps([z0 - 0.5, 19.5, 19.5])
        case = VerseCase(root, f"sub-tiny{k}")
        case.ct.parent.mkdir(parents=True, exist_ok=True)
        case.centroids.parent.mkdir(parents=True, exist_ok=True)
        write_volume(vol.with_array(arr), case.ct)
        write_centroids(case.centroids, cents, vol)
        write_volume(vol.with_array(mask), case.vertebra_mask)
        write_volume(vol.with_array(np.where(mask == 20, 2, np.where(mask > 0, 1, 0)).astype(np.uint8)), case.fracture_mask)
        entries = []
        for j, (lab, name) in enumerate(((19, "T12"), (20, "L1"), (21, "L2"))):
            z0 = 40 - 15 * j  # the box's endplates are voxel edges; keypoints 2 voxels inside its walls
            kp = {f"{p}_{e}": [float(c) for c in vol.zyx_to_lps([z, y, 19.5])]
                  for p, y in (("A", 13.5), ("M", 19.5), ("P", 25.5)) for e, z in (("sup", z0 + 4.5), ("inf", z0 - 5.5))}
            entries.append({"label": lab, "name": name, "complete": True, "grade": 2 if lab == 20 else 0, "ratio": 1.0,
                            "keypoints_lps_mm": kp, "heights_mm": {"anterior": 20.0, "middle": 20.0, "posterior": 20.0}})
        case.genant.write_text(json.dumps(entries))
    return root


def load_utility(name: str):
    """A script of ``Utilities/`` (``check_demo_output``, ``train_all``, …) loaded as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "Utilities" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
