"""Fault injection for the kill tests: ``MATLOOP_KILL_AT="<point>:<n>[:<signal>]"`` sends this process
SIGKILL (or the named signal, e.g. ``TERM``) the n-th time it reaches ``<point>`` (points: proxy_fitted,
generator_trained, sampled, selected, oracle_started, result_recorded, logged; queued oracles:
job_submitted (submitted, not yet recorded), submitted (recorded)). Unset in normal use, where
:func:`point` does nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV = "MATLOOP_KILL_AT"
_seen: Counter[str] = Counter()
_lock = threading.Lock()


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, rest = spec.partition(":")
    nth, _, sig = rest.partition(":")
    if target != name:
        return
    with _lock:
        _seen[name] += 1
        hit = _seen[name] == int(nth or 1)
    if hit:
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}") if sig else signal.SIGKILL)
