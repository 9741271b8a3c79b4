"""A wall-clock limit for pure-Python work in any thread (pyxtal placements can search for many minutes).

``time_limit(seconds)`` arms a timer thread that, when the time is up, raises :class:`TimeLimitExceeded`
asynchronously in the calling thread (``PyThreadState_SetAsyncExc``); the exception arrives at the
next Python bytecode boundary, so it interrupts Python loops, not a long call inside one C function.
Unlike ``signal.alarm`` it works outside the main thread (Prefect runs tasks in worker threads).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TimeLimitExceeded(BaseException):
    """The guarded block ran past its time limit (a BaseException, so that libraries' ``except Exception``
    retry loops do not swallow it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in this thread if the block runs longer than ``seconds``."""
    thread_id = threading.get_ident()
    lock = threading.Lock()
    done = False

    def fire() -> None:
        with lock:
            if not done:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(TimeLimitExceeded))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done = True
        # a limit that fired just before ``done`` was set is delivered at the latest in this Python call
        timer.cancel()
