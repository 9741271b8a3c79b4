"""Check that pyproject.toml's dependency ranges resolve on each supported Python (pip dry run).

For each version this runs, with the pip of the interpreter it is started with::

    pip install --dry-run --ignore-installed --python-version X.Y --only-binary=:all: \\
        --report REPORT.json -r REQUIREMENTS

where REQUIREMENTS are the runtime dependencies plus the ``dev`` extra exactly as pyproject.toml
declares them: the ranges, not constraints.txt. ``--python-version`` needs ``--only-binary=:all:``, so
a dependency published only as an sdist (pandarallel, nvidia-ml-py3) is first built into a local
wheel (``pip wheel --no-deps``) and offered through ``--find-links``; that wheel must be pure Python
(``py3-none-any``), or the check fails. The ``dft`` extra (GPAW, compiled from source) is not part
of the dry run.

Cost: pip reads a wheel's metadata from inside the wheel unless the index serves it apart (PEP 658),
so the dry run downloads every candidate it looks at, torch's CUDA build and its nvidia-* libraries
included (GBs on Python 3.12, where no CPU wheel is on this machine's disk). That is why this is a
script for the release checklist and not a test.

Examples:
    .venv/bin/python deploy/check_resolution.py                      # 3.11 and 3.12
    .venv/bin/python deploy/check_resolution.py --python 3.12 --json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
SHOWN = ("torch", "numpy", "scipy", "pandas", "pymatgen", "chgnet", "prefect", "fastapi", "mlflow", "sqlalchemy",
         "pydantic")
NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
DOWNLOAD = re.compile(r"Downloading \S+ \(([0-9.]+) (kB|MB|GB)\)")
MAX_SDIST_BUILDS = 8


def requirements(pyproject: Path, extras: tuple[str, ...]) -> tuple[list[str], str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs, str(project.get("requires-python", ""))


def _downloaded_mb(log: str) -> float:
    scale = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}
    return sum(float(n) * scale[u] for n, u in DOWNLOAD.findall(log))


def _build_pure_wheel(spec: str, wheelhouse: Path) -> str:
    """Build ``spec`` (an sdist-only dependency) into ``wheelhouse``; returns the wheel's name."""
    before = set(wheelhouse.glob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheelhouse), spec],
                          capture_output=True, text=True)
    new = sorted(set(wheelhouse.glob("*.whl")) - before)
    if proc.returncode != 0 or not new:
        raise RuntimeError(f"cannot build a wheel of {spec}: {proc.stderr.strip()[-500:]}")
    name = new[0].name
    if not re.search(r"-py[23.]*py3-none-any\.whl$|-py3-none-any\.whl$", name):
        raise RuntimeError(f"{spec} has no wheel for the target Python and its sdist builds a platform wheel ({name})")
    return name


def check(version: str, reqs: list[str], requires_python: str, workdir: Path) -> dict[str, object]:
    """Resolve ``reqs`` for Python ``version``; a dict with ok, packages, the versions in SHOWN and costs."""
    result: dict[str, object] = {"python": version, "requires_python_admits": version + ".0" in SpecifierSet(requires_python)}
    workdir.mkdir(parents=True, exist_ok=True)
    req_file = workdir / "requirements.txt"
    req_file.write_text("\n".join(reqs) + "\n")
    wheelhouse = workdir / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    report = workdir / f"report-{version}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--python-version", version,
           "--only-binary=:all:", "--find-links", str(wheelhouse), "--report", str(report), "-r", str(req_file)]
    built: list[str] = []
    t0 = time.monotonic()
    mb = 0.0
    for _ in range(MAX_SDIST_BUILDS + 1):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        mb += _downloaded_mb(log)
        missing = NOT_FOUND.search(log)
        if proc.returncode == 0 or missing is None or len(built) >= MAX_SDIST_BUILDS:
            break
        try:
            built.append(_build_pure_wheel(missing.group(1), wheelhouse))
        except RuntimeError as exc:
            log += f"\n{exc}"
            break
    result.update(seconds=round(time.monotonic() - t0, 1), downloaded_mb=round(mb), built_from_sdist=built,
                  command=" ".join(["pip", *cmd[3:]]))
    if proc.returncode != 0:
        errors = [line for line in log.splitlines() if line.startswith("ERROR") or "RuntimeError" in line or "cannot" in line]
        result.update(ok=False, error="\n".join(errors[-4:]) or log.strip()[-1000:])
        return result
    installed = json.loads(report.read_text())["install"]
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installed}
    result.update(ok=bool(result["requires_python_admits"]), packages=len(versions),
                  versions={k: versions[k] for k in SHOWN if k in versions})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", nargs="+", default=["3.11", "3.12"], help="target versions (default: 3.11 3.12)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per version")
    args = parser.parse_args(argv)
    reqs, requires_python = requirements(ROOT / "pyproject.toml", ("dev",))
    ok = True
    for version in args.python:
        with tempfile.TemporaryDirectory(prefix=f"matloop-resolve-{version}-") as tmp:
            res = check(version, reqs, requires_python, Path(tmp))
        ok = ok and bool(res["ok"])
        if args.json:
            print(json.dumps(res))
            continue
        head = f"Python {version}: " + ("resolves" if res["ok"] else "DOES NOT RESOLVE")
        if not res["requires_python_admits"]:
            head += f" (requires-python {requires_python!r} excludes it)"
        print(head)
        print(f"  {res['command']}")
        if res["ok"]:
            shown = ", ".join(f"{k} {v}" for k, v in res["versions"].items())  # type: ignore[attr-defined]
            print(f"  {res['packages']} packages: {shown}")
        else:
            print(f"  {res['error']}")
        if res["built_from_sdist"]:
            print(f"  built from sdists (pure Python): {', '.join(res['built_from_sdist'])}")  # type: ignore[arg-type]
        print(f"  {res['seconds']} s, {res['downloaded_mb']} MB downloaded")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
