"""``vertebral-fracture``: the command line (thin: parse, call the library, report).

Exit codes: 0 success, 1 unexpected failure, 2 bad command line, 3 unusable input,
4 model not available or damaged, 5 output cannot be written there (exists, is or holds the input,
not writable, disk full), 6 ``batch``: some studies failed (the others are done; see ``batch.csv``),
130 cancelled.
Errors are one line on stderr (``--debug`` shows the traceback); warnings, including those of
third-party libraries, one line each.

Before any work, ``analyze``, ``grade``, ``radiomics`` and ``demo`` check the output path
(:func:`VertebralFractureLib.io.output.check_destination`) and, once the input is read, that it is a
CT they can analyse (:mod:`VertebralFractureLib.sanity`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from VertebralFractureLib import __version__
from VertebralFractureLib.errors import (
    CancelledError,
    InputError,
    ModelIntegrityError,
    ModelNotAvailableError,
    OutputError,
    UsageError,
    VertebralFractureError,
)
from VertebralFractureLib.interrupts import Interrupted, exit_code, signals_as_interrupts

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL, EXIT_EXISTS, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5, 130
#: ``batch``: at least one study failed (the rest are done).
EXIT_SOME_FAILED = 6
#: Exit code of every output problem (the folder exists, is the input, cannot be written).
EXIT_OUTPUT = EXIT_EXISTS
#: Python warnings printed at the end of a command, at most.
MAX_PYTHON_WARNINGS = 5

#: The demo CT shipped in ``Resources/SampleData`` (a SynthSpine case with known truth).
SAMPLE_NAME = "synthspine-demo"


# ---------------------------------------------------------------------------------------- progress
class Progress:
    """Progress reporting: ``bar`` (tqdm on stderr), ``json`` (JSON lines on stdout) or ``none``."""

    def __init__(self, mode: str, stream: TextIO | None = None) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "none"
        if mode not in ("bar", "json", "none"):
            raise ValueError(f"progress must be auto, bar, json or none; got {mode!r}")
        self.mode = mode
        self.stream = stream or sys.stdout
        self._bar: Any = None
        self._stage: str | None = None

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.mode == "json":
            self.emit({"stage": stage, "fraction": round(float(fraction), 4), "message": message})
        elif self.mode == "bar":
            from tqdm import tqdm

            if stage != self._stage:
                self.close()
                self._stage = stage
                self._bar = tqdm(total=100, desc=stage, file=sys.stderr, leave=True,
                                 bar_format="{desc:>18}: {percentage:3.0f}%|{bar}| {postfix}")
            self._bar.n = int(round(100 * fraction))
            self._bar.set_postfix_str(message, refresh=True)

    def emit(self, obj: dict[str, Any]) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps(obj) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------------------------- commands
def _common_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (must not exist, see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the networks run")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"],
                   help="progress display: bars on a terminal, JSON lines for programs (default: auto)")


def _radiomics_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--radiomics", action="store_true",
                   help="also run the radiomics classifier (seed 001) on the vertebra segmentation: "
                   "radiomics_fracture_probability per vertebra")
    p.add_argument("--slice-classifier", action="store_true",
                   help="also run the slice classifier (seed 000) on each vertebra's mid-sagittal and mid-axial "
                   "slice: slice_fracture_probability per vertebra")


def _keypoints_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keypoints", default="auto", choices=["auto", "learned", "geometric"],
                   help="how the Genant keypoints are placed: the learned 2D M-SCN where its model is installed "
                   "and confident, else measured on the mask (auto, default); only the network (learned); "
                   "only the mask (geometric)")


def _bone_growth_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-bone-growth", dest="bone_growth", action="store_false",
                   help="keep stage 2's outlines as the network drew them, without completing them into the "
                   "bone they touch (the posterior elements; docs/segmentation.md)")


def _dicom_out_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-dicom-out", dest="dicom_out", action="store_false",
                   help="for a DICOM input, do not write dicom/seg.dcm (DICOM Segmentation) and dicom/sr.dcm "
                   "(TID 1500 Structured Report) beside the other results (written by default)")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _check_output(path: Path, overwrite: bool, *inputs: Path | None) -> None:
    """The output path is safe and writable (see ``check_destination``); raises ``OutputError``."""
    from VertebralFractureLib.io.output import check_destination

    check_destination(path, overwrite, inputs, overwrite_hint="--overwrite")


def _gate(image: Any, path: Path) -> None:
    """Refuse an image no analysis can use before any stage runs (see ``sanity``)."""
    from VertebralFractureLib.sanity import check_ct

    check_ct(image.volume, Path(path).name or str(path))


def _has_labels(seg: Any, path: Path, what: str = "label") -> None:
    import numpy as np

    if not np.any(seg.array):
        raise InputError(
            f"the segmentation '{Path(path).name}' holds no {what} (every voxel is 0): no vertebra to work on"
        )


def _vertebra_labels(seg: Any, path: Path, notes: list[str]) -> list[int]:
    """The vertebra labels of a labelmap (as ``grade`` takes them): others are named in ``notes``
    and left out; none at all is refused."""
    import numpy as np

    from VertebralFractureLib.anatomy import split_vertebra_labels

    arr = np.asarray(seg.array)
    if not np.issubdtype(arr.dtype, np.integer) and not np.allclose(arr, np.round(arr)):
        raise InputError(f"the segmentation '{Path(path).name}' must hold integer labels")
    labels, unknown = split_vertebra_labels(np.unique(np.round(arr)))
    if not labels:
        raise InputError(f"the segmentation '{Path(path).name}' holds no vertebra label (VerSe 1–25 or 28)")
    if unknown:
        notes.append(f"labels {unknown} are not vertebrae (VerSe 1–25, 28) and were ignored")
    return labels


def _run_and_write(image: Any, stages: Any, args: argparse.Namespace, progress: Progress) -> Any:
    from VertebralFractureLib.io.output import write_outputs
    from VertebralFractureLib.pipeline import (
        AnalysisConfig,
        analyze,
        available_default_stages,
        second_opinion_stages,
    )

    skipped: list[str] = []
    extra = second_opinion_stages(getattr(args, "radiomics", False), getattr(args, "slice_classifier", False))
    if extra:
        if stages is None:
            stages, skipped = available_default_stages()
        stages = [*stages, *extra]
    config = AnalysisConfig(device=args.device, fracture_threshold=getattr(args, "fracture_threshold", 0.5),
                            keypoints=getattr(args, "keypoints", "auto"), bone_growth=getattr(args, "bone_growth", True))
    analysis = analyze(image.volume, config, stages=stages, progress=progress,
                       input_description=image.description)
    analysis.warnings[:0] = [*image.warnings, *skipped]
    progress("write", 0.0, "writing results")
    try:
        dicom = image.source_format == "dicom" and getattr(args, "dicom_out", False)
        out = write_outputs(analysis, args.output, overwrite=args.overwrite,
                            progress=lambda f, m: progress("write", f, m),
                            dicom_sources=image.dicom_sources if dicom else None, dicom_note=image.dicom_note)
    except OutputError:
        raise
    except OSError as err:  # disk full, permissions changed meanwhile: nothing was left behind
        raise OutputError(f"could not write the results to {args.output}: {err.strerror or err}") from err
    _report_done(progress, summary_table(analysis), args.output, out, analysis.warnings, "analysis complete")
    return analysis


def _report_done(progress: Progress, table: str, shown: Path, out: Path, warnings: Sequence[str], message: str) -> None:
    """The end of a command that wrote results: the table, where they are (``shown`` as given; the
    JSON ``done`` line has the absolute ``out``) and the warnings."""
    progress.close()
    if progress.mode != "json":
        print(table)
        print(f"results written to {shown}")
        for w in warnings:
            print(f"vertebral-fracture: warning: {w}", file=sys.stderr)
    progress.emit({"stage": "done", "fraction": 1.0, "message": message, "output": str(out),
                   "warnings": list(warnings)})


def cmd_analyze(args: argparse.Namespace, progress: Progress) -> int:
    from VertebralFractureLib.io.readers import read_image

    _check_output(args.output, args.overwrite, args.input, args.centroids)
    progress("read", 0.0, "reading input")
    image = read_image(args.input)
    progress("read", 1.0, image.description)
    _gate(image, args.input)  # before the point list, whose positions are checked against the image
    stages = None
    if args.centroids is not None:
        from VertebralFractureLib.io.centroids import read_centroid_file
        from VertebralFractureLib.pipeline import given_centroid_stages

        stages = given_centroid_stages(read_centroid_file(args.centroids, image.volume))
    _run_and_write(image, stages, args, progress)
    return EXIT_OK


def cmd_batch(args: argparse.Namespace, progress: Progress) -> int:
    from VertebralFractureLib.batch import FINDINGS_FILE, STATE_FILE, StudyResult, run_batch
    from VertebralFractureLib.models import require

    if args.workers < 1:
        raise UsageError(f"--workers must be 1 or more (got {args.workers})")
    require("localization")  # before any study: without stage 1 every study would fail alike
    bar = None
    if progress.mode == "bar":
        from tqdm import tqdm

        bar = tqdm(total=0, desc="studies", file=sys.stderr, unit="study")

    def report(finished: int, total: int, r: StudyResult) -> None:
        if bar is not None:
            bar.total = total
            bar.n = finished
            bar.set_postfix_str(f"{r.study}: {r.state}", refresh=True)
        progress.emit({"stage": "batch", "fraction": round(finished / max(total, 1), 4),
                       "message": f"{r.study}: {r.state}" + (f" ({r.reason})" if r.state == "failed" else ""),
                       "study": r.study, "state": r.state})

    options = {"device": args.device, "radiomics": args.radiomics, "slice_classifier": args.slice_classifier,
               "keypoints": args.keypoints, "dicom_out": args.dicom_out,
               "bone_growth": args.bone_growth}
    executor = None
    if args.ray is not None:
        from VertebralFractureLib.batch import RayExecutor, check_batch_folder, find_studies

        find_studies(args.inputs)  # bad inputs or output refused before connecting to a cluster
        check_batch_folder(args.output, args.inputs)
        executor = RayExecutor(args.ray)
    try:
        results = run_batch(args.inputs, args.output, workers=args.workers, options=options,
                            retry_failed=args.retry_failed, progress=report, executor=executor)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"vertebral-fracture: the studies finished so far are recorded in {args.output / STATE_FILE}; "
              "run the same command again to go on", file=sys.stderr)
        raise
    finally:
        if executor is not None:
            executor.shutdown()
    if bar is not None:
        bar.close()
    counts = {k: sum(1 for r in results if r.state == k) for k in ("done", "skipped", "failed")}
    if progress.mode != "json":
        for r in results:
            if r.state == "failed":
                print(f"vertebral-fracture: warning: {r.study}: {r.reason}", file=sys.stderr)
        print(f"{len(results)} studies: {counts['done']} done, {counts['skipped']} done before (skipped), "
              f"{counts['failed']} failed")
        print(f"states in {args.output / STATE_FILE}, findings in {args.output / FINDINGS_FILE}")
    progress.emit({"stage": "done", "fraction": 1.0, "message": "batch complete", "output": str(args.output),
                   **counts})
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def cmd_grade(args: argparse.Namespace, progress: Progress) -> int:
    import numpy as np

    from VertebralFractureLib.anatomy import convert_totalsegmentator, vertebra
    from VertebralFractureLib.io.readers import LoadedImage, read_image, read_labelmap
    from VertebralFractureLib.pipeline import GivenSegmentation, grading_stage
    from VertebralFractureLib.sanity import check_geometry

    _check_output(args.output, args.overwrite, args.input, args.segmentation)
    progress("read", 0.0, "reading segmentation")
    if args.input is not None:
        image = read_image(args.input)
        _gate(image, args.input)
        seg = read_labelmap(args.segmentation, reference=image.volume)
    else:
        seg = read_labelmap(args.segmentation)
        check_geometry(seg, args.segmentation.name)
        image = LoadedImage(volume=seg.with_array(seg.array.astype("int16") * 0), warnings=[
            "no CT given: grading from the segmentation alone"], description="segmentation only",
            source_format="segmentation")
    if args.vertebra is not None:
        try:
            label = vertebra(args.vertebra).label
        except (KeyError, ValueError) as err:
            raise InputError(str(err).strip('"')) from err
        try:
            parts = [int(x) for x in args.vertebra_labels.split(",")] if args.vertebra_labels else None
        except ValueError as err:
            raise UsageError(f"--vertebra-labels takes comma-separated integer labels of the "
                             f"segmentation, e.g. 1,2 (got {args.vertebra_labels!r})") from err
        inside = seg.array > 0 if parts is None else np.isin(seg.array, parts)
        seg = seg.with_array((inside * label).astype("uint8"))
    elif args.labels == "totalsegmentator":
        seg = seg.with_array(convert_totalsegmentator(seg.array))
    _has_labels(seg, args.segmentation, "vertebra label" if args.labels == "totalsegmentator" else "label")
    stages = [GivenSegmentation(seg), grading_stage()]
    _run_and_write(image, stages, args, progress)
    return EXIT_OK


def cmd_radiomics(args: argparse.Namespace, progress: Progress) -> int:
    import statistics

    import numpy as np

    from VertebralFractureLib.io.output import write_folder
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.radiomics import (
        extract_features,
        label_components,
        load_classifier,
        write_features_csv,
    )
    from VertebralFractureLib.thirdparty import native_messages, summary

    _check_output(args.output, args.overwrite, args.input, args.segmentation, args.params)
    if args.wiener < 0 or (args.wiener and args.wiener % 2 == 0):
        raise UsageError(f"--wiener must be 0 (no filter) or an odd window size, got {args.wiener}")
    progress("read", 0.0, "reading input")
    image = read_image(args.input)
    _gate(image, args.input)
    seg = read_labelmap(args.segmentation, reference=image.volume)
    _has_labels(seg, args.segmentation)
    notes = list(image.warnings)
    if args.label_components is not None:
        try:
            seg = label_components(seg, first_vertebra=args.label_components, split_mm=args.split_mm)
        except KeyError as err:
            raise InputError(str(err).strip('"')) from err
    labels = _vertebra_labels(seg, args.segmentation, notes)
    params, wiener = args.params, (args.wiener or None)
    classifier = None
    if args.classify:
        classifier = load_classifier()
        if args.params is not None or args.wiener:
            notes.append("--classify extracts features with the classifier's own parameters and Wiener window")
        params, wiener = classifier.radiomics_params, classifier.wiener_window
    printed: list[str] = []
    with native_messages(printed):
        rows = extract_features(image.volume, seg, labels=labels, params=params, image_types=args.image_types,
                                wiener_window=wiener, progress=lambda f, m: progress("radiomics", f, m),
                                warnings=notes)
    line = summary(printed, "while extracting features")
    if line is not None:
        notes.append(line)
    extra = None
    if classifier is not None and rows:
        extra = {r.label: {"radiomics_fracture_probability": None if np.isnan(p) else round(float(p), 4)}
                 for r, p in zip(rows, classifier.predict_proba(rows))}
    def fill(folder: Path) -> None:
        write_features_csv(folder / "features.csv", rows, extra)
        if args.label_components is not None:
            from VertebralFractureLib.io.readers import write_volume

            write_volume(seg, folder / "vertebrae.nii.gz")

    try:
        write_folder(args.output, fill, overwrite=args.overwrite)
    except OutputError:
        raise
    except OSError as err:  # nothing was left behind
        raise OutputError(f"could not write the results to {args.output}: {err.strerror or err}") from err
    progress.close()
    seconds = [r.seconds for r in rows]
    n_features = len(rows[0].features) if rows else 0
    time_text = f"{statistics.median(seconds):.2f} s per vertebra (median)" if seconds else "no vertebra"
    result = {"stage": "done", "fraction": 1.0, "message": "radiomics complete", "output": str(args.output),
              "vertebrae": len(rows), "features": n_features, "warnings": notes}
    if progress.mode != "json":
        print(f"{len(rows)} vertebrae, {n_features} features each, {time_text}: {args.output / 'features.csv'}")
        for w in notes:
            print(f"vertebral-fracture: warning: {w}", file=sys.stderr)
    progress.emit(result)
    return EXIT_OK


def sample_path(kind: str = "ct") -> Path:
    """Path of a file of the shipped demo sample (``ct``, ``seg-vert_msk``, ``ctd``, ``genant``)."""
    from VertebralFractureLib.models import models_dir

    suffix = {"ct": "_ct.nii.gz", "seg-vert_msk": "_seg-vert_msk.nii.gz", "ctd": "_ctd.json",
              "genant": "_genant.json"}[kind]
    return models_dir().parent / "SampleData" / f"{SAMPLE_NAME}{suffix}"


def cmd_demo(args: argparse.Namespace, progress: Progress) -> int:
    ct = sample_path("ct")
    if not ct.exists():
        raise InputError(f"the demo sample {ct} is missing (regenerate it with 'vertebral-fracture synth --sample')")
    _check_output(args.output, args.overwrite, ct)
    args.input = ct
    # demo takes only the common output options: the analyze-only ones at their defaults
    for name, default in (("centroids", None), ("fracture_threshold", 0.5), ("radiomics", False),
                          ("keypoints", "auto")):
        if not hasattr(args, name):
            setattr(args, name, default)
    print(f"Demo: analysing the synthetic sample {ct.name} (SynthSpine, known truth)", file=sys.stderr)
    return cmd_analyze(args, progress)


def cmd_radiograph(args: argparse.Namespace, progress: Progress) -> int:
    from VertebralFractureLib.io.radiograph import read_radiograph
    from VertebralFractureLib.io.radiograph_out import write_radiograph_outputs
    from VertebralFractureLib.radiograph_analysis import analyze_radiograph

    _check_output(args.output, args.overwrite, args.input)
    progress("read", 0.0, "reading radiograph")
    radiograph = read_radiograph(args.input, args.pixel_spacing)
    progress("read", 1.0, radiograph.kind)
    result = analyze_radiograph(radiograph, device=args.device, grad_cam=args.grad_cam, progress=progress)
    out = write_radiograph_outputs(result, args.output, args.overwrite)
    _report_done(progress, radiograph_table(result), args.output, out, result.warnings, "radiograph analysed")
    return EXIT_OK


def radiograph_table(result: Any) -> str:
    """The vertebrae of a radiograph analysis as a text table, and the image's fresh-VCF probabilities."""
    from VertebralFractureLib.io.radiograph_out import fresh_summary

    lines = [f"{'vertebra':<9}{'class':<16}{'normal':>8}{'old':>8}{'fresh':>8}{'detection':>11}"]
    for v in result.vertebrae:
        probs = "".join(f"{v.ensemble[c]:>8.2f}" if v.ensemble else f"{'-':>8}" for c in ("normal", "old", "fresh"))
        score = "placed" if v.detection_score is None else f"{v.detection_score:.2f}"
        lines.append(f"{v.name:<9}{(v.cls or v.status):<16}{probs}{score:>11}")
    if not result.vertebrae:
        lines.append("no lumbar vertebra found")
    lines.append(fresh_summary(result.to_json()))
    return "\n".join(lines)


