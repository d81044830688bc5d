"""Run an analysis in a child process and follow its JSON-lines progress.

The 3D Slicer module starts ``PythonSlicer -m VertebralFractureLib analyze … --progress json`` so
that inference never blocks the application (the layout of SlicerMONAIAuto3DSeg's ``Lib``). The
child prints one JSON object a line (``{"stage": "segment", "fraction": 0.4, "message": "…"}``,
then ``{"stage": "done", "output": …}`` or ``{"stage": "error", "message": …}``); every other line
is log output.

:class:`ProcessRun` reads the child's output on a thread into a queue. A GUI calls
:meth:`ProcessRun.poll` from a timer on its main thread, so callbacks run there and the GUI never
waits on the pipe; a batch script calls :meth:`ProcessRun.wait`. :meth:`ProcessRun.cancel` kills
the whole process tree (the Slicer launcher starts the real Python as its child).

Standard library only: no Qt, no Slicer.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: Share of the progress bar per pipeline stage (normalised over the stages a run goes through).
STAGE_WEIGHTS: dict[str, float] = {
    "read": 3, "localize": 35, "given-centroids": 2, "segment": 35, "given-segmentation": 10, "grade": 12,
    "write": 15,
}
#: Weight of a stage missing from :data:`STAGE_WEIGHTS`.
DEFAULT_STAGE_WEIGHT = 10.0
#: Output lines kept for the error message of a run that ends without a JSON error line.
LOG_TAIL_LINES = 20

#: ``progress_callback(fraction of the whole run, stage, message)``.
ProgressCallback = Callable[[float, str, str], None]


class ProcessRun:
    """One analysis in a child process.

    Args:
        command: the program and its arguments.
        environment: the child's environment (default: this process's).
        working_directory: the child's working directory (default: this process's).
        stage_order: the stages the run goes through, in order, for :meth:`overall_fraction`.
        progress_callback: called as ``progress_callback(fraction, stage, message)`` for every
            progress line (fraction of the whole run, 0–1), from the thread that calls
            :meth:`poll` or :meth:`wait`.
        finished_callback: called as ``finished_callback(run)`` once, when the child has ended and
            all its output has been handled.

    Attributes:
        process: the ``subprocess.Popen`` once started.
        returncode: the child's exit status once finished.
        error: one line saying why the run failed (the child's JSON error line, or its exit status
            and last output lines), None when it did not fail or was cancelled.
        output_folder: the ``output`` of the child's "done" line.
        warnings: the ``warnings`` of the child's "done" line.
        log_tail: the last non-JSON output lines.
        cancelled: :meth:`cancel` was called while the child ran.
        finished: the child has ended and its output has been handled.
        user_data: free for the caller (e.g. what to load when the run ends).
    """

    def __init__(
        self,
        command: Sequence[str],
        environment: Mapping[str, str] | None = None,
        working_directory: str | os.PathLike[str] | None = None,
        stage_order: Sequence[str] = (),
        progress_callback: ProgressCallback | None = None,
        finished_callback: Callable[[ProcessRun], None] | None = None,
    ) -> None:
        if not command or not all(isinstance(c, (str, os.PathLike)) for c in command):
            raise ValueError(f"command must be a non-empty list of strings, got {command!r}")
        self.command = [str(c) for c in command]
        self.environment = None if environment is None else dict(environment)
        self.working_directory = None if working_directory is None else str(working_directory)
        self.stage_order = tuple(stage_order)
        self.progress_callback = progress_callback
        self.finished_callback = finished_callback
        self.process: subprocess.Popen[str] | None = None
        self.returncode: int | None = None
        self.error: str | None = None
        self.output_folder: str | None = None
        self.warnings: list[str] = []
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.cancelled = False
        self.finished = False
        self.user_data: dict[str, Any] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._start_time = 0.0
        self._end_time: float | None = None

    # ------------------------------------------------------------------------------------ process
    def start(self) -> None:
        """Start the child (in its own process group, so that :meth:`cancel` reaches its children).

        Raises:
            RuntimeError: when the run was started before.
            OSError: when the program cannot be started (e.g. not found).
        """
        if self.process is not None:
            raise RuntimeError("this run was started already")
        logger.info("running %s", " ".join(self.command))
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True
        self._start_time = time.monotonic()
        self.process = subprocess.Popen(
            self.command, env=self.environment, cwd=self.working_directory, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
            errors="replace", bufsize=1, **kwargs)
        self._reader = threading.Thread(target=self._read_output, name="VertebralFracture-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        """Reader thread: queue every output line; None marks the end of the child."""
        process = self.process
        if process is None or process.stdout is None:  # pragma: no cover - started with a pipe
            self._lines.put(None)
            return
        try:
            for line in process.stdout:
                self._lines.put(line.rstrip("\r\n"))
        finally:
            process.wait()
            self._lines.put(None)

    def poll(self) -> bool:
        """Handle the output that has arrived, without waiting; True once the run has finished.

        Call it from a timer on the GUI's main thread: the callbacks run on the calling thread.
        """
        if self.finished:
            return True
        if self.process is None:
            return False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return False
            if line is None:
                self._finish()
                return True
            self._handle_line(line)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the child ends, handling its output (batch use).

        Args:
            timeout: seconds to wait at most; None waits for the end.

        Returns:
            True when the run has finished, False when ``timeout`` passed first.

        Raises:
            RuntimeError: when the run was not started.
        """
        if self.process is None:
            raise RuntimeError("this run has not been started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                return False
            if line is None:
                self._finish()
            else:
                self._handle_line(line)
        return True

    def _handle_line(self, line: str) -> None:
        message: Any = None
        if line.startswith("{"):
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                message = None
        if not isinstance(message, dict) or "stage" not in message:
            if line.strip():
                self.log_tail.append(line)
                logger.info("%s", line)
            return
        stage = str(message["stage"])
        text = str(message.get("message", ""))
        if stage == "error":
            self.error = text or "the analysis failed"
        elif stage == "done":
            self.output_folder = None if message.get("output") is None else str(message["output"])
            self.warnings = [str(w) for w in message.get("warnings") or []]
            self._report(1.0, "loading results", "")
        else:
            try:
                fraction = float(message.get("fraction", 0.0))
            except (TypeError, ValueError):
                fraction = 0.0
            self._report(self.overall_fraction(stage, fraction), stage, text)

    def overall_fraction(self, stage: str, fraction: float) -> float:
        """The position in the whole run of ``fraction`` of ``stage`` (0 for a stage not in the order)."""
        order = self.stage_order
        if stage not in order:
            return 0.0
        weights = [float(STAGE_WEIGHTS.get(s, DEFAULT_STAGE_WEIGHT)) for s in order]
        k = order.index(stage)
        done = sum(weights[:k]) + weights[k] * min(1.0, max(0.0, fraction))
        return done / sum(weights)

    def _report(self, fraction: float, stage: str, message: str) -> None:
        if self.progress_callback is None:
            return
        try:
            self.progress_callback(fraction, stage, message)
        except Exception:  # noqa: BLE001 - a display error must not stop following the run
            logger.exception("the progress display failed")

    def _finish(self) -> None:
        self.finished = True
        self._end_time = time.monotonic()
        self.returncode = self.process.returncode if self.process is not None else None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.cancelled:
            self.error = None
        elif self.returncode != 0 and self.error is None:
            tail = " | ".join(list(self.log_tail)[-3:])
            self.error = f"the analysis process exited with code {self.returncode}" + (f": {tail}" if tail else "")
        if self.finished_callback is not None:
            self.finished_callback(self)

    # ------------------------------------------------------------------------------------ state
    def is_running(self) -> bool:
        """Started and not yet finished (output may still be waiting to be handled)."""
        return self.process is not None and not self.finished

    def elapsed_seconds(self) -> float:
        """Seconds since the start (until the end, once finished)."""
        if self.process is None:
            return 0.0
        end = self._end_time if self._end_time is not None else time.monotonic()
        return end - self._start_time

    def cancel(self) -> None:
        """Stop the child and all its children; the run then finishes with ``cancelled`` set.

        The child is asked first (SIGTERM: the command removes what it had half written and exits
        143) and killed :data:`CANCEL_GRACE_S` seconds later if it is still there.
        """
        if self.process is None or self.finished:
            return
        self.cancelled = True
        kill_process_tree(self.process, grace_s=CANCEL_GRACE_S)


#: Seconds a cancelled child has to end itself before it is killed.
CANCEL_GRACE_S = 5.0


def kill_process_tree(process: subprocess.Popen[Any], grace_s: float = 0.0) -> None:
    """End a child started in its own process group (POSIX) or process group (Windows), and its children.

    On POSIX the whole process group is sent SIGTERM when ``grace_s`` > 0 and SIGKILL ``grace_s``
    seconds later (from a timer thread, so the caller does not wait); SIGKILL at once otherwise.
    On Windows ``taskkill /T`` ends the tree.
    """
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        return
    if grace_s > 0:
        _signal_group(process.pid, signal.SIGTERM)
        timer = threading.Timer(grace_s, _kill_group, args=(process,))
        timer.daemon = True
        timer.start()
        return
    _kill_group(process)


def _kill_group(process: subprocess.Popen[Any]) -> None:
    _signal_group(process.pid, signal.SIGKILL)
    try:
        process.kill()
    except OSError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


__all__ = ["CANCEL_GRACE_S", "DEFAULT_STAGE_WEIGHT", "STAGE_WEIGHTS", "ProcessRun", "ProgressCallback", "kill_process_tree"]
