"""The child-process runner (:mod:`VertebralFractureLib.process`) with real child processes."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from VertebralFractureLib.process import STAGE_WEIGHTS, ProcessRun, kill_process_tree

FULL = ("read", "localize", "segment", "grade", "write")
CENTROIDS = ("read", "given-centroids", "segment", "grade", "write")


def _python(script: str, **kwargs) -> tuple[ProcessRun, list[tuple[float, str, str]]]:
    progress: list[tuple[float, str, str]] = []
    run = ProcessRun([sys.executable, "-c", textwrap.dedent(script)], environment=dict(os.environ),
                     working_directory=os.getcwd(), progress_callback=lambda f, s, m: progress.append((f, s, m)),
                     **kwargs)
    return run, progress


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_json_lines_become_progress_of_the_whole_run(tmp_path):
    run, progress = _python(f"""
        import json
        for stage, fraction in [("read", 0.0), ("read", 1.0), ("localize", 0.5), ("segment", 0.25),
                                ("grade", 1.0), ("write", 0.5)]:
            print(json.dumps({{"stage": stage, "fraction": fraction, "message": stage + " step"}}), flush=True)
        print("a log line that is not JSON", flush=True)
        print("{{not json either", flush=True)
        print(json.dumps({{"stage": "done", "fraction": 1.0, "message": "ok", "output": {str(tmp_path)!r},
                          "warnings": ["accuracy: names within one level in 9 of 10 synthetic scans"]}}), flush=True)
    """, stage_order=FULL)
    finished = []
    run.finished_callback = finished.append
    run.start()
    assert run.wait(timeout=60)
    assert finished == [run] and run.returncode == 0 and run.error is None and not run.is_running()
    assert run.output_folder == str(tmp_path)
    assert run.warnings == ["accuracy: names within one level in 9 of 10 synthetic scans"]
    fractions = [f for f, _, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and progress[-1][1] == "loading results"
    total = sum(STAGE_WEIGHTS[s] for s in FULL)
    assert fractions[0] == 0.0 and fractions[1] == pytest.approx(STAGE_WEIGHTS["read"] / total)
    assert fractions[2] == pytest.approx((STAGE_WEIGHTS["read"] + 0.5 * STAGE_WEIGHTS["localize"]) / total)
    assert progress[2][1:] == ("localize", "localize step")
    assert list(run.log_tail) == ["a log line that is not JSON", "{not json either"]
    assert run.elapsed_seconds() > 0


def test_the_centroid_path_has_its_own_stage_order():
    run = ProcessRun(["true"], stage_order=CENTROIDS)
    # no localization: the given-centroids stage is short, so segmenting starts early on the bar
    total = sum(STAGE_WEIGHTS[s] for s in CENTROIDS)
    assert run.overall_fraction("segment", 0.0) == pytest.approx(
        (STAGE_WEIGHTS["read"] + STAGE_WEIGHTS["given-centroids"]) / total)
    assert run.overall_fraction("localize", 0.5) == 0.0  # a stage this run does not go through
    assert run.overall_fraction("write", 2.0) == 1.0  # clamped


def test_poll_never_waits_and_finishes_once():
    """A GUI timer calls poll(): it returns at once while the child is quiet and reports the end once."""
    run, progress = _python("""
        import json, sys, time
        print(json.dumps({"stage": "localize", "fraction": 0.5, "message": ""}), flush=True)
        time.sleep(1.0)
        print(json.dumps({"stage": "localize", "fraction": 1.0, "message": ""}), flush=True)
    """, stage_order=FULL)
    ends = []
    run.finished_callback = ends.append
    run.start()
    t0 = time.monotonic()
    calls, slowest = 0, 0.0
    while True:
        t = time.monotonic()
        done = run.poll()
        slowest = max(slowest, time.monotonic() - t)
        if done:
            break
        calls += 1
        time.sleep(0.02)
        assert time.monotonic() - t0 < 60
    assert slowest < 0.2 and calls > 5  # the child slept 1 s: many polls came back empty
    assert run.poll() and ends == [run]  # polling after the end does nothing more
    assert [s for _, s, _ in progress] == ["localize", "localize"]


def test_the_error_line_is_the_error():
    run, _ = _python("""
        import json, sys
        print(json.dumps({"stage": "error", "fraction": 1.0, "message": "model not available: localization"}), flush=True)
        print("vertebral-fracture: error: model not available: localization", file=sys.stderr)
        sys.exit(4)
    """)
    run.start()
    run.wait(timeout=60)
    assert run.returncode == 4 and run.error == "model not available: localization" and not run.cancelled


def test_a_crash_without_json_names_the_exit_status_and_the_last_output():
    run, _ = _python("import sys; print('Traceback: something broke', file=sys.stderr); sys.exit(3)")
    run.start()
    run.wait(timeout=60)
    assert run.error == "the analysis process exited with code 3: Traceback: something broke"


def test_wait_with_a_timeout_returns_while_the_child_runs():
    run, _ = _python("import time; time.sleep(60)")
    run.start()
    try:
        t0 = time.monotonic()
        assert run.wait(timeout=0.3) is False
        assert 0.25 < time.monotonic() - t0 < 5 and run.is_running()
    finally:
        run.cancel()
        assert run.wait(timeout=30)


@pytest.mark.skipif(os.name == "nt", reason="process-group check written for POSIX")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """The launcher (PythonSlicer) starts the real Python as a child: cancel must stop both."""
    pid_file = tmp_path / "child.pid"
    run, progress = _python(f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print(json.dumps({{"stage": "localize", "fraction": 0.1, "message": "working"}}), flush=True)
        time.sleep(120)
    """, stage_order=FULL)
    run.start()
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert run.is_running() and _alive(child) and _alive(run.process.pid)
    t0 = time.monotonic()
    run.cancel()
    assert run.wait(timeout=30)
    assert time.monotonic() - t0 < 10
    assert run.cancelled and not run.is_running() and run.returncode != 0 and run.error is None
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the child process survived cancel"
    assert not _alive(run.process.pid)


