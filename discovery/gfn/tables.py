"""On-disk cache of the composition look-ahead tables, one file per search space.

Building the tables of all 230 space groups takes 15–30 s at paper scale; every process that samples
or trains would pay it. :meth:`discovery.gfn.constraints.CompositionConstraints.cached` reads them
from a ``.npz`` file instead:

* the **user cache**: ``$MATLOOP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/matloop``, else
  ``~/.cache/matloop``; files under ``gfn-tables/``, written uncompressed (fast to read);
* the files **shipped** in ``discovery/data/gfn_tables/`` (compressed; the paper's space). The first
  process that reads a shipped file writes an uncompressed copy to the user cache for the next ones.

A file is named by a digest of everything its tables depend on (:func:`rules_digest`): the
composition rules, the elements' oxidation states and electronegativities, the decodability rule's
constants, the space-group data file and :data:`TABLE_FORMAT`; change any of them and a new file is
built. Files are written to a temporary name and renamed into place (``os.replace``), so concurrent
processes never read a half-written file. A damaged or mismatched file is reported with a warning
and the tables are rebuilt; it never stops a run. Members are read lazily, one space-group algebra
at a time, so a model that samples few space groups reads few tables.

Rebuild the shipped file: ``python -m discovery.gfn.tables --ship`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from discovery.chemistry import element_chem
from discovery.gfn.constraints import CompositionRules, SpaceGroupConstraints, _ElementTables

TABLE_FORMAT = 1
ENV_VAR = "MATLOOP_CACHE_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "gfn_tables"
_SPACE_GROUPS = Path(__file__).resolve().parent.parent / "data" / "space_groups.json"


def cache_dir() -> Path:
    """The user cache folder of matloop (``$MATLOOP_CACHE_DIR``, ``$XDG_CACHE_HOME/matloop`` or ``~/.cache/matloop``)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matloop"


