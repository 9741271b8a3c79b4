"""The physical check of a finished S.U.N. benchmark reads the baselines' cache format and judges only S.U.N.
results: a rock-salt NaCl rediscovery (known formula) and a failed call count for nothing."""

from __future__ import annotations

import json
from pathlib import Path

from pymatgen.core import Lattice, Structure

from orchestration.bench_discovery.physical import cached_runs, check


def _row(ident: str, status: str, cif: str | None, e_hull: float) -> dict:
    return {"crystal": {"space_group": 225, "counts": {"Na": 4, "Cl": 4}, "lattice": [5.6, 5.6, 5.6, 90, 90, 90],
                        "id": ident}, "status": status, "e_above_hull": e_hull, "formation_energy": -2.0,
            "relaxed_cif": cif, "round": 0, "source": "substitution", "predicted": -1.9}


def test_physical_check_reads_the_cache_and_counts_only_sun(tmp_path: Path) -> None:
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (tmp_path / "cache").mkdir()
    rows = [_row("a", "ok", nacl.to(fmt="cif"), 0.0), _row("b", "failed", None, float("nan"))]
    (tmp_path / "cache" / "substitution_once-s0.json").write_text(json.dumps({"evaluated": rows}))
    runs = cached_runs(tmp_path)
    assert [e.status for e in runs["substitution_once", 0]] == ["ok", "failed"]
    report = check(tmp_path)
    lo, hi = report["mp20_volume_per_atom_p01_p99"]
    assert 5 < lo < 15 < 30 < hi
    assert report["strategies"]["substitution_once"]["sun"] == 0  # NaCl is known: not S.U.N.
