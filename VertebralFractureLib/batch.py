"""Many studies in one run (``vertebral-fracture batch``): find them, analyse each into its own folder,
record every study's state, resume where the last run stopped.

* **Studies** (:func:`find_studies`): a folder, searched recursively — every volume file (NIfTI, NRRD,
  MetaImage, a ``.zip`` of a DICOM series) is a study, and so is every folder that directly holds
  DICOM files (one series per folder); or a CSV list with a ``path`` column (relative paths are taken
  from the CSV's folder) and an optional ``study`` column naming the result folder.
* **Each study** is analysed as ``analyze`` does (input gate, all stages, the atomic folder writer) into
  ``OUT/<study>/``; a broken study fails with its one-line reason and never stops the batch.
* **State** (:data:`STATE_FILE`, ``OUT/batch.csv``): one row per study — ``done``, ``failed`` with the
  reason, or ``skipped`` (done by an earlier run) —, rewritten atomically after each study, so an
  interrupted batch leaves a true record. ``OUT/findings.csv`` lists every vertebra of the studies done
  (study, vertebra, status, Genant grade and type, fracture probability, naming): what a screening
  list needs.
* **Resume**: a study whose result folder holds ``analysis.json`` and that ``batch.csv`` records as
  done is skipped; failed studies are retried only with ``retry_failed``. A second run over the same
  inputs therefore does nothing new.
* **Parallel** (``workers``): studies run in separate processes, the CPU threads shared between them;
  or on a Ray cluster (:class:`RayExecutor`), one task per study.

Study names come from the input paths (the user's own naming); nothing is read from the DICOM
headers for them, and no patient name or ID is logged.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from VertebralFractureLib.errors import InputError, OutputError, UsageError, VertebralFractureError

#: Per-study state, rewritten after each study.
STATE_FILE = "batch.csv"
#: Every vertebra of the studies done.
FINDINGS_FILE = "findings.csv"
STATE_COLUMNS = ("study", "input", "state", "reason", "seconds", "vertebrae", "fractured", "not_assessable",
                 "max_genant", "output")
FINDINGS_COLUMNS = ("study", "vertebra", "label", "status", "genant_grade", "genant_type", "fracture_probability",
                    "complete", "naming_anchor", "status_reason")
#: Files that are volumes (a ``.zip`` holds a DICOM series).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Study:
    """One study to analyse: its name (the result folder's name) and its input path."""

    name: str
    path: Path


@dataclass
class StudyResult:
    """What became of one study."""

    study: str
    input: str
    state: str  # "done", "failed" or "skipped"
    reason: str = ""
    seconds: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""

    def row(self) -> dict[str, Any]:
        fractured = sum(1 for f in self.findings if f["status"] == "fractured")
        unsure = sum(1 for f in self.findings if f["status"] == "not assessable")
        grades = [int(f["genant_grade"]) for f in self.findings if f["genant_grade"] not in ("", None)]
        return {"study": self.study, "input": self.input, "state": self.state, "reason": self.reason,
                "seconds": f"{self.seconds:.1f}" if self.seconds else "", "vertebrae": len(self.findings) if
                self.state != "failed" else "", "fractured": fractured if self.state != "failed" else "",
                "not_assessable": unsure if self.state != "failed" else "",
                "max_genant": max(grades) if grades else "", "output": self.output}


# ---------------------------------------------------------------------------------------- discovery
def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _volume_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def study_name(path: Path, root: Path) -> str:
    """A folder name for a study: its path below ``root`` with separators and odd characters as
    ``_`` and the volume suffix dropped (``a/b/ct.nii.gz`` → ``a_b_ct``)."""
    rel = path.relative_to(root) if path != root and path.is_relative_to(root) else Path(path.name)
    text = rel.as_posix()
    for s in VOLUME_SUFFIXES:
        if text.lower().endswith(s):
            text = text[: -len(s)]
            break
    name = _SAFE.sub("_", text.replace("/", "_")).strip("._") or "study"
    return name


def find_studies(inputs: str | Path) -> list[Study]:
    """The studies of a folder (recursively) or of a CSV list; see the module docstring.

    Raises:
        InputError: the path does not exist, the CSV has no ``path`` column or names a missing file,
            two studies would share a result folder, or no study is found.
    """
    src = Path(inputs).expanduser()
    if not src.exists():
        raise InputError(f"{src} does not exist")
    studies: list[Study] = []
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise InputError(f"{src.name}: batch takes a folder of studies or a CSV list (column 'path'), "
                             "not a single image (use analyze for one study)")
        studies = _from_csv(src)
    else:
        for folder, dirs, files in os.walk(src):
            dirs.sort()
            here = Path(folder)
            paths = [here / f for f in sorted(files) if not f.startswith(".")]
            volumes = [p for p in paths if _volume_file(p)]
            studies += [Study(study_name(p, src), p) for p in volumes]
            if any(_is_dicom(p) for p in paths if p not in volumes):
                studies.append(Study(study_name(here, src) if here != src else _SAFE.sub("_", src.name) or "study",
                                     here))
    if not studies:
        raise InputError(f"no study found in {src} (volume files {', '.join(VOLUME_SUFFIXES)} or DICOM folders)")
    seen: dict[str, Path] = {}
    for s in studies:
        if s.name in seen:
            raise InputError(f"two studies would share the result folder '{s.name}': {seen[s.name]} and {s.path}; "
                             "list them in a CSV with a 'study' column")
        seen[s.name] = s.path
    return studies


def _from_csv(path: Path) -> list[Study]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise InputError(f"{path.name}: the CSV needs a 'path' column (and may have a 'study' column)")
        rows = list(reader)
    studies = []
    for k, row in enumerate(rows, start=2):
        given = (row.get("path") or "").strip()
        if not given:
            raise InputError(f"{path.name}, line {k}: empty path")
        p = Path(given).expanduser()
        p = p if p.is_absolute() else path.parent / p
        name = _SAFE.sub("_", (row.get("study") or "").strip()).strip("._") or study_name(p, path.parent)
        studies.append(Study(name, p))
    return studies


# ---------------------------------------------------------------------------------------- one study
def analyse_study(study: Study, out_dir: Path, options: dict[str, Any] | None = None) -> StudyResult:
    """Analyse one study into ``out_dir / study.name`` (never raises for a broken study: the result is
    ``failed`` with the reason). ``options``: ``device``, ``radiomics``, ``slice_classifier``,
    ``keypoints``, ``bone_growth``, ``dicom_out`` (default True: a DICOM study also gets ``dicom/seg.dcm`` and ``dicom/sr.dcm``)."""
    from VertebralFractureLib.io.output import write_outputs
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.pipeline import (
        AnalysisConfig,
        analyze,
        available_default_stages,
        second_opinion_stages,
    )
    from VertebralFractureLib.sanity import check_ct

    options = options or {}
    target = out_dir / study.name
    t0 = time.perf_counter()
    try:
        image = read_image(study.path)
        check_ct(image.volume, study.path.name)
        stages, skipped = available_default_stages()
        stages = [*stages, *second_opinion_stages(bool(options.get("radiomics")), bool(options.get("slice_classifier")))]
        config = AnalysisConfig(device=options.get("device", "auto"), keypoints=options.get("keypoints", "auto"),
                                bone_growth=options.get("bone_growth", True))
        analysis = analyze(image.volume, config, stages=stages, input_description=image.description)
        analysis.warnings[:0] = [*image.warnings, *skipped]
        dicom = image.source_format == "dicom" and options.get("dicom_out", True)
        write_outputs(analysis, target, dicom_sources=image.dicom_sources if dicom else None,
                      dicom_note=image.dicom_note)
    except VertebralFractureError as err:
        return StudyResult(study.name, str(study.path), "failed", _one_line(str(err)), time.perf_counter() - t0)
    except MemoryError:
        return StudyResult(study.name, str(study.path), "failed", "out of memory", time.perf_counter() - t0)
    except OSError as err:
        return StudyResult(study.name, str(study.path), "failed", _one_line(f"could not read or write: {err}"),
                           time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - one broken study must not stop the batch
        return StudyResult(study.name, str(study.path), "failed",
                           _one_line(f"internal error: {type(err).__name__}: {err}"), time.perf_counter() - t0)
    return StudyResult(study.name, str(study.path), "done", "", time.perf_counter() - t0,
                       findings_of(study.name, analysis.to_dict()), str(target))


def findings_of(study: str, analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """The :data:`FINDINGS_COLUMNS` rows of one ``analysis.json`` (as a dict)."""
    rows = []
    for v in analysis.get("vertebrae", []):
        genant = v.get("genant") or {}
        naming = v.get("naming") or {}
        p = v.get("fracture_probability")
        rows.append({"study": study, "vertebra": v.get("name", ""), "label": v.get("label", ""),
                     "status": v.get("status", ""),
                     "genant_grade": "" if genant.get("grade") is None else genant.get("grade"),
                     "genant_type": genant.get("type") or "",
                     "fracture_probability": "" if p is None else f"{float(p):.3f}",
                     "complete": v.get("complete", ""), "naming_anchor": naming.get("anchor") or "",
                     "status_reason": v.get("status_reason") or ""})
    return rows


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


# ---------------------------------------------------------------------------------------- state
def read_state(out_dir: Path) -> dict[str, dict[str, str]]:
    """Study → its row of ``batch.csv`` (empty when there is none)."""
    path = out_dir / STATE_FILE
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["study"]: row for row in csv.DictReader(f)}


def _write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _findings_of_folder(study: str, folder: Path) -> list[dict[str, Any]]:
    try:
        return findings_of(study, json.loads((folder / "analysis.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []


# ---------------------------------------------------------------------------------------- the batch
def check_batch_folder(out_dir: Path, inputs: Path) -> Path:
    """The output folder may be new or an earlier batch's (it holds ``batch.csv``); never an input,
    inside one or holding one.

    Raises:
        OutputError: otherwise (a folder holding other files is not taken over).
    """
    from VertebralFractureLib.io.output import check_destination

    out = check_destination(out_dir, True, (inputs,), overwrite_hint="a new folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"the output {out} is a file; batch needs a folder")
        if any(out.iterdir()) and not (out / STATE_FILE).exists():
            raise OutputError(f"the output {out} holds files that no batch wrote (no {STATE_FILE}); "
                              "choose a new folder, or an earlier batch's folder to resume it")
    return out


def run_batch(inputs: str | Path, out_dir: str | Path, workers: int = 1, options: dict[str, Any] | None = None,
              retry_failed: bool = False, progress: Callable[[int, int, StudyResult], None] | None = None,
              executor: Any = None) -> list[StudyResult]:
    """Analyse every study of ``inputs`` into ``out_dir`` (see the module docstring).

    Args:
        inputs: a folder of studies or a CSV list.
        out_dir: the batch folder (created; an earlier batch's folder is resumed).
        workers: studies analysed at once (separate processes; 1 = in this process).
        options: passed to :func:`analyse_study`.
        retry_failed: analyse again the studies an earlier run recorded as failed.
        progress: called after each study as ``progress(finished, total, result)``.
        executor: a ``concurrent.futures`` executor to use instead of a process pool (e.g. one
            backed by a cluster); it must run :func:`analyse_study`.

    Returns:
        One result per study, in the order of discovery.
    """
    src = Path(inputs).expanduser()
    studies = find_studies(src)
    out = check_batch_folder(Path(out_dir), src)
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    results: dict[str, StudyResult] = {}
    todo: list[Study] = []
    for s in studies:
        before = state.get(s.name, {})
        folder = out / s.name
        if before.get("state") in ("done", "skipped") and (folder / "analysis.json").exists():
            results[s.name] = StudyResult(s.name, str(s.path), "skipped", "done by an earlier run",
                                          findings=_findings_of_folder(s.name, folder), output=str(folder))
        elif before.get("state") == "failed" and not retry_failed:
            results[s.name] = StudyResult(s.name, str(s.path), "failed", before.get("reason", ""),
                                          float(before.get("seconds") or 0.0))
        elif folder.exists():  # a result folder the record does not know: never overwritten
            results[s.name] = StudyResult(s.name, str(s.path), "failed",
                                          f"{folder} exists but {STATE_FILE} does not record it as done: "
                                          "move it away to analyse the study again")
        else:
            todo.append(s)
    total, finished = len(studies), 0
    settled = list(results.values())

    def record(r: StudyResult) -> None:
        nonlocal finished
        results[r.study] = r
        finished += 1
        ordered = [results[s.name] for s in studies if s.name in results]
        _write_csv_atomic(out / STATE_FILE, STATE_COLUMNS, [r.row() for r in ordered])
        _write_csv_atomic(out / FINDINGS_FILE, FINDINGS_COLUMNS,
                          [f for r in ordered if r.state in ("done", "skipped") for f in r.findings])
        if progress is not None:
            progress(finished, total, r)

    for r in settled:  # the record of what was already settled, before any work
        record(r)
    if todo:
        if executor is None and workers <= 1:
            for s in todo:
                record(analyse_study(s, out, options))
        else:
            _run_parallel(todo, out, options, workers, executor, record)
    return [results[s.name] for s in studies]


def _run_parallel(todo: list[Study], out: Path, options: dict[str, Any] | None, workers: int, executor: Any,
                  record: Callable[[StudyResult], None]) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    own = executor is None
    if own:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(threads,))
    try:
        pending = {executor.submit(analyse_study, s, out, options): s for s in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                s = pending.pop(fut)
                try:
                    r = fut.result()
                except Exception as err:  # noqa: BLE001 - a worker that died takes only its study
                    r = StudyResult(s.name, str(s.path), "failed", _one_line(f"worker failed: {type(err).__name__}: {err}"))
                record(r)
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs :func:`analyse_study` as Ray tasks, one per study (``batch --ray ADDRESS``).

    ``address``: ``"auto"`` (the cluster this machine belongs to), ``"HOST:PORT"`` of a running head
    (``ray start --head``), or ``"local"`` (a private single-machine Ray). Each task takes
    ``cpus_per_study`` CPUs; each worker process loads the models once and keeps them for the studies
    it is given (:func:`~VertebralFractureLib.models.load_network` with ``cached``). The inputs and
    the batch folder must be reachable under the same paths on every node (shared storage).
    """

    def __init__(self, address: str, cpus_per_study: int = 1) -> None:
        try:
            import ray
        except ImportError as err:
            raise UsageError("--ray needs Ray: pip install 'vertebral-fracture[cluster]'") from err
        import logging

        try:
            ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                     logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UsageError(f"cannot connect to the Ray cluster at {address!r}: {' '.join(str(err).split())[:300]}") \
                from err
        self._ray = ray
        self._task = ray.remote(num_cpus=cpus_per_study)(_ray_study)
        self._threads = cpus_per_study

    def submit(self, fn: Callable[..., StudyResult], *args: Any) -> Any:
        """Like ``Executor.submit`` for :func:`analyse_study`: a ``concurrent.futures.Future``."""
        if fn is not analyse_study:
            raise ValueError("RayExecutor runs analyse_study only")
        return self._task.remote(self._threads, *args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Disconnect from the cluster (the cluster itself keeps running)."""
        self._ray.shutdown()


def _ray_study(threads: int, study: Study, out_dir: Path, options: dict[str, Any] | None) -> StudyResult:
    """One study on a Ray worker, with that task's share of the CPU threads."""
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return analyse_study(study, out_dir, options)


def _worker_init(threads: int) -> None:
    """Each worker process: its share of the CPU threads; interrupts left to the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


__all__ = ["FINDINGS_FILE", "STATE_FILE", "RayExecutor", "Study", "StudyResult", "analyse_study", "check_batch_folder",
           "find_studies", "findings_of", "read_state", "run_batch", "study_name"]
