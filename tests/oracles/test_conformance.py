"""Shared conformance tests: every oracle (built-in or plugin) must pass these.

To check a new oracle, add a factory to ``ORACLE_FACTORIES`` (or call :func:`check_conformance` and
:func:`check_sanity_gates` from the plugin's own tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from oracles.base import Candidate, Oracle, OracleResult
from oracles.registry import get_oracle
from tests.oracles.helpers import mixed_batch, nacl_crystal, rocksalt

STATUSES = {"ok", "failed", "unconverged", "invalid", "timeout"}


def check_conformance(oracle: Oracle, batch: Sequence[Candidate], *, seed: int = 3) -> list[OracleResult]:
    """The contract of :mod:`oracles.base`; returns the results for oracle-specific checks."""
    assert isinstance(oracle, Oracle) and isinstance(oracle.name, str) and oracle.name
    seen: list[tuple[int, int]] = []
    results = oracle.evaluate(batch, seed=seed, progress=lambda done, total: seen.append((done, total)))
    # one result per candidate, in order, with its id
    assert [r.candidate_id for r in results] == [c.id for c in batch]
    assert all(isinstance(r, OracleResult) and r.status in STATUSES for r in results)
    # failures are recorded, with a reason
    assert all(r.message for r in results if r.status != "ok")
    assert seen and seen[-1] == (len(batch), len(batch))
    # JSON round trip, provenance names the oracle
    for r in results:
        back = OracleResult.from_json(r.to_json())
        assert back == r
        json.loads(r.to_json())
        assert r.provenance.get("oracle") == oracle.name
    # deterministic with a seed (timings aside)
    again = oracle.evaluate(batch, seed=seed)
    for a, b in zip(results, again, strict=True):
        assert (a.status, a.message, a.n_steps) == (b.status, b.message, b.n_steps)
        assert a.targets.keys() == b.targets.keys()
        for k, v in a.targets.items():
            assert v == pytest.approx(b.targets[k], abs=1e-6), k
    assert oracle.evaluate([], seed=seed) == []
    return results


def unphysical_batch() -> list[Candidate]:
    """Cells no oracle may label ``ok`` (see :mod:`oracles.sanity`): rock-salt NaCl with a = 30 Å as a
    structure and as a crystal-table row (3,375 Å³/atom, Na-Cl 15 Å apart), and a 1.8 Å rock-salt NaCl
    structure (0.73 Å³/atom; no oracle decodes or rescales a given structure)."""
    return [Candidate.from_structure(rocksalt("Na", "Cl", 30.0), id="nacl-a30-structure"),
            Candidate.from_crystal(nacl_crystal(id="nacl-a30-table", a=30.0)),
            Candidate.from_structure(rocksalt("Na", "Cl", 1.8), id="nacl-a1.8-structure")]


def check_sanity_gates(oracle: Oracle) -> list[OracleResult]:
    """Every unphysical cell is ``invalid``, with a message naming the volume per atom and its bound."""
    results = oracle.evaluate(unphysical_batch(), seed=0)
    for r in results:
        assert r.status == "invalid", (r.candidate_id, r.status, r.message)
        assert "volume per atom" in r.message and "physical bound" in r.message, r.message
        assert not any(v is not None for v in r.targets.values())
    return results


def _replay(mp20_dir: Path) -> Oracle:
    return get_oracle("replay", dataset=str(mp20_dir))


def _gpaw(request: pytest.FixtureRequest) -> Oracle:
    """Real GPAW jobs through the local queue at cheap settings (~35 s for the batch; runs in CI)."""
    from tests.oracles.dft.conftest import CHEAP

    pytest.importorskip("gpaw", reason="GPAW not installed (make install builds it)")
    return get_oracle("gpaw", workdir=str(request.getfixturevalue("tmp_path")), **CHEAP)


ORACLE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Oracle]] = {
    "density": lambda request: get_oracle("density"),
    "replay": lambda request: _replay(request.getfixturevalue("mp20_dir")),
    "chgnet": lambda request: request.getfixturevalue("chgnet_fast"),
    "gpaw": _gpaw,
}


@pytest.mark.parametrize("name", sorted(ORACLE_FACTORIES))
def test_oracle_conformance(name: str, request: pytest.FixtureRequest) -> None:
    oracle = ORACLE_FACTORIES[name](request)
    results = check_conformance(oracle, mixed_batch())
    by_id = {r.candidate_id: r for r in results}
    if name in ("density", "chgnet", "gpaw"):
        assert by_id["nacl-structure"].status == "ok" and by_id["nacl-table"].status == "ok"
    if name in ("chgnet", "gpaw"):
        assert by_id["impossible"].status == "invalid" and "not compatible" in by_id["impossible"].message
    if name == "replay":  # none of these toy cells is an MP-20 entry except rock-salt NaCl
        assert by_id["impossible"].status == "failed"


@pytest.mark.parametrize("name", sorted(ORACLE_FACTORIES))
def test_oracle_sanity_gates(name: str, request: pytest.FixtureRequest) -> None:
    """The gates apply to every built-in oracle (the GPAW oracle refuses before submitting a job)."""
    results = check_sanity_gates(ORACLE_FACTORIES[name](request))
    for r in results:
        assert r.provenance["sanity_gates"]["volume_per_atom_bounds_A3"][1] > 100
        if name in ("chgnet", "gpaw"):
            assert r.provenance["reference"] == "mp20+matbench"
