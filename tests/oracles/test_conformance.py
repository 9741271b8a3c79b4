"""Every registered oracle passes the shipped conformance checks of :mod:`oracles.testing`.

The test is parametrised over :func:`oracles.registry.available_oracles`, so a new built-in oracle (or an
installed plugin) without an entry in ``ORACLE_FACTORIES`` fails here until it is added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from oracles.base import Candidate, Oracle
from oracles.registry import available_oracles, get_oracle
from oracles.testing import OracleConformance, check_conformance, check_sanity_gates, cu_al_batch, mixed_batch


def _gpaw(request: pytest.FixtureRequest) -> Oracle:
    """Real GPAW jobs through the local queue at cheap settings (~35 s for the batch; runs in CI)."""
    from tests.oracles.dft.conftest import CHEAP

    pytest.importorskip("gpaw", reason="GPAW not installed (make install builds it)")
    return get_oracle("gpaw", workdir=str(request.getfixturevalue("tmp_path")), **CHEAP)


def _replay(mp20_dir: Path) -> Oracle:
    return get_oracle("replay", dataset=str(mp20_dir))


def _sevennet(request: pytest.FixtureRequest) -> Oracle:
    """SevenNet-0 on the batched engine, in-process, with a small step cap (as ``chgnet_fast``)."""
    pytest.importorskip("sevenn", reason="sevenn not installed")
    return get_oracle("sevennet", workers=0, steps=40, timeout_s=120,
                      mp20_dir=str(request.getfixturevalue("mp20_dir")))


EMT = {"calculator": "ase.calculators.emt:EMT", "fmax": 0.05, "steps": 200}
"""The ``ase`` oracle with ASE's EMT potential (Cu, Al, Ag, Au, Ni, Pd, Pt): a Cu/Al toy space."""

ORACLE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Oracle]] = {
    "ase": lambda request: get_oracle("ase", **EMT),
    "density": lambda request: get_oracle("density"),
    "replay": lambda request: _replay(request.getfixturevalue("mp20_dir")),
    "chgnet": lambda request: request.getfixturevalue("chgnet_fast"),
    "gpaw": _gpaw,
    "sevennet": _sevennet,
}
BATCHES: dict[str, Callable[[], Sequence[Candidate]]] = {"ase": cu_al_batch}
SAME_AS = {"dft": "gpaw"}
"""Names served by the same class as another name (``dft`` with its default ``code: gpaw`` is the ``gpaw``
oracle; its QE/VASP input writing is tested in tests/oracles/dft/test_inputs.py)."""


def _factory(name: str) -> Callable[[pytest.FixtureRequest], Oracle]:
    if name in SAME_AS:
        pytest.skip(f"{name!r} is the {SAME_AS[name]!r} oracle's class; checked as {SAME_AS[name]!r}")
    assert name in ORACLE_FACTORIES, f"registered oracle {name!r} has no conformance factory; add one here"
    return ORACLE_FACTORIES[name]


@pytest.mark.parametrize("name", available_oracles())
def test_oracle_conformance(name: str, request: pytest.FixtureRequest) -> None:
    oracle = _factory(name)(request)
    results = check_conformance(oracle, BATCHES.get(name, mixed_batch)())
    by_id = {r.candidate_id: r for r in results}
    if name in ("density", "chgnet", "gpaw", "sevennet"):
        assert by_id["nacl-structure"].status == "ok" and by_id["nacl-table"].status == "ok"
    if name in ("chgnet", "gpaw", "sevennet", "ase"):
        assert by_id["impossible"].status == "invalid" and "not compatible" in by_id["impossible"].message
    if name == "ase":
        assert all(by_id[i].status == "ok" for i in ("cu-fcc", "cual-b2", "cu3al-l12", "cu3al-table"))
        assert all(r.provenance["calculator"] == "ase.calculators.emt:EMT" for r in results)
    if name == "replay":  # none of these toy cells is an MP-20 entry except rock-salt NaCl
        assert by_id["impossible"].status == "failed"


@pytest.mark.parametrize("name", available_oracles())
def test_oracle_sanity_gates(name: str, request: pytest.FixtureRequest) -> None:
    """The gates apply to every built-in oracle (the GPAW oracle refuses before submitting a job)."""
    results = check_sanity_gates(_factory(name)(request))
    for r in results:
        assert r.provenance["sanity_gates"]["volume_per_atom_bounds_A3"][1] > 100
        if name in ("chgnet", "gpaw"):
            assert r.provenance["reference"] == "mp20+matbench"
        if name == "ase":
            assert r.provenance["reference"] == "same-calculator-elements"


class TestPluginStyle(OracleConformance):
    """The base class a plugin's tests subclass, used exactly as a plugin would (here on the ``ase`` oracle)."""

    def make_oracle(self) -> Oracle:
        return get_oracle("ase", **EMT)

    def batch(self) -> list[Candidate]:
        return cu_al_batch()


def test_the_checks_can_fail() -> None:
    """An oracle that breaks the contract (results out of order, no provenance) is caught."""
    from oracles.base import OracleResult

    class Reversed:
        name = "reversed"

        def evaluate(self, candidates: Sequence[Candidate], *, seed: int = 0,
                     progress: object = None) -> list[OracleResult]:
            return [OracleResult(candidate_id=c.id, status="ok") for c in reversed(candidates)]

    with pytest.raises(AssertionError, match="input order"):
        check_conformance(Reversed(), cu_al_batch())
    with pytest.raises(AssertionError, match=r"nacl-a.*'ok'"):
        check_sanity_gates(Reversed())
