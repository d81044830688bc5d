"""The VerSe dataset layout and centroid files (``*_ctd.json``).

VerSe centroid files (Sekuboyina et al., VerSe'20) are a JSON list whose first entry may be
``{"direction": ["P", "I", "R"]}`` (the image's axis codes), followed by
``{"label": L, "X": x, "Y": y, "Z": z}`` entries where X, Y, Z are the voxel index along the image's
first, second and third axis multiplied by the spacing (mm from the first voxel's centre). Such
coordinates only mean something together with their image; this module converts them to and from
LPS world millimetres with a reference :class:`Volume`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from VertebralFractureLib.volume import Volume

_AXIS_CODES = {0: ("L", "R"), 1: ("P", "A"), 2: ("S", "I")}


def axis_codes(volume: Volume) -> list[str]:
    """The VerSe/ITK axis codes (e.g. ``["L", "P", "S"]``): the anatomical direction each index axis points to."""
    codes = []
    for col in volume.direction.T:
        k = int(np.argmax(np.abs(col)))
        pos, neg = _AXIS_CODES[k]
        codes.append(pos if col[k] > 0 else neg)
    return codes


def write_centroids(path: str | Path, centroids_lps: dict[int, np.ndarray], reference: Volume) -> None:
    """Write a VerSe ``_ctd.json`` for ``reference`` from LPS centroids (label → [x, y, z] mm)."""
    entries: list[dict] = [{"direction": axis_codes(reference)}]
    for label in sorted(centroids_lps):
        ijk = reference.lps_to_index(np.asarray(centroids_lps[label], dtype=float))
        xyz = ijk * np.asarray(reference.spacing)
        entries.append({"label": int(label), "X": round(float(xyz[0]), 3), "Y": round(float(xyz[1]), 3),
                        "Z": round(float(xyz[2]), 3)})
    Path(path).write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")


def read_centroids(path: str | Path, reference: Volume) -> dict[int, np.ndarray]:
    """Read a VerSe ``_ctd.json`` into LPS centroids (label → [x, y, z] mm) of ``reference``.

    Raises:
        ValueError: when the file is not a VerSe centroid list, or its direction codes disagree
            with the reference image's axes.
    """
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read centroid file {path}: {err}") from err
    if not isinstance(entries, list):
        raise ValueError(f"{path} is not a VerSe centroid list")
    out: dict[int, np.ndarray] = {}
    for e in entries:
        if "direction" in e:
            if list(e["direction"]) != axis_codes(reference):
                raise ValueError(f"{path}: centroid axes {e['direction']} differ from the image's {axis_codes(reference)}")
            continue
        try:
            xyz = np.array([e["X"], e["Y"], e["Z"]], dtype=float)
            label = int(e["label"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad centroid entry {e!r}") from err
        out[label] = reference.index_to_lps(xyz / np.asarray(reference.spacing))
    return out


@dataclass(frozen=True)
class VerseCase:
    """Paths of one subject in a VerSe-layout folder (``rawdata/`` and ``derivatives/``)."""

    root: Path
    subject: str

    @property
    def ct(self) -> Path:
        return self.root / "rawdata" / self.subject / f"{self.subject}_ct.nii.gz"

    def derivative(self, suffix: str) -> Path:
        return self.root / "derivatives" / self.subject / f"{self.subject}_{suffix}"

    @property
    def vertebra_mask(self) -> Path:
        return self.derivative("seg-vert_msk.nii.gz")

    @property
    def centroids(self) -> Path:
        return self.derivative("seg-vb_ctd.json")

    @property
    def fracture_mask(self) -> Path:
        return self.derivative("fracture_msk.nii.gz")

    @property
    def genant(self) -> Path:
        return self.derivative("genant.json")


def list_cases(root: str | Path) -> list[VerseCase]:
    """Subjects of a VerSe-layout folder that have a CT in ``rawdata/``, sorted by name."""
    root = Path(root)
    raw = root / "rawdata"
    if not raw.is_dir():
        raise ValueError(f"{root} is not a VerSe-layout folder (no rawdata/)")
    return [VerseCase(root, d.name) for d in sorted(raw.iterdir()) if d.is_dir() and (d / f"{d.name}_ct.nii.gz").exists()]
