"""Shared conformance tests: every oracle (built-in or plugin) must pass these.

To check a new oracle, add a factory to ``ORACLE_FACTORIES`` (or call :func:`check_conformance`
from the plugin's own tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from oracles.base import Candidate, Oracle, OracleResult
from oracles.registry import get_oracle
from tests.oracles.helpers import mixed_batch

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
