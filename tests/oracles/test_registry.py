"""Choosing oracles by name, including third-party ones through the `matloop.oracles` entry points."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oracles.base import Oracle
from oracles.registry import UnknownOracleError, available_oracles, get_oracle


def test_builtins_are_available_without_package_metadata() -> None:
    assert {"chgnet", "density", "replay"} <= set(available_oracles())
    for name in ("density", "replay", "chgnet"):
        oracle = get_oracle(name)
        assert isinstance(oracle, Oracle) and oracle.name == name


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UnknownOracleError, match=r"available: .*chgnet.*density"):
        get_oracle("nope")


def test_bad_settings_are_rejected() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        get_oracle("chgnet", fmax=-1.0)
    with pytest.raises(ValidationError):
        get_oracle("density", bogus=1)


def _install_plugin(root: Path, module: str, body: str, target: str) -> None:
    (root / f"{module}.py").write_text(body)
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[matloop.oracles]\n{target}\n")


def test_entry_point_plugin_is_discovered_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = '''
from oracles.base import OracleResult

class ConstantOracle:
    name = "constant"
    def __init__(self, *, value: float = 1.0):
        self.value = value
    def evaluate(self, candidates, *, seed=0, progress=None):
        return [OracleResult(candidate_id=c.id, status="ok", targets={"y": self.value}) for c in candidates]

class NotAnOracle:
    pass
'''
    _install_plugin(tmp_path, "matloop_test_plugin",
                    body, "constant = matloop_test_plugin:ConstantOracle\nbroken = matloop_test_plugin:NotAnOracle\n"
                    "density = matloop_test_plugin:ConstantOracle")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "constant" in available_oracles()
    from oracles.base import Candidate
    from tests.oracles.helpers import nacl_crystal

    oracle = get_oracle("constant", value=3.0)
    assert oracle.evaluate([Candidate.from_crystal(nacl_crystal())])[0].targets == {"y": 3.0}
    with pytest.raises(TypeError, match="Oracle protocol"):
        get_oracle("broken")
    assert type(get_oracle("density")).__module__ == "oracles.density"  # built-ins cannot be overridden
    sys.modules.pop("matloop_test_plugin", None)


def test_every_builtin_exposes_its_settings_model_and_validates_without_building() -> None:
    from pydantic import BaseModel, ValidationError

    from oracles.registry import BUILTINS, settings_model, validate_settings

    required = {"ase": {"calculator": "ase.calculators.emt:EMT"}}  # settings without a default
    for name in BUILTINS:
        model = settings_model(name)
        assert model is not None and issubclass(model, BaseModel), name
        assert isinstance(validate_settings(name, required.get(name, {})), model)
        with pytest.raises(ValidationError, match="bogus"):
            validate_settings(name, {**required.get(name, {}), "bogus": 1})
    with pytest.raises(ValidationError, match="calculator"):
        validate_settings("ase", {})
    with pytest.raises(ValidationError, match="code"):
        validate_settings("gpaw", {"code": "vasp"})
