"""The wall-clock limit for pure-Python work (used around pyxtal placements)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from oracles.deadline import TimeLimitExceeded, time_limit


def _spin(seconds: float) -> int:
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
    return n


def test_a_python_loop_is_interrupted_in_a_worker_thread() -> None:
    outcome: list[str] = []

    def work() -> None:
        t0 = time.monotonic()
        try:
            with time_limit(0.2):
                _spin(10.0)
            outcome.append("finished")
        except TimeLimitExceeded:
            outcome.append(f"stopped after {time.monotonic() - t0:.1f} s")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert outcome and outcome[0].startswith("stopped after 0.")


def test_library_except_exception_does_not_swallow_the_limit() -> None:
    with pytest.raises(TimeLimitExceeded), time_limit(0.1):
        for _ in range(100):
            with contextlib.suppress(Exception):  # what a retrying library does
                _spin(0.05)


def test_work_that_finishes_in_time_is_not_interrupted_later() -> None:
    done = 0
    for _ in range(20):
        with time_limit(0.05):
            _spin(0.001)
        done += 1
    assert done == 20
    assert _spin(0.2) > 0  # a late limit would raise here instead
