"""A process-wide progress hub: steps report, the CLI (if any) displays with Rich."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Reporter(Protocol):
    def start(self, description: str, total: float | None) -> int: ...

    def update(self, handle: int, completed: float) -> None: ...

    def stop(self, handle: int) -> None: ...


_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> None:
    """Install (or remove, with None) the display that :func:`step` reports to."""
    global _reporter
    _reporter = reporter


@contextmanager
def step(description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
    """``with step("fit proxy", total=30) as update: ... update(epoch)``; silent without a reporter."""
    rep = _reporter
    if rep is None:
        yield lambda _done: None
        return
    handle = rep.start(description, total)
    try:
        yield lambda done: rep.update(handle, done)
    finally:
        rep.stop(handle)
