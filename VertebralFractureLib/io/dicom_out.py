"""DICOM outputs for a DICOM input: a Segmentation (SEG) and a Comprehensive 3D Structured Report (SR).

* ``dicom/seg.dcm`` — a binary DICOM Segmentation on the source slices, one segment per vertebra
  (SNOMED CT "Anatomical Structure" / the vertebra's code, as in ``segmentation.seg.nrrd``), its
  status in the segment description ("fractured, Genant 2 wedge", "normal", "not assessable: …"),
  the colour of the 3D view (red fractured, white normal).
* ``dicom/sr.dcm`` — a Comprehensive 3D SR following TID 1500 (Measurement Report): per vertebra a
  volumetric ROI group that references its SEG segment (Genant grade and type, status, fracture
  probability) and, where stage 3 placed keypoints, a planar ROI group whose region is the polygon
  through the six keypoints (SCOORD3D, the body's mid-sagittal outline as measured) with the heights
  Ha, Hm, Hp in mm.

Both reference the source series and the input's study, with new UIDs for each output; the patient
and study modules are copied from the input (never logged). Inputs with empty identifiers (badly
anonymized data) get generated UIDs, with a warning, so that the outputs are still valid DICOM.

Codes without a standard concept (the heights, the Genant grade) use this project's coding scheme
:data:`SCHEME` ("99VFRAC", private codes as DICOM PS3.16 allows, declared in the SR's coding scheme
identification).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.analysis import Analysis, VertebraResult
from VertebralFractureLib.anatomy import vertebra
from VertebralFractureLib.volume import Volume

#: This project's private coding scheme (DICOM PS3.16 8.2: designators starting with 99).
SCHEME = "99VFRAC"
#: Folder of the DICOM outputs inside the result folder.
DICOM_DIR = "dicom"
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
SEG_SERIES_NUMBER = 9701
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SR_SERIES_NUMBER = 9702
#: The six keypoints around the body's mid-sagittal outline (the SR's polygon, closed on the first).
POLYGON_ORDER = ("A_sup", "M_sup", "P_sup", "P_inf", "M_inf", "A_inf")
_HEIGHTS = (("anterior", "VF-HA", "Anterior vertebral body height"),
            ("middle", "VF-HM", "Middle vertebral body height"),
            ("posterior", "VF-HP", "Posterior vertebral body height"))


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def status_text(v: VertebraResult) -> str:
    """The segment description: status, and grade and type where graded (≤ 64 characters)."""
    if v.status == "not assessable":
        return ("not assessable: " + (v.status_reason or ""))[:64]
    text = v.status or "no status"
    if v.genant is not None and v.genant.grade is not None:
        text += f", Genant {v.genant.grade}" + (f" {v.genant.type}" if v.genant.type else "")
    return text[:64]


def prepare_sources(headers: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Copies of the source headers with empty identifiers filled in (one study, series and frame of
    reference UID for all, a SOP instance UID per slice), and the warning that says so."""
    from pydicom.uid import generate_uid

    out = [copy.deepcopy(h) for h in headers]
    filled = []
    for h in out:  # an empty SOP class: the file meta's, else CT Image Storage (the reader took a CT series)
        if not str(h.get("SOPClassUID", "") or "").strip():
            meta = getattr(h, "file_meta", None)
            h.SOPClassUID = str(getattr(meta, "MediaStorageSOPClassUID", "") or "") or CT_IMAGE_STORAGE
            if "SOPClassUID" not in filled:
                filled.append("SOPClassUID")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not all(str(h.get(key, "") or "").strip() for h in out):
            uid = generate_uid()
            for h in out:
                if not str(h.get(key, "") or "").strip():
                    setattr(h, key, uid)
            filled.append(key)
    if not all(str(h.get("SOPInstanceUID", "") or "").strip() for h in out):
        for h in out:
            if not str(h.get("SOPInstanceUID", "") or "").strip():
                h.SOPInstanceUID = generate_uid()
                if hasattr(h, "file_meta"):
                    h.file_meta.MediaStorageSOPInstanceUID = h.SOPInstanceUID
        filled.append("SOPInstanceUID")
    for key in ("PatientID", "PatientName", "StudyID", "AccessionNumber", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "PatientBirthDate", "PatientSex"):
        for h in out:  # type-2 attributes the outputs copy: present, possibly empty
            if key not in h:
                setattr(h, key, "")
    warnings = []
    if filled:
        warnings.append(f"the input's DICOM identifiers are empty ({', '.join(filled)}): the DICOM SEG and SR "
                        "reference generated UIDs, which no archive will match to the input")
    return out, warnings


def _cielab(rgb: tuple[float, float, float]) -> Any:
    """A highdicom CIELab colour from sRGB 0–1."""
    from highdicom.color import CIELabColor

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(c)) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    return CIELabColor(116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z)))


