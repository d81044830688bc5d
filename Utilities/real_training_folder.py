#!/usr/bin/env python3
"""A VerSe-layout training folder of the real development cases, for mixing into stage-2 training.

From ``../shared/data`` (DATA_SOURCES.md): the VerSe'19 spine crops with their manual masks and
Genant grades (``real-labelled/``) and the TPTBox L2–L4 crop (``vertebra-crops/``). The CTs and
masks are linked, not copied; a fracture map is written beside each mask from the grades — 1 normal
(grade 0, or no grade), 2 fractured (grade ≥ 2), 3 for grade 1, which stage-2 training never uses
as a crop's centre (a mild deformity is not reliably a fracture, and four consecutive grade-1
vertebrae of one subject taught the network that real bone looks fractured) — and the centroids
from the mask.

``--leave-out SUBJECT`` (repeatable) keeps subjects out, for leave-one-subject-out training: a number
reported on a subject never comes from a model that saw it.

    python Utilities/real_training_folder.py -o data/real-train --leave-out sub-verse008
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"


def real_cases(shared: Path = SHARED) -> dict[str, tuple[Path, Path, dict[int, int]]]:
    """subject → (CT, vertebra mask, {label: Genant grade}) of every real case with CT and mask."""
    out = {}
    labelled = shared / "real-labelled"
    grades = json.loads((labelled / "genant_grades.json").read_text())["grades"] if labelled.is_dir() else {}
    for ct in sorted(labelled.glob("sub-*_ct.nii.gz")):
        subject = ct.name[: -len("_ct.nii.gz")]
        mask = labelled / f"{subject}_seg-vert_msk.nii.gz"
        if mask.exists():
            out[subject] = (ct, mask, {int(k): int(v) for k, v in grades.get(subject, {}).items()})
    crop = shared / "vertebra-crops"
    if (crop / "sub-ct_label-22_ct.nii.gz").exists():  # TPTBox: L3 with parts of L2 and L4; no grades (normal)
        out["sub-tptbox"] = (crop / "sub-ct_label-22_ct.nii.gz", crop / "sub-ct_seg-vert_label-22_msk.nii.gz", {})
    return out


def build(out: Path, leave_out: list[str], shared: Path = SHARED) -> list[str]:
    """Write the folder; returns the subjects in it."""
    from scipy import ndimage

    from VertebralFractureLib.io.readers import read_image, read_labelmap, write_volume
    from VertebralFractureLib.io.verse import write_centroids

    cases = real_cases(shared)
    unknown = sorted(set(leave_out) - set(cases))
    if unknown:
        raise SystemExit(f"unknown subject(s) {unknown}; known: {sorted(cases)}")
    subjects = []
    for subject, (ct, mask, grades) in cases.items():
        if subject in leave_out:
            continue
        raw, der = out / "rawdata" / subject, out / "derivatives" / subject
        raw.mkdir(parents=True, exist_ok=True)
        der.mkdir(parents=True, exist_ok=True)
        for link, target in ((raw / f"{subject}_ct.nii.gz", ct), (der / f"{subject}_seg-vert_msk.nii.gz", mask)):
            if not link.exists():
                os.symlink(target.resolve(), link)
        image = read_image(ct).volume
        labels = read_labelmap(mask, image)
        arr = np.asarray(labels.array)
        frac = np.where(arr > 0, 1, 0).astype(np.uint8)
        for label, grade in grades.items():
            frac[arr == label] = 2 if grade >= 2 else (3 if grade == 1 else 1)
        write_volume(labels.with_array(frac), der / f"{subject}_fracture_msk.nii.gz")
        present = [int(v) for v in np.unique(arr) if v]
        cents = {lab: labels.index_to_lps(np.array(c)[::-1])
                 for lab, c in zip(present, ndimage.center_of_mass(arr > 0, arr, present))}
        write_centroids(der / f"{subject}_seg-vb_ctd.json", cents, image)
        subjects.append(subject)
    return subjects


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--leave-out", action="append", default=[], metavar="SUBJECT")
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    args = p.parse_args(argv)
    subjects = build(args.output, args.leave_out, args.shared)
    print(f"{len(subjects)} real cases in {args.output}: {', '.join(subjects)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
