"""What third-party libraries print, turned into one line of our own.

ITK, VTK, GDCM and OpenJPEG are C/C++ libraries: their warnings go straight to the process's
standard error (file descriptor 2), past Python, often over several lines with source file and line
numbers, object addresses and — from VTK's logger on a terminal — ANSI colour codes. A user of the
command line should see one readable line, and an analysis should keep what was said in its
warnings.

:func:`native_messages` redirects file descriptor 2 into a temporary file while a block of native
code runs and hands back what was printed as cleaned one-line messages. Python's own ``sys.stderr``
keeps going to the terminal meanwhile (when it is the process's standard error), so progress bars
are not swallowed. :func:`summary` joins the messages of one library into a single line.

Standard library only.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: Longest message kept (characters); longer ones are cut with "…".
MAX_MESSAGE_CHARS = 300
#: Messages named in a :func:`summary` line before "and N more".
SUMMARY_MESSAGES = 2

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# ITK: "WARNING: In /path/itkNiftiImageIO.cxx, line 2008"; VTK: "Warning: In /path/vtkX.cxx, line 12"
_SOURCE_LINE = re.compile(r"^(warning|error|debug|generic warning|generic error):? in .*, line \d+\s*$", re.I)
# VTK's logger: "2026-12-02 17:32:16.077 (   0.034s) [main thread     ]vtkEGLRenderWindow.cxx:353   WARN| "
_VTK_LOG_PREFIX = re.compile(
    r"^(\d{4}-\d{2}-\d{2} [\d:.]+\s*)?\(\s*[\d.]+s\)\s*\[[^\]]*\]\s*[\w.]*:\d+\s+(\w+)\|\s*(\.\s*)*")
# "NiftiImageIO (0x55ebd88f16d0): " or "vtkEGLRenderWindow (0x5634…): " (the name is kept)
_OBJECT_PREFIX = re.compile(r"^([A-Za-z_][\w:]*) \(0x[0-9a-fA-F]+\):\s*")
_ADDRESS = re.compile(r"\s*\(?(?:object )?at 0x[0-9a-fA-F]+\)?|\s*\(0x[0-9a-fA-F]+\)")
# an absolute path (POSIX or Windows): only its last part is kept — folder names can name patients
_PATH = re.compile(r"(?:[A-Za-z]:\\|/)(?:[^\s/\\:'\"]+[/\\])+([^\s/\\:'\"]+)")
_LIBRARIES = (("vtk", "VTK"), ("itk", "ITK"), ("imageio", "ITK"), ("gdcm", "GDCM"), ("opj", "OpenJPEG"),
              ("openjpeg", "OpenJPEG"))


def strip_ansi(text: str) -> str:
    """``text`` without ANSI terminal escape codes (colours, cursor movement)."""
    return _ANSI.sub("", text)


def clean(text: str) -> str:
    """One readable line from a library message: no colour codes, source locations, addresses or folders.

    Absolute paths are cut to their last part: a folder name may hold a patient's name.
    """
    lines = []
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.strip()
        if not line or _SOURCE_LINE.match(line):
            continue
        line = _VTK_LOG_PREFIX.sub("", line)
        line = _OBJECT_PREFIX.sub(r"\1: ", line)
        lines.append(_PATH.sub(r"\1", _ADDRESS.sub("", line)).strip())
    out = " ".join(" ".join(ln for ln in lines if ln).split())
    return out if len(out) <= MAX_MESSAGE_CHARS else out[: MAX_MESSAGE_CHARS - 1] + "…"


def split_messages(text: str) -> list[str]:
    """Cleaned messages of a captured stream, in order, without repeats.

    ITK and VTK end each message with a blank line and open it with a ``Warning: In file, line N``
    line: the lines between are joined. VTK's logger writes a message a line, sometimes followed by
    an indented dump of an object's state, which is left out.
    """
    blocks: list[list[str]] = []
    current: list[str] = []
    in_log_dump = False
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.strip()
        log_line = bool(_VTK_LOG_PREFIX.match(line))
        starts = log_line or bool(_SOURCE_LINE.match(line))
        if not line or starts:
            if current:
                blocks.append(current)
            current = [line] if starts else []
            in_log_dump = log_line
            continue
        if not in_log_dump:
            current.append(line)
    if current:
        blocks.append(current)
    out: list[str] = []
    for block in blocks:
        message = clean("\n".join(block))
        if message and message not in out:
            out.append(message)
    return out


def library_of(text: str) -> str:
    """A guess at which library printed a message (``VTK``, ``ITK``, …), for the summary line."""
    low = text.lower()
    for prefix, name in _LIBRARIES:
        if prefix in low:
            return name
    return "a library"


def summary(messages: list[str], when: str) -> str | None:
    """One line for the messages printed during one step, e.g. while rendering; None without any.

    Example: ``"VTK said while rendering: EGL device index 0 could not be initialized (and 2 more)"``.
    """
    if not messages:
        return None
    names = sorted({library_of(m) for m in messages})
    who = " and ".join(names)
    shown = "; ".join(messages[:SUMMARY_MESSAGES])
    more = len(messages) - SUMMARY_MESSAGES
    return f"{who} said {when}: {shown}" + (f" (and {more} more)" if more > 0 else "")


def _python_stderr_is_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


@contextmanager
def native_messages(into: list[str]) -> Iterator[None]:
    """Capture what native code prints on standard error during the block; append it to ``into``.

    The messages are cleaned (:func:`split_messages`). When file descriptor 2 cannot be redirected
    (no such descriptor, e.g. a GUI process on Windows), the block runs without capture.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    swap_python = _python_stderr_is_fd2()
    old_python = sys.stderr
    sink = tempfile.TemporaryFile()
    python_stream = None
    try:
        if old_python is not None:
            old_python.flush()
        os.dup2(sink.fileno(), 2)
        if swap_python:  # Python's own writes keep going where they went
            python_stream = open(os.dup(saved), "w", buffering=1, encoding=getattr(old_python, "encoding", None),
                                 errors="backslashreplace", closefd=True)
            sys.stderr = python_stream
        yield
    finally:
        if swap_python:
            sys.stderr = old_python
            if python_stream is not None:
                python_stream.close()
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", errors="replace")
        sink.close()
        for message in split_messages(text):
            if message not in into:
                into.append(message)
