"""Choosing an oracle by name: built-ins plus the ``matloop.oracles`` entry-point group.

Built-ins (``chgnet``, ``density``, ``dft``, ``gpaw``, ``replay``) are always available, declared or not in the
package metadata. A user's package adds an oracle without touching matloop by declaring::

    [project.entry-points."matloop.oracles"]
    my_dft = "my_package.oracles:MyDFTOracle"

where the target is a class (or factory function) called with the settings as keyword arguments
and returning an object that satisfies :class:`oracles.base.Oracle`. A built-in name cannot be
overridden by an entry point (the built-in wins, so a stray plugin cannot change default labels).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from oracles.base import Oracle

GROUP = "matloop.oracles"
BUILTINS: dict[str, str] = {
    "chgnet": "oracles.chgnet:CHGNetOracle",
    "density": "oracles.density:DensityOracle",
    "dft": "oracles.dft.oracle:DFTOracle",
    "gpaw": "oracles.dft.oracle:GPAWOracle",
    "replay": "oracles.replay:ReplayOracle",
}


class UnknownOracleError(KeyError):
    """No oracle by that name; the message lists the available ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in BUILTINS}


def available_oracles() -> list[str]:
    """Names of the built-in oracles and of every installed ``matloop.oracles`` entry point, sorted."""
    return sorted({*BUILTINS, *_plugins()})


def _load(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def get_oracle(name: str, **settings: Any) -> Oracle:
    """Instantiate the oracle ``name`` with ``settings`` (keyword options; see each oracle's settings).

    Raises :class:`UnknownOracleError` for an unknown name, ``TypeError`` if the object built does not
    satisfy the :class:`Oracle` protocol, and the oracle's own validation error for bad settings.
    """
    if name in BUILTINS:
        factory = _load(BUILTINS[name])
    else:
        plugins = _plugins()
        if name not in plugins:
            raise UnknownOracleError(f"unknown oracle {name!r}; available: {', '.join(available_oracles())}")
        factory = plugins[name].load()
    oracle = factory(**settings)
    if not isinstance(oracle, Oracle):
        raise TypeError(f"oracle {name!r} ({factory!r}) does not implement the Oracle protocol "
                        "(needs a `name` attribute and an `evaluate(candidates, *, seed, progress)` method)")
    return oracle
