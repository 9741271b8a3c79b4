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
and the tables are rebuilt; it never stops a run. The tables of all space-group algebras are packed
along one resource-state axis (:meth:`~discovery.gfn.constraints.CompositionConstraints.packed_arrays`);
user-cache files are memory-mapped, so opening one costs milliseconds and a run reads only the pages
it touches.

Rebuild the shipped file: ``python -m discovery.gfn.tables --ship`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import tempfile
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from discovery.chemistry import element_chem
from discovery.gfn.constraints import CompositionRules

TABLE_FORMAT = 2  # 2: tables packed along one resource-state axis
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
    """A table file opened for reading, checked on opening (format, digest, members, shapes). Members of
    an uncompressed file are memory-mapped: opening costs milliseconds, and only the pages a run touches
    are read (shared between processes through the page cache)."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = path
        with zipfile.ZipFile(path) as z:
            infos = {i.filename.removesuffix(".npy"): i for i in z.infolist()}
        self.compressed = any(i.compress_type != zipfile.ZIP_STORED for i in infos.values())
        if self.compressed:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        else:
            arrays = {name: _memmap_member(path, info) for name, info in infos.items()}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
        if meta.get("format") != TABLE_FORMAT or meta.get("digest") != digest:
            raise ValueError(f"made for another space or format ({meta.get('digest')}, format {meta.get('format')})")
        offset, succ = arrays.get("offset"), arrays.get("succ")
        if offset is None or succ is None or any(k not in arrays for k in ("sg_key", "start", "feasible")):
            raise ValueError("members missing")
        if arrays["sg_key"].shape != (231,) or int(offset[-1]) != succ.shape[1] or any(
                a.shape[2] != succ.shape[1] for name, a in arrays.items() if name.startswith(("comp", "dil"))):
            raise ValueError("inconsistent table shapes")
        self.arrays: dict[str, np.ndarray] = arrays


def _memmap_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map one stored (uncompressed) ``.npy`` member of a ``.npz`` file."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"member {info.filename}: bad local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        start = f.tell()
    size = int(np.prod(shape)) * dtype.itemsize
    if start + size > info.header_offset + 30 + name_len + extra_len + info.file_size:
        raise ValueError(f"member {info.filename}: truncated")
    if size == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=start)


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
        if found.compressed:  # an uncompressed copy in the user cache is memory-mapped next time
            try:
                write_tables(user, {**found.arrays, "meta": _meta(rules)}, compress=False)
                return TableFile(user, digest)
            except Exception as exc:
                warnings.warn(f"could not write the Crystal-GFN table cache {user} ({exc})", stacklevel=2)
        return found
    return None


def store_tables(rules: CompositionRules, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write freshly built tables to the user cache (a warning, not an error, where it cannot)."""
    path, _ = table_paths(rules)
    try:
        write_tables(path, {**arrays, "meta": _meta(rules)}, compress=False)
    except OSError as exc:
        warnings.warn(f"could not write the Crystal-GFN table cache {path} ({exc}); set {ENV_VAR} to a writable "
                      "folder to reuse the tables across processes", stacklevel=2)
        return None
    return path


def _meta(rules: CompositionRules) -> np.ndarray:
    meta = {"format": TABLE_FORMAT, "digest": rules_digest(rules), "rules": asdict(rules)}
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


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
    arrays = found.arrays if found is not None else CompositionConstraints(rules).packed_arrays()
    arrays = {name: np.asarray(a) for name, a in arrays.items()} | {"meta": _meta(rules)}
    path = shipped if args.ship else user
    write_tables(path, arrays, compress=args.ship)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
