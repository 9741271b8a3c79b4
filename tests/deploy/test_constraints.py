"""constraints.txt (the exact set CI installs) against pyproject.toml's ranges and the venv."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy import ROOT, deploy_script


def _freeze() -> ModuleType:
    return deploy_script("freeze_constraints")


def _pins(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins(ROOT / "constraints.txt")
    project = _project()
    declared = project["dependencies"] + [r for extra in ("dev", "dft") for r in project["optional-dependencies"][extra]]
    for line in declared:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"


def test_runtime_dependencies_are_bounded_ranges_and_python_3_11_and_3_12_are_admitted() -> None:
    project = _project()
    for line in project["dependencies"] + project["optional-dependencies"]["dft"]:
        ops = {s.operator for s in Requirement(line).specifier}
        assert ops & {">=", "==", "~="}, f"{line}: no lower bound"
        assert ops & {"<", "==", "~="}, f"{line}: no upper bound (use the next major version)"
    python = SpecifierSet(project["requires-python"])
    assert "3.11.7" in python and "3.12.0" in python and "3.13.0" not in python


def test_constraints_are_the_venvs_dependency_closure() -> None:
    # CI installs with -c constraints.txt, so a difference here means a dependency was added or changed
    # without regenerating the file (the message shows the diff and the command).
    assert _freeze().main(["--check"]) == 0


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "constraints.txt"
    stale.write_text(re.sub(r"(?m)^numpy==.*$", "numpy==0.0.1", (ROOT / "constraints.txt").read_text()))
    assert _freeze().main(["--check", "--out", str(stale)]) == 1
    assert _freeze().main(["--out", str(stale)]) == 0
    assert _freeze().main(["--check", "--out", str(stale)]) == 0
