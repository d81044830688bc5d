"""Interrupts that end a run cleanly: SIGTERM and SIGHUP become exceptions, as SIGINT already is.

Python turns SIGINT into :class:`KeyboardInterrupt`, so ``try``/``finally`` blocks (the output
writer's removal of its partial folder, for one) run; SIGTERM (a cluster's or the Slicer module's
"stop") and SIGHUP (a closed terminal) would end the process on the spot and leave half-written
files. Inside :func:`signals_as_interrupts` all three raise :class:`Interrupted`, a
``KeyboardInterrupt`` that remembers its signal, and :func:`exit_code` gives the shell's code for it
(130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).

Native code that must not be interrupted halfway (importing VTK's compiled modules, a render) runs
inside :func:`deferred_signals`: a signal arriving there is held and delivered right after.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The signals that end a run cleanly (those that exist on this platform).
HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(exc: BaseException) -> int:
    """The conventional exit status for an interrupt: 128 + the signal number (130 for Ctrl-C)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only;
    elsewhere the block changes nothing). The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in HANDLED:
        try:
            previous[sig] = signal.signal(sig, _raise)
        except (OSError, ValueError):  # not settable here
            continue
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP for the duration of the block; a signal that arrives
    meanwhile is delivered (and raises, under :func:`signals_as_interrupts`) as soon as the block ends.

    Their Python handlers only record them meanwhile. Blocking them in this thread would not do: a
    signal sent to the process goes to any thread that does not block it (torch's and VTK's worker
    threads), and Python then runs its handler in the main thread at once, inside the block; and a
    signal left pending by a mask may arrive after the handlers are restored to the default action.
    (Main thread only; elsewhere the block changes nothing.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous: dict[int, Any] = {}
    for sig in HANDLED:
        try:
            previous[sig] = signal.signal(sig, record)
        except (OSError, ValueError):  # not settable here
            continue
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if pending:
            _deliver(pending[0], previous.get(pending[0]))


def _deliver(signum: int, handler: Any) -> None:
    """Deliver a signal held back by :func:`deferred_signals` as its handler would have."""
    if callable(handler):
        handler(signum, None)
    elif handler in (signal.SIG_DFL, None):
        signal.raise_signal(signum)  # the default action


__all__ = ["HANDLED", "Interrupted", "deferred_signals", "exit_code", "signals_as_interrupts"]
