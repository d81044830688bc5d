"""The demo sample shipped in ``Resources/SampleData`` (regenerable with :func:`make_sample`)."""

from __future__ import annotations

import json
from pathlib import Path

from VertebralFractureLib.synth.config import FractureSpec, SynthConfig

#: Stem of the sample files: ``synthspine-demo_ct.nii.gz`` and its truth files.
SAMPLE_STEM = "synthspine-demo"
SAMPLE_SEED = 20240
#: T10–L4, one grade-2 wedge fracture of L1, 1.0 × 1.0 × 2.0 mm, 140 mm spine reconstruction.
SAMPLE_CONFIG = SynthConfig(
    levels=("T10", "L4"),
    fractures={"L1": FractureSpec(2, "wedge")},
    spacing=(1.0, 1.0, 2.0),
    fov=140.0,
    noise_hu=(5.0, 5.0),
    rotation_deg=(2.0, 2.0, 3.0),
    p_cut=0.0,
    p_scoliosis=0.0,
    p_osteoporotic=1.0,
    p_contrast=0.0,
)


def make_sample(out_dir: str | Path, seed: int = SAMPLE_SEED, config: SynthConfig = SAMPLE_CONFIG) -> dict[str, Path]:
    """Write the demo case: CT, VerSe labelmap, fracture map, centroids and Genant truth.

    Args:
        out_dir: folder to write into (created).
        seed: case seed (the shipped sample uses :data:`SAMPLE_SEED`).
        config: generator configuration (the shipped sample uses :data:`SAMPLE_CONFIG`).

    Returns:
        Paths by role: ``ct``, ``vertebra_mask``, ``fracture_mask``, ``centroids``, ``genant``.
    """
    from VertebralFractureLib.io.verse import write_centroids
    from VertebralFractureLib.synth.generator import _write_volume, generate_case

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case = generate_case(seed, config)
    paths = {
        "ct": out / f"{SAMPLE_STEM}_ct.nii.gz",
        "vertebra_mask": out / f"{SAMPLE_STEM}_seg-vert_msk.nii.gz",
        "fracture_mask": out / f"{SAMPLE_STEM}_fracture_msk.nii.gz",
        "centroids": out / f"{SAMPLE_STEM}_ctd.json",
        "genant": out / f"{SAMPLE_STEM}_genant.json",
    }
    _write_volume(case.ct, paths["ct"])
    _write_volume(case.labelmap, paths["vertebra_mask"])
    _write_volume(case.fracture_map, paths["fracture_mask"])
    write_centroids(paths["centroids"], case.centroids_lps, case.labelmap)
    paths["genant"].write_text(json.dumps(case.truth, indent=1) + "\n", encoding="utf-8")
    return paths
