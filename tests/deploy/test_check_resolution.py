"""deploy/check_resolution.py on small real requirement sets (a pip dry run against the package index, ~10 s).

The full check (matloop's ranges on 3.11 and 3.12) downloads GBs of torch/CUDA wheels and is run by hand:
`.venv/bin/python deploy/check_resolution.py` (results in the README's Install section).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.deploy import ROOT, deploy_script


def _module() -> ModuleType:
    return deploy_script("check_resolution")


def test_a_312_resolution_builds_sdist_only_pure_python_dependencies(tmp_path: Path) -> None:
    # pandarallel (a smact dependency) publishes only an sdist, which --only-binary=:all: would refuse
    res = _module().check("3.12", ["pyyaml>=6.0.3,<7", "pandarallel>=1.6.5"], ">=3.11,<3.13", tmp_path)
    assert res["ok"], res
    assert any(str(w).startswith("pandarallel-") for w in res["built_from_sdist"])  # type: ignore[attr-defined]
    assert "--python-version 3.12" in str(res["command"]) and "--only-binary=:all:" in str(res["command"])


def test_an_unresolvable_range_and_an_excluded_python_fail(tmp_path: Path) -> None:
    check = _module().check
    clash = check("3.12", ["fastapi==0.150.0", "starlette<0.40"], ">=3.11,<3.13", tmp_path / "a")  # fastapi needs >=0.46
    assert not clash["ok"] and "starlette" in str(clash["error"])
    excluded = check("3.13", ["pyyaml"], ">=3.11,<3.13", tmp_path / "b")
    assert not excluded["ok"] and not excluded["requires_python_admits"]


def test_requirements_are_pyprojects_ranges_not_the_constraints() -> None:
    reqs, requires_python = _module().requirements(ROOT / "pyproject.toml", ("dev",))
    assert requires_python == ">=3.11,<3.13"
    assert any(r.startswith("torch>=") for r in reqs) and not any(r.startswith("torch==") for r in reqs)
    assert any(r.startswith("pytest") for r in reqs)
