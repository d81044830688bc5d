"""Check that an analysis output folder (by default ``demo-output/``) holds the whole output contract.

Usage:
    python Utilities/check_demo_output.py [FOLDER]

Every contract file (ARCHITECTURE.md §3) must be present and non-empty, ``analysis.json`` must
parse and list at least one vertebra with a Genant grade. Exits 0 when all holds, else 1 with one
line on stderr naming everything that is missing or wrong. Standard library only, so CI can run it
with any Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: The files ``vertebral-fracture analyze`` (and ``demo``) writes, in the contract's order.
CONTRACT = (
    "analysis.json", "vertebrae.nii.gz", "fracture.nii.gz", "segmentation.seg.nrrd", "centroids.mrk.json",
    "keypoints.mrk.json", "centroids_ctd.json", "report.csv", "report.html", "spine3d.png",
)


def problems(folder: Path) -> list[str]:
    """What is missing or wrong in ``folder``; empty when it holds the whole contract."""
    if not folder.is_dir():
        return [f"no output folder {folder}"]
    found: list[str] = []
    missing = [name for name in CONTRACT if not (folder / name).is_file()]
    empty = [name for name in CONTRACT if (folder / name).is_file() and (folder / name).stat().st_size == 0]
    if missing:
        found.append("missing " + ", ".join(missing))
    if empty:
        found.append("empty " + ", ".join(empty))
    if "analysis.json" in missing or "analysis.json" in empty:
        return found
    try:
        data = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [*found, f"analysis.json does not parse ({err})"]
    vertebrae = data.get("vertebrae") if isinstance(data, dict) else None
    if not isinstance(vertebrae, list) or not vertebrae:
        found.append("analysis.json lists no vertebrae")
    elif not any(isinstance(v, dict) and isinstance(v.get("genant"), dict) and v["genant"].get("grade") is not None
                 for v in vertebrae):
        found.append(f"analysis.json: none of its {len(vertebrae)} vertebrae has a Genant grade")
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python Utilities/check_demo_output.py [FOLDER]", file=sys.stderr)
        return 2
    folder = Path(args[0]) if args else Path("demo-output")
    found = problems(folder)
    if found:
        print(f"check_demo_output: {folder}: " + "; ".join(found), file=sys.stderr)
        return 1
    data = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    graded = sum(isinstance(v, dict) and isinstance(v.get("genant"), dict) and v["genant"].get("grade") is not None
                 for v in data["vertebrae"])
    print(f"check_demo_output: {folder}: all {len(CONTRACT)} contract files present, "
          f"{len(data['vertebrae'])} vertebrae, {graded} graded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
