"""Decoding DICOM pixel data so that a corrupt slice costs that slice, never the process.

pydicom hands compressed pixel data to a plugin. GDCM, the first plugin it tries for JPEG 2000,
JPEG and JPEG-LS, aborts the whole process on some corrupt JPEG 2000 streams (a C++ exception
nothing catches: SIGABRT, exit 134). So:

* in this process only the plugins that fail with a Python exception are used — pylibjpeg
  (OpenJPEG, libjpeg, …), pydicom's own (RLE) and Pillow — in that order;
* GDCM is used only in a child process (``python -m VertebralFractureLib.io.dicom_decode``): for
  transfer syntaxes no in-process plugin can decode (e.g. JPEG Lossless without pylibjpeg-libjpeg),
  and as a second opinion on frames the in-process plugins refused. When the child dies, the frame
  it was decoding is named as the one that crashed the decoder and a new child goes on with the
  rest; after :data:`MAX_CHILD_CRASHES` crashes the remaining frames are given up.

What the decoders print on standard error is captured (:mod:`VertebralFractureLib.thirdparty`),
never shown raw. Messages name files only by their base name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: pydicom decoding plugins that raise a Python exception on bad data, in the order tried.
IN_PROCESS_PLUGINS = ("pylibjpeg", "pydicom", "pillow")
#: Plugins used only in a child process (they may abort the process on corrupt data).
CHILD_PLUGINS = ("gdcm",)
#: Child processes that may crash per series before the remaining frames are given up.
MAX_CHILD_CRASHES = 3
#: Seconds a child may take: this much, plus :data:`CHILD_SECONDS_PER_FRAME` a frame.
CHILD_BASE_SECONDS, CHILD_SECONDS_PER_FRAME = 60.0, 2.0


@dataclass(frozen=True)
class Frame:
    """One image to decode: a file and, for a multi-frame file, the frame index."""

    path: Path
    frame: int | None
    forced: bool  # read without the DICM preamble


def decode_frames(frames: list[Frame]) -> list[np.ndarray | str]:
    """Decode every frame; a frame that cannot be decoded gives the reason instead of an array.

    Args:
        frames: the images to decode, in any order (frames of one file are decoded together).

    Returns:
        For each frame, its stored pixel values (2D, no rescale applied), or one line saying why
        it could not be decoded (the decoders' own words, without object addresses).
    """
    results: list[np.ndarray | str | None] = [None] * len(frames)
    reasons: dict[int, str] = {}
    for_child: list[int] = []
    cache: tuple[Path, object] | None = None  # the last file's decoded array, or its failure
    for i, f in enumerate(frames):
        if cache is None or cache[0] != f.path:
            cache = (f.path, _decode_file(f))
        outcome = cache[1]
        if isinstance(outcome, _Deferred):
            reasons[i] = outcome.reason
            for_child.append(i)
        elif isinstance(outcome, str):
            results[i] = outcome
        else:
            results[i] = _pick(outcome, f)  # type: ignore[arg-type]
    if for_child:
        child = _decode_in_children([frames[i] for i in for_child])
        for i, got in zip(for_child, child):
            if isinstance(got, str):
                first = reasons[i]
                results[i] = _short(f"{first}; {got}" if first else got)
            else:
                results[i] = got
    return [r if r is not None else "not decoded" for r in results]


# ---------------------------------------------------------------------------------------- in process
@dataclass(frozen=True)
class _Deferred:
    """The file is left to the child process; ``reason`` is what the in-process plugins said."""

    reason: str


def _decode_file(f: Frame) -> np.ndarray | str | _Deferred:
    """All frames of ``f.path`` with the in-process plugins, a reason, or a referral to the child."""
    import pydicom
    from pydicom.pixels import get_decoder, pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f.path, force=f.forced)
            syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID", None)
            if not syntax or not syntax.is_compressed:
                return ds.pixel_array  # native (uncompressed) data: numpy only
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax.name} is not supported"
    except Exception as err:  # noqa: BLE001 — a corrupt file fails in many ways inside pydicom
        return error_line(err)
    available = list(decoder.available_plugins)
    errors = []
    for plugin in (p for p in IN_PROCESS_PLUGINS if p in available):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pixel_array(ds, decoding_plugin=plugin)
        except Exception as err:  # noqa: BLE001 — each plugin has its own errors
            errors.append(error_line(err))  # pydicom names the plugin
    said = _short("; ".join(errors))
    if any(p in available for p in CHILD_PLUGINS):
        return _Deferred(said)
    if said:
        return said
    return f"no decoder for {syntax.name} is installed (pylibjpeg with its plugins, or python-gdcm)"


def _pick(array: np.ndarray, f: Frame) -> np.ndarray | str:
    """The frame ``f`` asks for (the caller checks its shape)."""
    if f.frame is None:
        return array
    if array.ndim != 3 or f.frame >= array.shape[0]:
        return f"frame {f.frame + 1} is missing from the pixel data (shape {array.shape})"
    return array[f.frame]


_PLUGIN_PREAMBLE = re.compile(r"^Unable to decode as exceptions were raised by all available plugins:\s*", re.I)
_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>|\s*\(?at 0x[0-9a-fA-F]+\)?")


def error_line(err: BaseException) -> str:
    """An exception as one line of at most 300 characters, without pydicom's preamble or addresses."""
    text = _ADDRESS.sub("", " ".join(str(err).split()))
    return _short(_PLUGIN_PREAMBLE.sub("", text) or type(err).__name__)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------- child process
def _decode_in_children(frames: list[Frame]) -> list[np.ndarray | str]:
    """Decode ``frames`` with the child plugins in child processes, surviving their crashes."""
    out: list[np.ndarray | str | None] = [None] * len(frames)
    crashes = 0
    start = 0
    with tempfile.TemporaryDirectory(prefix="vf-decode-") as tmp:
        while start < len(frames):
            if crashes >= MAX_CHILD_CRASHES:
                for i in range(start, len(frames)):
                    out[i] = f"not tried: the GDCM decoder crashed on {crashes} earlier slices"
                break
            batch = frames[start:]
            done, failure = _run_child(batch, Path(tmp))
            for k, got in done.items():
                out[start + k] = got
            if failure is None:
                break
            # the first frame without an answer is the one the child died on
            missing = next((k for k in range(len(batch)) if k not in done), None)
            if missing is None:
                break
            if failure.startswith("could not start"):
                for i in range(start + missing, len(frames)):
                    out[i] = failure
                break
            out[start + missing] = failure
            crashes += 1
            start += missing + 1
    return [r if r is not None else "not decoded" for r in out]


def _run_child(batch: list[Frame], folder: Path) -> tuple[dict[int, np.ndarray | str], str | None]:
    """One child over ``batch``: its answers by index, and why it ended early (None: it finished)."""
    import VertebralFractureLib

    package_parent = str(Path(VertebralFractureLib.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    jobs = [{"path": str(f.path), "frame": f.frame, "forced": f.forced} for f in batch]
    timeout = CHILD_BASE_SECONDS + CHILD_SECONDS_PER_FRAME * len(batch)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "VertebralFractureLib.io.dicom_decode", str(folder)],
            input=json.dumps(jobs), capture_output=True, text=True, timeout=timeout, env=env,
        )
        stdout, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        code = None
    except OSError as err:
        return {}, f"could not start the GDCM decoder process: {err.strerror or err}"
    done: dict[int, np.ndarray | str] = {}
    for line in stdout.splitlines():
        try:
            answer = json.loads(line)
            k = int(answer["index"])
        except (ValueError, KeyError, TypeError):
            continue
        if "error" in answer:
            done[k] = str(answer["error"])  # pydicom names the plugin
        else:
            try:
                done[k] = np.load(folder / f"{k}.npy", allow_pickle=False)
            except (OSError, ValueError) as err:
                done[k] = f"gdcm: the decoded frame could not be read back ({err})"
            (folder / f"{k}.npy").unlink(missing_ok=True)
    if code == 0 and len(done) == len(batch):
        return done, None
    if code is None:
        return done, f"the GDCM decoder did not finish within {timeout:.0f} s"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return done, f"the GDCM decoder crashed on it ({name})"
    if code == 0:
        return done, "the GDCM decoder gave no answer for it"
    if not done and stdout.strip() == "":
        return done, f"could not start the GDCM decoder process (exit status {code})"
    return done, f"the GDCM decoder crashed on it (exit status {code})"


def _child_main(folder: str) -> int:
    """The child: decode the JSON job list on stdin with GDCM, answer one JSON line per frame."""
    import pydicom
    from pydicom.pixels import pixel_array

    jobs = json.loads(sys.stdin.read())
    cache: tuple[str, np.ndarray | str] | None = None
    for k, job in enumerate(jobs):
        if cache is None or cache[0] != job["path"]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(job["path"], force=job["forced"])
                    cache = (job["path"], pixel_array(ds, decoding_plugin=CHILD_PLUGINS[0]))
            except Exception as err:  # noqa: BLE001 — reported to the parent
                cache = (job["path"], error_line(err))
        got = cache[1]
        if isinstance(got, np.ndarray):
            got = _pick(got, Frame(Path(job["path"]), job["frame"], job["forced"]))
        if isinstance(got, str):
            answer = {"index": k, "error": got}
        else:
            np.save(Path(folder) / f"{k}.npy", np.ascontiguousarray(got), allow_pickle=False)
            answer = {"index": k}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the child process
    sys.exit(_child_main(sys.argv[1]))