def build_segmentation(analysis: Analysis, labelmap: Volume, sources: Sequence[Any]) -> Any:
    """The DICOM Segmentation of ``labelmap`` (the input's grid, slice k = ``sources[k]``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from VertebralFractureLib import __version__
    from VertebralFractureLib.io.slicer_files import segment_color

    arr = np.asarray(labelmap.array)
    if arr.shape[0] != len(sources):
        raise ValueError(f"the labelmap has {arr.shape[0]} slices, the source series {len(sources)}")
    results = {v.label: v for v in analysis.vertebrae}
    labels = [lab for lab in results if np.any(arr == lab)]
    if not labels:
        raise ValueError("no vertebra was outlined")
    numbers = np.zeros(max(256, int(arr.max()) + 1), np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(name="VertebralFracture", family=codes.DCM.ArtificialIntelligence,
                                                   version=__version__)
    descriptions = []
    for k, lab in enumerate(labels, start=1):
        numbers[lab] = k
        v = results[lab]
        vert = vertebra(lab)
        d = hd.seg.SegmentDescription(
            segment_number=k, segment_label=vert.name,
            segmented_property_category=hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept(vert.snomed_code, "SCT", vert.snomed_meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=vert.name, display_color=_cielab(segment_color(v)))
        d.SegmentDescription = status_text(v)
        descriptions.append(d)
    pixel = numbers[arr.astype(np.int64)]
    return hd.seg.Segmentation(
        source_images=list(sources), pixel_array=pixel, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="VertebralFracture project",
        manufacturer_model_name="VertebralFracture", software_versions=__version__, device_serial_number="0",
        content_description="vertebrae: normal, fractured or not assessable", content_label="VERTEBRAE",
        series_description="VertebralFracture vertebrae (research, not for diagnosis)")


def build_report(analysis: Analysis, segmentation: Any, sources: Sequence[Any]) -> Any:
    """The TID 1500 Comprehensive 3D SR of ``analysis``, referencing ``segmentation``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from VertebralFractureLib import __version__

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="VertebralFracture", manufacturer_name="VertebralFracture project",
            model_name=f"VertebralFracture {__version__}"))
    context = hd.sr.ObservationContext(observer_device_context=device)
    numbers = {int(item.SegmentNumber): str(item.SegmentLabel) for item in segmentation.SegmentSequence}
    by_name = {name: n for n, name in numbers.items()}
    frame_uid = str(sources[0].FrameOfReferenceUID)
    groups: list[Any] = []
    for v in analysis.vertebrae:
        if v.name not in by_name:
            continue
        vert = vertebra(v.label)
        site = hd.sr.FindingSite(anatomic_location=hd.sr.CodedConcept(vert.snomed_code, "SCT", vert.snomed_meaning))
        qualitative = [hd.sr.QualitativeEvaluation(_code("VF-STATUS", "Vertebral fracture assessment"),
                                                   _code(f"VF-{v.status.upper().replace(' ', '-')}", v.status))]
        if v.genant is not None and v.genant.grade is not None:
            qualitative.append(hd.sr.QualitativeEvaluation(
                _code("VF-GENANT", "Genant semiquantitative grade"),
                _code(f"VF-G{v.genant.grade}", f"Genant grade {v.genant.grade}")))
            if v.genant.type:
                qualitative.append(hd.sr.QualitativeEvaluation(
                    _code("VF-TYPE", "Vertebral fracture type"), _code(f"VF-{v.genant.type.upper()}", v.genant.type)))
        measurements = []
        if v.fracture_probability is not None:
            measurements.append(hd.sr.Measurement(_code("VF-PROB", "Fracture probability"),
                                                  float(v.fracture_probability),
                                                  hd.sr.CodedConcept("1", "UCUM", "no units")))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=v.name),
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(segmentation, by_name[v.name]),
            finding_type=hd.sr.CodedConcept(vert.snomed_code, "SCT", vert.snomed_meaning),
            finding_sites=[site], measurements=measurements or None,
            qualitative_evaluations=qualitative))
        if v.keypoints_lps_mm is not None and v.heights_mm:
            kp = v.keypoints_lps_mm
            ring = [kp[k] for k in POLYGON_ORDER if k in kp]
            points = np.array([*ring, ring[0]], float)  # closed: the body's mid-sagittal outline through the six
            heights = [hd.sr.Measurement(_code(code, meaning), float(v.heights_mm[key]), codes.UCUM.Millimeter)
                       for key, code, meaning in _HEIGHTS if v.heights_mm.get(key) is not None]
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{v.name} keypoints"),
                referenced_region=hd.sr.ImageRegion3D(hd.sr.GraphicTypeValues3D.POLYGON, points, frame_uid),
                finding_type=hd.sr.CodedConcept(vert.snomed_code, "SCT", vert.snomed_meaning),
                finding_sites=[site], measurements=heights or None))
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("77477000", "SCT", "Computed Tomography"),
        imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, segmentation], content=report, series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="VertebralFracture project", is_complete=True, is_final=False, is_verified=False,
        series_description="VertebralFracture findings (research, not for diagnosis)")
    _declare_scheme(sr)
    return sr


def _declare_scheme(ds: Any) -> None:
    """Name this project's private coding scheme in the Coding Scheme Identification Sequence."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "VertebralFracture project codes"
    item.CodingSchemeResponsibleOrganization = "VertebralFracture project"
    seq = list(getattr(ds, "CodingSchemeIdentificationSequence", []))
    seq.append(item)
    ds.CodingSchemeIdentificationSequence = DicomSequence(seq)


def write_dicom_outputs(analysis: Analysis, labelmap: Volume | None, headers: Sequence[Any], folder: Path) -> list[str]:
    """Write ``seg.dcm`` and ``sr.dcm`` into ``folder`` (created); returns warnings.

    Raises:
        ValueError: nothing to write (no labelmap, no vertebra outlined, the grid is not the series').
    """
    if labelmap is None:
        raise ValueError("no vertebra segmentation")
    sources, warnings = prepare_sources(headers)
    seg = build_segmentation(analysis, labelmap, sources)
    sr = build_report(analysis, seg, sources)
    folder.mkdir(parents=True, exist_ok=True)
    seg.save_as(folder / SEG_FILE, enforce_file_format=True)
    sr.save_as(folder / SR_FILE, enforce_file_format=True)
    return warnings


__all__ = ["DICOM_DIR", "SCHEME", "SEG_FILE", "SR_FILE", "build_report", "build_segmentation", "prepare_sources",
           "status_text", "write_dicom_outputs"]
