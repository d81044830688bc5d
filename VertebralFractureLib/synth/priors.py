"""Anatomical and CT priors of SynthSpine: numbers only, with their provenance.

Data-driven columns were computed once with :mod:`VertebralFractureLib.synth.derive_priors` from
``../shared/data`` and then rounded (and smoothed across neighbouring levels where a level had few
samples); literature columns are adult means. None of the underlying data is stored here.

Provenance of the per-level table :data:`LEVELS`:

* ``icd``/``icd_sd`` — distance from this vertebra's centroid to the next one (mm), median and
  robust spread over the VerSe'19/'20 centroid lists (193 spines, 39–150 per level). L5→S1 and L6
  (few samples) from the L5–L6 value.
* ``lordosis``/``lordosis_sd`` — signed sagittal angle (deg, lordosis positive) between the
  centroid segments above and below this vertebra, VerSe medians; spreads shrunk to 0.6× the
  robust spread (the raw spread includes annotation and posture noise). L5 from the 19 VerSe spines
  with L6 and the L5/S1 segmental lordosis of the literature (~15°).
* ``ha_hp``, ``hm_hp`` — anterior/posterior and middle/posterior height ratios, medians of the
  neuro-ml six-point annotations (100 chest CTs, 2 experts; C4–L2); C2/C3 and L3–L5 from lumbar
  morphometry (Panjabi et al., Spine 1992; Zhou et al., Eur Spine J 2000: L4/L5 taller anteriorly).
* ``hp_icd`` — posterior body height / local inter-centroid distance: mean of the neuro-ml ratio
  (scale-free, same voxel units) and the whole-spine mask sub-sample001 body height ratio; lumbar
  values lowered to the literature disc heights (L3–L5 discs 9–12 mm).
* ``width``, ``depth`` — vertebral-body width and depth (mm): thoracic/lumbar from the
  vertebral-body sub-regions of the sub-sample001 mask (smoothed), cervical from Panjabi et al.,
  Spine 1991 (cervical) — consistent with Panjabi 1991 (thoracic) and 1992 (lumbar).
* posterior elements (``canal_w``, ``canal_d``, ``ped_w``, ``ped_h``, ``sp_len``, ``sp_angle``,
  ``sp_h``, ``tp_span``, ``tp_angle``, ``lam_t``) — literature means (Panjabi 1991/1992; Zindrick et
  al., Spine 1987 pedicle dimensions): canal width/depth, pedicle width/height, spinous process
  length, downward angle and cranio-caudal height, transverse-process tip-to-tip span and backward
  angle, lamina thickness.

HU ranges (:data:`TISSUE_HU`) follow the product brief and standard CT tables. Cortical bone is the
*material* value: the shells are 0.7–1.4 mm thick, so after the point-spread function and partial
volume they appear at 400–1200 HU as in real scans (checked by the realism report); the real-CT check
(``derive_priors`` on the LIDC-IDRI and Colorectal-Liver-Metastases volumes) gave fat −114…−56 HU
(p5–p95), soft tissue median 41 HU (non-contrast) / 65 HU (portal venous), bone (> 200 HU) median
270–351 HU, outside air −1000…−950 HU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelPrior:
    """Mean adult geometry of one vertebral level (lengths in mm, angles in degrees)."""

    name: str
    icd: float
    icd_sd: float
    lordosis: float
    lordosis_sd: float
    ha_hp: float
    hm_hp: float
    hp_icd: float
    width: float
    depth: float
    canal_w: float
    canal_d: float
    ped_w: float
    ped_h: float
    sp_len: float
    sp_angle: float
    sp_h: float
    tp_span: float
    tp_angle: float
    lam_t: float


_COLUMNS = ("icd icd_sd lordosis lordosis_sd ha_hp hm_hp hp_icd width depth canal_w canal_d ped_w ped_h "
            "sp_len sp_angle sp_h tp_span tp_angle lam_t").split()

# name icd   sd   lord  sd   Ha/Hp  Hm/Hp Hp/ICD     W     D  cw    cd    pw    ph spL spA spH tpS tpA lamT
_TABLE = """
C1    18.1  3.0   0.0  4.0   1.00   0.90   0.80   20.0   11.0   28    17   6.0   8.0   10    0    8   78    0  5.0
C2    18.5  1.9  -6.0  6.0   0.98   0.88   0.86   17.0   16.0   24    15   7.0   9.0   30   15   12   56   10  5.0
C3    16.3  1.9   2.5  4.5   1.00   0.88   0.86   17.0   15.5   24    14   5.0   7.0   15   15    7   52   10  3.0
C4    16.1  1.6   3.3  3.5   1.00  0.875   0.86   18.0   16.0   24    14   5.0   7.0   15   15    7   52   10  3.0
C5    16.2  1.4   1.5  4.5   0.99   0.87   0.86   19.0   16.0   25    14   5.5   7.0   17   15    7   54   10  3.0
C6    17.5  2.0   8.5  6.0   0.95   0.87   0.86   21.0   16.5   25    14   6.0   7.0   20   18    8   56   10  3.5
C7    18.7  1.9   3.5  5.0   0.98   0.86   0.86   24.0   17.0   24    14   6.5   7.5   32   22    9   66   15  4.0
T1    20.6  1.8  -3.3  3.8  0.955  0.853   0.90   28.0   18.0   21    15   8.0  10.0   36   45   10   76   30  5.0
T2    21.4  1.4  -0.5  2.7  0.963  0.857  0.915   28.0   20.0   18    15   6.5  11.0   38   50   10   72   35  5.0
T3    21.7  1.6  -5.5  2.5  0.945  0.845   0.92   28.0   23.0   17    15   5.5  11.5   40   60   10   68   35  5.0
T4    22.0  1.6  -5.5  2.5   0.93  0.848   0.93   28.0   25.0   17    15   5.0  12.0   40   65   10   66   35  5.0
T5    22.9  1.9  -5.6  2.5  0.906  0.845   0.94   29.0   26.0   17    15   5.0  12.0   40   68   10   64   35  5.0
T6    23.1  2.0  -5.0  2.5  0.885  0.845  0.935   31.0   27.0   17    15   5.0  12.5   40   70   10   62   35  5.0
T7    23.8  2.0  -6.6  2.6   0.88  0.845  0.925   32.0   28.5   17    15   5.5  13.0   40   70   10   60   35  5.0
T8    24.2  1.7  -3.2  2.4  0.895  0.847   0.91   33.0   30.0   17    15   6.0  13.5   38   65   10   58   35  5.0
T9    25.1  1.9  -2.7  2.4  0.925  0.855  0.895   35.0   31.5   17  15.5   6.5  14.0   36   58   10   56   30  5.5
T10   27.0  1.9  -1.8  2.5  0.947  0.863   0.89   37.0   32.0   18    16   7.0  15.0   34   50   10   54   30  5.5
T11   29.6  1.8  -1.6  2.5  0.912  0.850   0.88   39.0   33.0   19  16.5   7.5  16.0   32   30   12   48   25  6.0
T12   31.5  2.4   0.0  2.3  0.917  0.858  0.885   41.0   34.0   20    17   8.0  16.0   30   15   14   42   20  6.0
T13   31.5  2.4   0.0  2.3  0.917  0.858  0.885   41.0   34.0   20    17   8.0  16.0   30   15   14   42   20  6.0
L1    33.0  2.5  -1.8  2.4  0.939  0.863   0.87   43.0   35.0   22    17   8.5  15.0   26    8   17   70   10  6.5
L2    34.2  2.6   3.3  3.5   0.96  0.859   0.83   45.0   35.5   22    16   9.0  15.0   26    5   17   78    8  6.5
L3    34.2  3.1   6.8  2.9   1.00   0.86   0.80   47.0   36.0   23  15.5  10.0  15.0   26    5   17   88    5  7.0
L4    32.1  3.3  11.6  4.0   1.04   0.86   0.79   49.0   36.0   24  15.5  12.0  14.0   24    5   16   84    5  7.0
L5    30.0  2.8  16.0  4.4   1.12   0.86   0.78   51.0   35.0   26    16  16.0  14.0   20    5   14   92    5  7.0
L6    30.0  2.8  16.0  4.4   1.10   0.86   0.78   51.0   35.0   26    16  16.0  14.0   20    5   14   92    5  7.0
"""


def _parse(table: str) -> dict[str, LevelPrior]:
    out = {}
    for line in table.strip().splitlines():
        name, *values = line.split()
        if len(values) != len(_COLUMNS):
            raise RuntimeError(f"priors table row {name} has {len(values)} values, expected {len(_COLUMNS)}")
        out[name] = LevelPrior(name, *(float(v) for v in values))
    return out


#: Level name → :class:`LevelPrior`.
LEVELS: dict[str, LevelPrior] = _parse(_TABLE)

#: Sagittal tilt (deg, top of the vertebra towards anterior positive) of each level in supine CT:
#: median direction of the centroid segment from the level below to the level above, VerSe'19/'20
#: centroid lists (39–147 spines per level; ``derive_priors.verse_centroid_stats``). The whole spine
#: is rotated to match these on average (a subject-level deviation is drawn around it).
SUPINE_TILT: dict[str, float] = {
    "C2": 7.6, "C3": 5.0, "C4": 11.9, "C5": 19.7, "C6": 20.8, "C7": 24.4, "T1": 27.4, "T2": 25.9, "T3": 24.7,
    "T4": 20.1, "T5": 13.7, "T6": 9.6, "T7": 3.0, "T8": -2.2, "T9": -4.8, "T10": -7.1, "T11": -9.4, "T12": -10.8,
    "L1": -12.3, "L2": -12.4, "L3": -6.3, "L4": 1.7, "L5": 5.8,
}  # fmt: skip

#: Sacrum (S1) geometry: body width/depth (mm), sacral slope of the S1 endplate (deg from the
#: horizontal, Legaye et al. 1998: 41 ± 8), sacral length and curvature (deg) over S1–S5.
SACRUM: dict[str, float] = {"width": 50.0, "depth": 34.0, "slope": 40.0, "slope_sd": 7.0,
                            "length": 100.0, "curvature": 45.0, "ala_span": 105.0}

#: Normal-shape bounds: normal vertebrae keep every Genant reduction below this value (a margin
#: under the 20 % grade-1 threshold), so normal variation is never recorded as a fracture.
NORMAL_MAX_REDUCTION = 0.17

#: Target height-reduction intervals per Genant grade, kept away from the 20/25/40 % thresholds so
#: the measured grade equals the target grade.
GRADE_REDUCTION: dict[int, tuple[float, float]] = {1: (0.21, 0.24), 2: (0.265, 0.385), 3: (0.42, 0.60)}

#: Tissue HU ranges (subject-level draw, then texture and noise on top).
TISSUE_HU: dict[str, tuple[float, float]] = {
    "trabecular_normal": (150.0, 300.0),
    "trabecular_osteoporotic": (50.0, 150.0),
    "cortical": (800.0, 1500.0),
    "disc": (50.0, 120.0),
    "muscle": (30.0, 70.0),
    "fat": (-120.0, -60.0),
    "lung": (-920.0, -840.0),
    "air": (-1000.0, -1000.0),
    "blood": (30.0, 55.0),
    "blood_contrast": (150.0, 350.0),
    "liver": (45.0, 70.0),
    "liver_contrast": (90.0, 130.0),
    "spleen": (40.0, 55.0),
    "kidney": (25.0, 40.0),
    "kidney_contrast": (120.0, 200.0),
    "csf": (0.0, 15.0),
    "cord": (25.0, 40.0),
    "bowel": (10.0, 40.0),
    "skin": (20.0, 60.0),
    "cartilage": (80.0, 250.0),
    "ligament": (50.0, 90.0),
}
