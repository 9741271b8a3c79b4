"""Choosing an oracle by name: built-ins plus the ``matloop.oracles`` entry-point group.

Built-ins (``ase``, ``chgnet``, ``density``, ``dft``, ``gpaw``, ``replay``, ``sevennet``) are always available, declared or not in the
package metadata. A user's package adds an oracle without touching matloop by declaring::

    [project.entry-points."matloop.oracles"]
    my_dft = "my_package.oracles:MyDFTOracle"

where the target is a class (or factory function) called with the settings as keyword arguments
and returning an object that satisfies :class:`oracles.base.Oracle`. A built-in name cannot be
overridden by an entry point (the built-in wins, so a stray plugin cannot change default labels).

An oracle class exposes the pydantic model of its settings as the class attribute ``settings_model``;
:func:`validate_settings` checks a campaign's ``oracle.settings`` against it before a run writes
anything (a plugin without one is checked only when it is built).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from oracles.base import Oracle

GROUP = "matloop.oracles"
BUILTINS: dict[str, str] = {
    "ase": "oracles.ase_calculator:ASECalculatorOracle",
    "chgnet": "oracles.chgnet:CHGNetOracle",
    "density": "oracles.density:DensityOracle",
    "dft": "oracles.dft.oracle:DFTOracle",
    "gpaw": "oracles.dft.oracle:GPAWOracle",
    "replay": "oracles.replay:ReplayOracle",
    "sevennet": "oracles.sevennet:SevenNetOracle",
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


def _factory(name: str) -> Callable[..., Any]:
    if name in BUILTINS:
        return _load(BUILTINS[name])
    plugins = _plugins()
    if name not in plugins:
        raise UnknownOracleError(f"unknown oracle {name!r}; available: {', '.join(available_oracles())}")
    return plugins[name].load()  # type: ignore[no-any-return]


def settings_model(name: str) -> type[BaseModel] | None:
    """The pydantic model of the oracle's settings (its ``settings_model`` class attribute), or None for a
    plugin that declares none. Raises :class:`UnknownOracleError` for an unknown name."""
    model = getattr(_factory(name), "settings_model", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def validate_settings(name: str, settings: Mapping[str, Any]) -> BaseModel | None:
    """Validate ``settings`` for oracle ``name`` without building it (nothing is loaded, started or written).

    Returns the validated settings, or None when the oracle declares no ``settings_model`` (a plugin's
    settings are then checked when it is built). Raises :class:`UnknownOracleError` and pydantic's
    ``ValidationError`` (one entry per bad setting)."""
    model = settings_model(name)
    return None if model is None else model.model_validate(dict(settings))


def get_oracle(name: str, **settings: Any) -> Oracle:
    """Instantiate the oracle ``name`` with ``settings`` (keyword options; see each oracle's settings).

    Raises :class:`UnknownOracleError` for an unknown name, ``TypeError`` if the object built does not
    satisfy the :class:`Oracle` protocol, and the oracle's own validation error for bad settings.
    """
    factory = _factory(name)
    oracle = factory(**settings)
    if not isinstance(oracle, Oracle):
        raise TypeError(f"oracle {name!r} ({factory!r}) does not implement the Oracle protocol "
                        "(needs a `name` attribute and an `evaluate(candidates, *, seed, progress)` method)")
    return oracle
