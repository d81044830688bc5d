"""SynthSpine: synthetic spine CT with exact ground truth (labels, fracture status, keypoints, grades).

Anatomy is built as label maps first (procedural vertebrae stacked along a lordotic/kyphotic
centreline with discs, canal, ribs, pelvis and the surrounding body), intensities second (HU per
tissue with subject-level variation, texture, partial-volume blur, CT noise), in the spirit of
SynthSeg (Billot et al., Medical Image Analysis 2023). Priors come from real annotations
(:mod:`.priors`). Heavy dependencies (SimpleITK, scipy) are imported inside the functions.

Typical use::

    from VertebralFractureLib.synth import SynthConfig, generate_case, generate_dataset
    case = generate_case(seed=1)
    generate_dataset("out", n=20, seed=1)
"""

from __future__ import annotations

from VertebralFractureLib.synth.config import FractureSpec, FractureType, SynthConfig
from VertebralFractureLib.synth.generator import (
    SynthCase,
    case_seed,
    generate_case,
    generate_dataset,
    label_centroids,
    subject_name,
    write_verse_case,
)
from VertebralFractureLib.synth.sample import make_sample

__all__ = [
    "FractureSpec",
    "FractureType",
    "SynthCase",
    "SynthConfig",
    "case_seed",
    "generate_case",
    "generate_dataset",
    "label_centroids",
    "make_sample",
    "subject_name",
    "write_verse_case",
]
