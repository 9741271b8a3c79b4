"""Turning expected user errors into one clear paragraph and a non-zero exit, without a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True)


class UserError(Exception):
    """An error in what the user gave us (a file, a flag, a config); its message says the fix."""


def fail(message: str, *, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Report ``UserError`` (and the given exception kinds) as a one-paragraph message, exit 2."""
    caught: tuple[type[BaseException], ...] = (UserError, *kinds)
    try:
        yield
    except caught as exc:
        fail(str(exc))

