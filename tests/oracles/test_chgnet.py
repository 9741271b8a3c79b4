"""CHGNet oracle behaviour beyond the shared contract: static batches, decoding provenance, labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from oracles.base import Candidate
from oracles.chgnet import CHGNetOracle
from tests.oracles.helpers import impossible_crystal, nacl_crystal, small_structures


def test_batched_static_energies_equal_the_first_relaxation_step(chgnet_fast: CHGNetOracle, mp20_dir: Path) -> None:
    structures = small_structures()
    cands = [Candidate.from_structure(s, id=k) for k, s in structures.items()]
    cands.append(Candidate.from_crystal(impossible_crystal()))
    static = CHGNetOracle(mode="static", batch_size=4, mp20_dir=str(mp20_dir)).evaluate(cands)
    relaxed = chgnet_fast.evaluate(cands)
    assert [r.status for r in static] == ["ok"] * len(structures) + ["invalid"]
    for s, r in zip(static[:-1], relaxed[:-1], strict=True):
        assert s.energies[0] == pytest.approx(r.energies[0], abs=1e-4)  # eV/atom, same unrelaxed input
        assert s.n_steps == 0 and s.targets["formation_energy_per_atom"] is not None


def test_decoded_candidates_record_how_they_were_decoded(chgnet_fast: CHGNetOracle) -> None:
    res = chgnet_fast.evaluate([Candidate.from_crystal(nacl_crystal())], seed=5)[0]
    assert res.status in ("ok", "unconverged")
    prov = res.provenance
    assert prov["input"] == "crystal" and prov["decode_attempt"] >= 0 and prov["decode_volume_scale"] >= 1.0
    assert prov["energy_correction"].startswith("MP2020 learned") and prov["settings"]["fmax"] == 0.1
    assert prov["engine"] == "batched"  # the default engine
    # rock salt relaxes to a sensible cell: 5.5–5.9 Å cubic conventional edge ⇒ 20.8–25.6 Å³/atom
    assert 20.0 < res.targets["volume_per_atom"] < 26.5
    assert res.targets["formation_energy_per_atom"] == pytest.approx(-2.1, abs=0.15)  # MP: −2.10 eV/atom


def test_the_engine_is_batched_unless_bfgs_is_asked_for_without_one() -> None:
    from pydantic import ValidationError

    from oracles.chgnet import CHGNetSettings
    from oracles.sevennet import SevenNetSettings

    assert CHGNetSettings().engine == "batched" and CHGNetSettings(engine=None).engine == "batched"
    assert CHGNetSettings(optimizer="BFGS").engine == "ase"  # an existing `optimizer: BFGS` config keeps ASE
    assert CHGNetSettings(engine="ase").engine == "ase"
    assert CHGNetSettings(engine="batched", optimizer="BFGS").engine == "batched"  # oracles.batched.bfgs
    with pytest.raises(ValidationError, match=r"optimizer: BFGS on the batched engine .*set cell_filter: unit .*"
                                              r"or engine: ase"):
        CHGNetSettings(engine="batched", optimizer="BFGS", cell_filter="frechet")
    assert SevenNetSettings().engine == "batched" and SevenNetSettings(optimizer="BFGS").optimizer == "BFGS"
    with pytest.raises(ValidationError, match=r"relax_cell: true, or optimizer: FIRE \[type"):
        SevenNetSettings(optimizer="BFGS", relax_cell=False)
