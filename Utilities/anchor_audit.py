"""Stage 1's names with and without the anatomical anchors, and each anchor against the truth.

Usage:
    python Utilities/anchor_audit.py SYNTH_DIR [SYNTH_DIR ...] [-o audit.jsonl]

For every case of a VerSe-layout folder with true centroids (a SynthSpine folder), stage 1 runs once
with anchors (as the pipeline names) and once without (the network's names alone). A name is right
when the true centroid of that name lies within 20 mm (the VerSe identification rule). Each anchor
is checked against the true label of the vertebra it names: right (cost 0), met only as a variant
(e.g. the last rib put on a true T11) or wrong; with its centroid's distance to the cranial and
caudal end of the image. Rib-anchor rules are chosen on folders like these, never on the held-out
test set (docs/localization.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np


def audit_case(case) -> dict:
    """One VerSe-layout case: names right with and without anchors, and each anchor's verdict."""
    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.anchors import find_anchors
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.io.verse import read_centroids
    from VertebralFractureLib.localize import localize

    ct = read_image(case.ct).volume
    truth = read_centroids(case.centroids, ct)
    reports = []

    def anchors_of(positions: np.ndarray):
        reports.append(find_anchors(ct, positions))
        return reports[-1]

    named = localize(ct, anchors=anchors_of)
    plain = localize(ct, anchors=None)

    def right(found) -> int:
        return int(sum(c.label in truth and np.linalg.norm(truth[c.label] - c.position_lps) <= 20.0 for c in found))

    def true_label(position: np.ndarray) -> int | None:
        if not truth:
            return None
        lab = min(truth, key=lambda k: np.linalg.norm(truth[k] - position))
        return lab if np.linalg.norm(truth[lab] - position) <= 20.0 else None

    z = [ct.zyx_to_lps(np.array(ix, float))[2] for ix in itertools.product(*[(0, s - 1) for s in ct.array.shape])]
    top, bottom = max(z), min(z)
    positions = [c.position_lps for c in named]
    verdicts = []
    for a in (reports[-1].anchors if reports else []):
        if not a.names:  # the consequence for a rib-free neighbour, not a name
            continue
        lab = true_label(positions[a.index])
        cost = a.cost(lab) if lab is not None else 1.0
        verdicts.append({"kind": a.kind, "detail": a.detail, "confidence": float(a.confidence), "says": a.expected_name,
                         "true": vertebra(lab).name if lab is not None else None,
                         "verdict": "right" if cost == 0 else ("variant" if cost < 1 else "wrong"),
                         "to_top_mm": round(float(top - positions[a.index][2]), 1),
                         "to_bottom_mm": round(float(positions[a.index][2] - bottom), 1)})
    return {"case": case.subject, "vertebrae": len(truth), "right_with_anchors": right(named),
            "right_without": right(plain), "anchors": verdicts}


def main(argv: list[str] | None = None) -> int:
    from VertebralFractureLib.io.verse import list_cases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="VerSe-layout folders with true centroids")
    ap.add_argument("-o", "--output", type=Path, default=None, help="write one JSON line per case here")
    args = ap.parse_args(argv)
    if args.output is not None and args.output.exists():
        ap.error(f"{args.output} exists; choose another name")
    rows = []
    out = args.output.open("w") if args.output is not None else None
    try:
        for folder in args.folders:
            for case in list_cases(folder):
                row = audit_case(case)
                rows.append(row)
                verdicts = ", ".join(f"{a['kind']} {a['verdict']}" for a in row["anchors"]) or "no anchor"
                print(f"{folder.name}/{row['case']}: {row['right_with_anchors']}/{row['vertebrae']} named right "
                      f"with anchors, {row['right_without']} without ({verdicts})", flush=True)
                if out is not None:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
    finally:
        if out is not None:
            out.close()
    n = sum(r["vertebrae"] for r in rows)
    kinds = [a["verdict"] for r in rows for a in r["anchors"]]
    print(f"{len(rows)} cases, {n} vertebrae: named right {sum(r['right_with_anchors'] for r in rows)} with anchors, "
          f"{sum(r['right_without'] for r in rows)} without; anchors right {kinds.count('right')}, "
          f"variant {kinds.count('variant')}, wrong {kinds.count('wrong')}; "
          f"cases with an anchor {sum(bool(r['anchors']) for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
