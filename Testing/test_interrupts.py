"""Interrupting ``analyze`` leaves the complete result or nothing.

``analyze`` runs in a child process with ``--progress json``; as soon as it reports a given stage
(reading, stage 1, stage 2, grading, writing, rendering the 3D view) the child is sent SIGINT,
SIGTERM or SIGHUP. Whatever the moment: the exit status is the signal's (130 / 143 / 129) or 0,
no traceback or native crash, the output folder either absent or complete, nothing hidden left
beside it, the input unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from factories import load_utility

from VertebralFractureLib import cli, models
from VertebralFractureLib.interrupts import Interrupted, deferred_signals, exit_code, signals_as_interrupts

REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


check_demo_output = load_utility("check_demo_output")


# ------------------------------------------------------------------------------------ the helpers
def _to_main_thread(sig: int) -> None:
    """Send ``sig`` to this (the main) thread. Sent to the process, it may land in any other thread
    (torch's pools), which may take it only after the block under test has ended."""
    signal.pthread_kill(threading.main_thread().ident, sig)


@POSIX
def test_sigterm_and_sighup_raise_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, signals_as_interrupts():
        _to_main_thread(signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert info.value.signum == signal.SIGTERM and exit_code(info.value) == 143
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(Interrupted) as info, signals_as_interrupts():
        _to_main_thread(signal.SIGHUP)
        for _ in range(1000):
            pass
    assert exit_code(info.value) == 129
    assert exit_code(KeyboardInterrupt()) == 130


@POSIX
def test_a_signal_during_deferred_work_arrives_after_it():
    done = []
    with pytest.raises(Interrupted), signals_as_interrupts():
        with deferred_signals():
            _to_main_thread(signal.SIGTERM)
            for _ in range(1000):
                pass
            done.append("finished")  # not interrupted halfway
        for _ in range(1000):
            pass
        done.append("after")  # never reached: the signal is delivered when the block ends
    assert done == ["finished"]


@POSIX
def test_a_signal_that_another_thread_receives_during_deferred_work_still_arrives_after_it():
    """A signal sent to the process may land in any thread that does not block it (torch's and VTK's
    worker threads): Python then runs the handler in the main thread at once. Deferred work must
    still finish first."""
    started, stop = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (started.set(), stop.wait(10)))
    worker.start()
    started.wait(5)
    done = []
    try:
        with pytest.raises(Interrupted) as info, signals_as_interrupts():
            with deferred_signals():
                signal.pthread_kill(worker.ident, signal.SIGTERM)  # the worker does not block it
                time.sleep(0.3)  # the worker takes it; Python's handler then runs here, in the main thread
                done.append("finished")
            for _ in range(1000):
                pass
            done.append("after")
    finally:
        stop.set()
        worker.join()
    assert done == ["finished"] and info.value.signum == signal.SIGTERM


def test_outside_the_main_thread_the_handlers_are_left_alone():
    seen = []

    def work():
        with signals_as_interrupts(), deferred_signals():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGINT)]


# ------------------------------------------------------------------------ analyze, interrupted
NEEDS_MODELS = pytest.mark.skipif(
    any(models.model_status(m) != "ok" for m in ("localization", "segmentation")),
    reason="the stage-1 and stage-2 models are not installed in Resources/Models")


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory) -> Path:
    """A SynthSpine CT of T11–L3 without a body at 2 mm: the whole analysis takes a few seconds."""
    root = tmp_path_factory.mktemp("interrupt-data")
    code = cli.main(["synth", "-o", str(root / "data"), "--n", "1", "--no-body", "--spacing", "2", "2", "2",
                     "--fov", "160", "--levels", "T11", "L3", "--progress", "none"])
    assert code == 0
    return root / "data" / "rawdata" / "sub-synth0000" / "sub-synth0000_ct.nii.gz"


def _interrupt(ct: Path, out: Path, stage: str, message: str | None, sig: int) -> tuple[int, str, bool]:
    """Run ``analyze`` and send ``sig`` when it first reports ``stage`` (and ``message``, if given).
    Returns the exit status, stderr and whether the signal was sent."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "VertebralFractureLib", "analyze", str(ct), "-o", str(out),
                             "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    sent = False
    timer = threading.Timer(240, proc.kill)  # a hung child fails the test instead of the suite
    timer.start()
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (not sent and event.get("stage") == stage
                    and (message is None or message in str(event.get("message", "")))):
                proc.send_signal(sig)
                sent = True
        proc.wait()
        err = proc.stderr.read()
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.stderr.close()
    return proc.returncode, err, sent


STAGES = [("read", None), ("localize", None), ("segment", None), ("grade", None), ("write", None),
          ("write", "3D view")]


# the default suite interrupts each stage once, the two signals alternating; the slow suite
# (``make test-slow``) sends both signals at every stage
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MATRIX = [pytest.param(stage, message, sig, id=f"{message or stage}-{sig.name}",
                       marks=() if sig == _SIGNALS[k % 2] else pytest.mark.slow)
          for k, (stage, message) in enumerate(STAGES) for sig in _SIGNALS]


@NEEDS_MODELS
@POSIX
@pytest.mark.parametrize("stage, message, sig", MATRIX)
def test_an_interrupted_analysis_leaves_the_whole_result_or_nothing(small_ct, tmp_path, stage, message, sig):
    digest = hashlib.sha256(small_ct.read_bytes()).hexdigest()
    out = tmp_path / "result"
    code, err, sent = _interrupt(small_ct, out, stage, message, sig)
    assert sent, f"analyze never reported the stage {stage!r} {message or ''}"
    assert code in (128 + sig, 0), f"exit {code}: {err}"
    assert "Traceback" not in err and "Segmentation fault" not in err and "core dumped" not in err
    if out.exists():
        assert check_demo_output.problems(out) == []
    else:
        assert "cancelled by" in err and "nothing was written" in err
    assert [p.name for p in tmp_path.iterdir() if p.name != "result"] == [], "something was left beside the output"
    assert hashlib.sha256(small_ct.read_bytes()).hexdigest() == digest


@NEEDS_MODELS
@POSIX
def test_a_closed_terminal_ends_the_analysis_cleanly(small_ct, tmp_path):
    out = tmp_path / "result"
    code, err, sent = _interrupt(small_ct, out, "segment", None, signal.SIGHUP)
    assert sent and code == 129, err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "cancelled by SIGHUP; nothing was written" in err


@POSIX
@pytest.mark.parametrize("kind", ["probe", "partial"])
def test_a_signal_just_after_a_hidden_folder_is_made_leaves_nothing(tmp_path, monkeypatch, kind):
    """The signal that lands between creating the hidden sibling (or the writability probe) and
    the code that removes it: delivered only once the removal is guaranteed."""
    import tempfile

    from VertebralFractureLib.io import output

    real_mkdir, real_mkdtemp = Path.mkdir, tempfile.mkdtemp

    def mkdir_then_signal(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if f".{kind}-" in self.name:
            _to_main_thread(signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass

    def mkdtemp_then_signal(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        _to_main_thread(signal.SIGTERM)
        for _ in range(1000):
            pass
        return path

    if kind == "probe":
        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_then_signal)
    else:
        monkeypatch.setattr(Path, "mkdir", mkdir_then_signal)
    filled = []
    with pytest.raises(Interrupted), signals_as_interrupts():
        if kind == "probe":
            output.check_destination(tmp_path / "result", False, ())
        else:
            output.write_folder(tmp_path / "result", lambda folder: filled.append(folder))
    assert list(tmp_path.iterdir()) == []