def test_cancel_from_another_thread_ends_a_blocking_wait():
    run, _ = _python("import time; time.sleep(120)")
    run.start()
    threading.Timer(0.3, run.cancel).start()
    t0 = time.monotonic()
    assert run.wait(timeout=60) and run.cancelled
    assert time.monotonic() - t0 < 10


def test_kill_process_tree_leaves_an_ended_process_alone():
    run, _ = _python("pass")
    run.start()
    run.wait(timeout=60)
    kill_process_tree(run.process)  # no error, nothing to kill
    run.cancel()
    assert not run.cancelled and run.returncode == 0


def test_bad_use_is_refused(tmp_path):
    with pytest.raises(ValueError, match="non-empty list"):
        ProcessRun([])
    run = ProcessRun([str(tmp_path / "no-such-program")])
    with pytest.raises(RuntimeError, match="not been started"):
        run.wait()
    assert run.poll() is False and not run.is_running() and run.elapsed_seconds() == 0.0
    with pytest.raises(OSError):
        run.start()
    ok, _ = _python("pass")
    ok.start()
    with pytest.raises(RuntimeError, match="started already"):
        ok.start()
    ok.wait(timeout=60)


def test_a_failing_progress_display_does_not_stop_the_run():
    def broken(fraction, stage, message):
        raise ZeroDivisionError("display bug")

    run = ProcessRun([sys.executable, "-c", "import json; print(json.dumps({'stage': 'read', 'fraction': 1.0}))\n"
                      "print(json.dumps({'stage': 'done', 'output': '/x'}))"],
                     stage_order=FULL, progress_callback=broken)
    run.start()
    assert run.wait(timeout=60) and run.error is None and run.output_folder == "/x"


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_cancel_lets_the_child_clean_up_first(tmp_path):
    """The command removes its half-written folder on SIGTERM: cancel asks before it kills."""
    marker = tmp_path / "cleaned"
    run, progress = _python(f"""
        import json, signal, sys, time
        def stop(signum, frame):
            open({str(marker)!r}, "w").write("cleaned")
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        print(json.dumps({{"stage": "localize", "fraction": 0.1, "message": "working"}}), flush=True)
        time.sleep(120)
    """, stage_order=FULL)
    run.start()
    deadline = time.monotonic() + 20
    while not progress and time.monotonic() < deadline:
        time.sleep(0.05)
    run.cancel()
    assert run.wait(timeout=30) and run.cancelled
    assert marker.read_text() == "cleaned" and run.returncode == 143


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_child_that_ignores_the_request_is_killed_after_the_grace(monkeypatch):
    from VertebralFractureLib import process

    monkeypatch.setattr(process, "CANCEL_GRACE_S", 0.5)
    run, _ = _python("""
        import json, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(json.dumps({"stage": "localize", "fraction": 0.1, "message": "working"}), flush=True)
        time.sleep(120)
    """, stage_order=FULL)
    run.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    run.cancel()
    assert run.wait(timeout=30) and run.cancelled
    assert time.monotonic() - t0 < 10 and run.returncode == -signal.SIGKILL