def _spacing(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"pixel spacing must be MM or ROW,COL in mm, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"pixel spacing must be MM or ROW,COL in mm (positive), got {text!r}")
    return values[0], values[1]


def cmd_info(args: argparse.Namespace, progress: Progress) -> int:
    import platform

    from VertebralFractureLib.models import model_status, models_dir, registry

    info: dict[str, Any] = {"vertebral-fracture": __version__, "python": platform.python_version(),
                            "platform": platform.platform()}
    for mod in ("torch", "monai", "SimpleITK", "pydicom", "vtk", "numpy", "radiomics"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", None) or getattr(m, "Version", lambda: "?")()
        except ImportError:
            info[mod] = "not installed"
    try:
        import torch

        devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append("mps")
        info["devices"] = devices
    except ImportError:
        info["devices"] = ["torch not installed"]
    d = models_dir()
    info["models_dir"] = str(d)
    info["models"] = {name: model_status(name, d) for name in registry(d)}
    for stage_model in ("localization", "segmentation", "keypoints"):
        info["models"].setdefault(stage_model, "missing")
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            if isinstance(v, dict):
                v = ", ".join(f"{a}: {b}" for a, b in v.items())
            elif isinstance(v, list):
                v = ", ".join(v)
            print(f"{k:<{width}}  {v}")
    return EXIT_OK


def cmd_synth(args: argparse.Namespace, progress: Progress) -> int:
    from VertebralFractureLib.synth.cli import run

    return run(args, progress=progress)


def summary_table(analysis: Any) -> str:
    """A plain-text table, one row per vertebra."""
    radiomics = any(v.radiomics_fracture_probability is not None for v in analysis.vertebrae)
    slice_based = any(v.slice_fracture_probability is not None for v in analysis.vertebrae)
    rows = [("vertebra", "complete", "status", "p(fracture)", "Ha/Hm/Hp mm", "Genant", "type")
            + (("p radiomics",) if radiomics else ()) + (("p slices",) if slice_based else ())]
    for v in analysis.vertebrae:
        h = v.heights_mm
        p, ps = v.radiomics_fracture_probability, v.slice_fracture_probability
        rows.append((
            v.name,
            "yes" if v.complete else "cut",
            v.status or "-",
            "-" if v.fracture_probability is None else f"{v.fracture_probability:.2f}",
            "-" if h is None else f"{h['anterior']:.1f}/{h['middle']:.1f}/{h['posterior']:.1f}",
            "-" if v.genant is None else f"grade {v.genant.grade} ({v.genant.ratio:.2f})",
            "-" if v.genant is None or v.genant.type is None else v.genant.type,
        ) + (("-" if p is None else f"{p:.2f}",) if radiomics else ())
          + (("-" if ps is None else f"{ps:.2f}",) if slice_based else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vertebral-fracture",
        description="Find, segment and grade vertebral compression fractures in CT (research software, "
        "not for diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("analyze", help="analyse a CT (volume file or DICOM folder/zip)")
    p.add_argument("input", type=Path, help="NIfTI/NRRD/MHA file, DICOM folder or DICOM zip")
    _common_output_args(p)
    p.add_argument("--fracture-threshold", type=_probability, default=0.5,
                   help="fractured when the mean fractured-class probability reaches this (default 0.5)")
    p.add_argument("--centroids", type=Path, default=None, metavar="FILE",
                   help="vertebra centroids to segment around instead of localizing: a Slicer point list "
                   "(.mrk.json, points named T12, L1, ...) or a VerSe _ctd.json, e.g. an earlier run's, corrected")
    _radiomics_flag(p)
    _keypoints_flag(p)
    _bone_growth_flag(p)
    _dicom_out_flag(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("batch", help="analyse many studies (a folder or a CSV list), resumable")
    p.add_argument("inputs", type=Path, help="a folder of studies (volume files and DICOM folders, searched "
                   "recursively) or a CSV list with a 'path' column (and an optional 'study' column)")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="batch folder: one result folder per study, batch.csv, findings.csv; an earlier "
                   "batch's folder is resumed")
    p.add_argument("--workers", type=int, default=1, help="studies analysed at once (default 1)")
    p.add_argument("--retry-failed", action="store_true", help="analyse again the studies that failed before")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the studies on a Ray cluster, one task per study: 'auto' (the cluster of this "
                   "machine), HOST:PORT of its head, or 'local'; needs pip install 'vertebral-fracture[cluster]' "
                   "and the inputs and OUTPUT on storage every node sees")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the networks run")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"],
                   help="progress display: one bar over the studies on a terminal, JSON lines for programs")
    _radiomics_flag(p)
    _keypoints_flag(p)
    _bone_growth_flag(p)
    _dicom_out_flag(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("grade", help="Genant grading from a given vertebra segmentation")
    p.add_argument("input", type=Path, nargs="?", default=None, help="the CT (optional)")
    p.add_argument("--segmentation", "-s", required=True, type=Path, help="vertebra labelmap")
    p.add_argument("--labels", default="verse", choices=["verse", "totalsegmentator"],
                   help="label numbering of the segmentation")
    p.add_argument("--vertebra", metavar="NAME", default=None,
                   help="the segmentation holds a single vertebra (e.g. as sub-region labels): grade it as NAME, e.g. L2")
    p.add_argument("--vertebra-labels", metavar="L1,L2,...", default=None,
                   help="with --vertebra: the label values that form the vertebra (default: every non-zero label)")
    _common_output_args(p)
    _radiomics_flag(p)
    _keypoints_flag(p)
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("radiomics", help="pyradiomics features per vertebra (features.csv), optionally classified")
    p.add_argument("input", type=Path, help="the CT (volume file or DICOM)")
    p.add_argument("--segmentation", "-s", required=True, type=Path,
                   help="vertebra labelmap (VerSe labels), or a binary spine mask with --label-components")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (must not exist, see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing output folder (its files are replaced)")
    p.add_argument("--params", type=Path, default=None,
                   help="pyradiomics parameter file (default: Resources/radiomics_params.yaml)")
    p.add_argument("--image-types", nargs="+", default=[], choices=["Wavelet", "LoG"],
                   help="image types added to the original image (more features, more time)")
    p.add_argument("--wiener", type=int, default=0, metavar="N",
                   help="Wiener filter window in voxels before extraction (odd; default 0 = no filter)")
    p.add_argument("--label-components", metavar="FIRST", default=None,
                   help="the segmentation is a binary spine mask: label its connected components cranial to "
                   "caudal, the first as FIRST (e.g. T1)")
    p.add_argument("--split-mm", type=float, default=0.0,
                   help="with --label-components: erode by this many mm to separate touching vertebrae")
    p.add_argument("--classify", action="store_true",
                   help="add radiomics_fracture_probability from the installed radiomics classifier")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"],
                   help="progress display: bars on a terminal, JSON lines for programs (default: auto)")
    p.set_defaults(func=cmd_radiomics)

    p = sub.add_parser("radiograph", help="analyse a lateral lumbar radiograph: L1-L5, normal/old/fresh fracture")
    p.add_argument("input", type=Path, help="DICOM DX/CR file, PNG/JPEG image (with --pixel-spacing) or a one-slice "
                   "NRRD/NIfTI as 3D Slicer saves a 2D image")
    _common_output_args(p)
    p.add_argument("--pixel-spacing", type=_spacing, default=None, metavar="MM",
                   help="pixel size in mm (MM or ROW,COL): required for PNG/JPEG, overrides a DICOM header's")
    p.add_argument("--no-grad-cam", dest="grad_cam", action="store_false",
                   help="skip the Grad-CAM maps (faster)")
    p.set_defaults(func=cmd_radiograph)

    p = sub.add_parser("demo", help="analyse the shipped synthetic sample and print the results")
    _common_output_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, devices and installed models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info, progress="none")

    from VertebralFractureLib.training import commands as dev

    p = sub.add_parser("train", help="train a stage's network (on SynthSpine or VerSe-layout data)")
    dev.add_train_arguments(p)
    p.set_defaults(func=dev.cmd_train, progress="none")

    p = sub.add_parser("evaluate", help="metrics of a stage on held-out data with known truth")
    dev.add_evaluate_arguments(p)
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"])
    p.set_defaults(func=dev.cmd_evaluate)

    p = sub.add_parser("bench", help="time a stage (or the whole analysis) and its peak memory on one CT")
    dev.add_bench_arguments(p)
    p.set_defaults(func=dev.cmd_bench, progress="none")

    p = sub.add_parser("synth", help="generate SynthSpine synthetic CT with ground truth (VerSe layout)")
    try:
        from VertebralFractureLib.synth.cli import add_arguments
    except ImportError:  # the generator is optional in stripped-down installs
        add_arguments = None
    if add_arguments is not None:
        add_arguments(p)
    if not any(a.dest == "progress" for a in p._actions):
        p.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"])
    p.set_defaults(func=cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vertebral-fracture`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    progress = Progress(getattr(args, "progress", "none"))
    code = EXIT_FAILURE
    caught: list[warnings.WarningMessage] = []
    try:
        with signals_as_interrupts(), warnings.catch_warnings(record=True) as caught:
            code = args.func(args, progress)
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM, SIGHUP: what was half written is gone
        code = exit_code(err)
        _fail(progress, "cancelled" + (f" by {err.args[0]}" if isinstance(err, Interrupted) else "")
              + "; nothing was written" * _writes_output(args))
    except CancelledError as err:
        _fail(progress, str(err))
        code = EXIT_CANCELLED
    except (ModelNotAvailableError, ModelIntegrityError) as err:
        _fail(progress, str(err))
        code = EXIT_MODEL
    except OutputError as err:  # the folder exists, is the input, cannot be written
        _fail(progress, str(err))
        code = EXIT_OUTPUT
    except UsageError as err:
        _fail(progress, str(err))
        code = EXIT_USAGE
    except (InputError, FileNotFoundError) as err:
        _fail(progress, str(err))
        code = EXIT_INPUT
    except VertebralFractureError as err:
        _fail(progress, str(err))
        code = EXIT_FAILURE
    except Exception as err:  # noqa: BLE001 - last resort: one line, not a traceback
        if args.debug:
            raise
        _fail(progress, f"internal error: {type(err).__name__}: {err} (rerun with --debug for details)")
        code = EXIT_FAILURE
    finally:
        progress.close()
        _print_python_warnings(caught)
    return code


def _writes_output(args: argparse.Namespace) -> bool:
    return isinstance(getattr(args, "output", None), Path) and not Path(args.output).exists()


def _one_line(text: str) -> str:
    from VertebralFractureLib.thirdparty import strip_ansi

    return " ".join(strip_ansi(text).split())


def _fail(progress: Progress, message: str) -> None:
    message = _one_line(message)
    progress.close()
    progress.emit({"stage": "error", "fraction": 1.0, "message": message})
    print(f"vertebral-fracture: error: {message}", file=sys.stderr)


def _print_python_warnings(caught: Sequence[warnings.WarningMessage]) -> None:
    """Python warnings raised by the libraries during the command: one line each, repeats once.

    Deprecation warnings are meant for developers, not for the user of a command, and are left out.
    """
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            continue
        module = Path(w.filename).stem if w.filename else "?"
        text = _one_line(f"{w.category.__name__} in {module}: {w.message}")
        if text not in seen:
            seen.append(text)
    for text in seen[:MAX_PYTHON_WARNINGS]:
        print(f"vertebral-fracture: warning: {text}", file=sys.stderr)
    if len(seen) > MAX_PYTHON_WARNINGS:
        print(f"vertebral-fracture: warning: and {len(seen) - MAX_PYTHON_WARNINGS} more Python warnings",
              file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