def rules_digest(rules: CompositionRules) -> str:
    """Hex digest naming the table file of ``rules`` (24 characters)."""
    from discovery import symmetry_decode as dec

    chem = [(s, element_chem(s).electronegativity, element_chem(s).oxidation_states) for s in rules.elements]
    payload = {
        "format": TABLE_FORMAT, "rules": asdict(rules), "chemistry": chem,
        "decodability": [str(dec.MIN_SUCCESS), str(dec.MIN_OUTCOME), dec.LINE_CAP, dec.CROWDED],
        "space_groups": hashlib.sha256(_SPACE_GROUPS.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:24]


def table_paths(rules: CompositionRules) -> tuple[Path, Path]:
    """(user-cache path, shipped path) of the table file of ``rules``."""
    name = f"{rules_digest(rules)}.npz"
    return cache_dir() / "gfn-tables" / name, SHIPPED_DIR / name


class TableFile:
    """A table file opened for lazy reading; checked on opening (format, digest, members)."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = path
        self.npz = np.load(path, allow_pickle=False)
        meta = json.loads(bytes(self.npz["meta"]).decode())
        if meta.get("format") != TABLE_FORMAT or meta.get("digest") != digest:
            raise ValueError(f"made for another space or format ({meta.get('digest')}, format {meta.get('format')})")
        self.sg_key = np.asarray(self.npz["sg_key"], dtype=np.int64)
        self._feasible = np.asarray(self.npz["feasible"], dtype=bool)
        self.start = np.asarray(self.npz["start"], dtype=np.int64)
        self.members: list[list[str]] = meta["members"]
        missing = {f"k{i}_{m}" for i, names in enumerate(self.members) for m in names} - set(self.npz.files)
        if missing or self.sg_key.shape != (231,) or len(self.members) != len(self.start):
            raise ValueError(f"incomplete ({len(missing)} tables missing)")
        self.compressed = any(i.compress_type != zipfile.ZIP_STORED for i in self.npz.zip.infolist())

    def key_of(self, sg: int) -> int:
        return int(self.sg_key[sg])

    def feasible(self, sg: int) -> bool:
        return bool(self._feasible[sg])

    def arrays(self, key: int) -> dict[str, np.ndarray]:
        return {name: self.npz[f"k{key}_{name}"] for name in self.members[key]}

    def load(self, key: object, rules: CompositionRules, el: _ElementTables) -> SpaceGroupConstraints | None:
        """The tables of algebra ``key``; None (with a warning) if the file turns out damaged."""
        try:
            arrays = self.arrays(int(key))  # type: ignore[call-overload]
            succ = arrays.pop("succ")
            return SpaceGroupConstraints(rules, el, key=key, start=int(self.start[int(key)]),  # type: ignore[call-overload]
                                         succ=succ, tables=arrays)
        except Exception as exc:  # a damaged member: rebuild this algebra, keep going
            warnings.warn(f"{self.path}: damaged Crystal-GFN table cache ({type(exc).__name__}: {exc}); "
                          "rebuilding these tables", stacklevel=2)
            return None

    def all_arrays(self) -> dict[str, np.ndarray]:
        return {name: self.npz[name] for name in self.npz.files}


def open_tables(rules: CompositionRules) -> TableFile | None:
    """The table file of ``rules`` from the user cache or the shipped data, or None (rebuild)."""
    digest = rules_digest(rules)
    user, shipped = table_paths(rules)
    for path in (user, shipped):
        if not path.exists():
            continue
        try:
            found = TableFile(path, digest)
        except Exception as exc:
            warnings.warn(f"{path}: damaged or mismatched Crystal-GFN table cache ({type(exc).__name__}: {exc}); "
                          "the tables are rebuilt", stacklevel=2)
            continue
        if path == shipped:  # an uncompressed copy in the user cache reads several times faster next time
            try:
                write_tables(user, found.all_arrays(), compress=False)
            except Exception as exc:
                warnings.warn(f"could not write the Crystal-GFN table cache {user} ({exc})", stacklevel=2)
        return found
    return None


def store_tables(rules: CompositionRules, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write freshly built tables to the user cache (a warning, not an error, where it cannot)."""
    path, _ = table_paths(rules)
    try:
        write_tables(path, with_meta(rules, arrays), compress=False)
    except OSError as exc:
        warnings.warn(f"could not write the Crystal-GFN table cache {path} ({exc}); set {ENV_VAR} to a writable "
                      "folder to reuse the tables across processes", stacklevel=2)
        return None
    return path


def with_meta(rules: CompositionRules, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` plus the ``meta`` member (format, digest, member names per algebra)."""
    n_keys = len(arrays["start"])
    members = [sorted(k.split("_", 1)[1] for k in arrays if k.startswith(f"k{i}_")) for i in range(n_keys)]
    meta = {"format": TABLE_FORMAT, "digest": rules_digest(rules), "members": members,
            "rules": asdict(rules)}
    return {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}


def write_tables(path: Path, arrays: dict[str, np.ndarray], *, compress: bool) -> None:
    """Write ``arrays`` as ``.npz`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if compress:
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
            else:
                np.savez(f, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m discovery.gfn.tables",
        description="Build the Crystal-GFN composition tables of a search space into the user cache, or "
                    "(--ship) into discovery/data/gfn_tables/ (compressed).",
        epilog="Example: python -m discovery.gfn.tables --ship   # the paper's space (22 elements, 5 × 16, ≤ 80 atoms)",
    )
    parser.add_argument("--ship", action="store_true", help="write the compressed file shipped with matloop")
    args = parser.parse_args(argv)
    from discovery.gfn.constraints import CompositionConstraints
    from discovery.gfn.space import SearchSpace

    rules = SearchSpace().rules
    user, shipped = table_paths(rules)
    found = TableFile(user, rules_digest(rules)) if user.exists() else None  # reuse the user cache's tables
    arrays = found.all_arrays() if found is not None else with_meta(rules, CompositionConstraints(rules).export())
    path = shipped if args.ship else user
    write_tables(path, arrays, compress=args.ship)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
