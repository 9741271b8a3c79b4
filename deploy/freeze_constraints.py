"""Write (or check) constraints.txt: the exact versions CI installs, frozen from a tested venv.

pyproject.toml declares ranges; constraints.txt pins every package that ``matloop[dev,dft]`` needs,
directly or not, to the version installed in the venv this runs in. Packages installed there for
other reasons (an experiment, another project) are left out: only the dependency closure of matloop
is frozen. Local version labels are dropped (``torch==2.13.0+cpu`` becomes ``torch==2.13.0``, which
pip still satisfies with the CPU wheel installed first).

Examples:
    .venv/bin/python deploy/freeze_constraints.py            # rewrite constraints.txt
    .venv/bin/python deploy/freeze_constraints.py --check    # exit 1 and show the difference if stale
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("dev", "dft")
HEADER = """\
# Exact versions CI installs and tests (Python 3.11, Linux x86-64), used by `make install`:
#   pip install -c constraints.txt -e '.[dev]'
# pyproject.toml holds the ranges users get; this file pins the tested set inside them.
# Generated from the project venv: only matloop[dev,dft]'s dependency closure, local labels dropped.
# Regenerate after changing a dependency (then run the tests):
#   .venv/bin/python deploy/freeze_constraints.py
"""


def project_requirements(pyproject: Path, extras: tuple[str, ...] = EXTRAS) -> list[Requirement]:
    """The runtime dependencies plus those of ``extras``, as declared in ``pyproject``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in extras:
        reqs += [Requirement(r) for r in project.get("optional-dependencies", {}).get(extra, [])]
    return reqs


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = {k: str(v) for k, v in default_environment().items()}
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def closure(roots: list[Requirement]) -> dict[str, md.Distribution]:
    """Installed distributions reachable from ``roots`` (extras followed), keyed by canonical name."""
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(r, set[str]()) for r in roots]
    while stack:
        req, parent_extras = stack.pop()
        if not _applies(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{req.name} (needed by matloop) is not installed in {sys.prefix}; run make install") from None
        found[name] = dist
        stack += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return found


def render(dists: dict[str, md.Distribution]) -> str:
    lines = []
    for name in sorted(dists):
        version = Version(dists[name].version).public  # 2.13.0+cpu -> 2.13.0
        lines.append(f"{dists[name].metadata['Name']}=={version}")
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    parser.add_argument("--out", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    dists = closure(project_requirements(ROOT / "pyproject.toml"))
    dists.pop("matloop", None)
    text = render(dists)
    if args.check:
        old = args.out.read_text() if args.out.exists() else ""
        if old == text:
            print(f"{args.out.name} matches this venv ({len(dists)} packages)")
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                   str(args.out.name), "this venv"))
        print(f"{args.out.name} is stale; regenerate: .venv/bin/python deploy/freeze_constraints.py", file=sys.stderr)
        return 1
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(dists)} packages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
