"""The ``ase`` oracle with ASE's EMT potential on a Cu/Al toy space: formation energies against EMT's own
elemental references, provenance naming EMT, settings errors naming the field, fault isolation."""

from __future__ import annotations

from typing import Any

import pytest
from ase.calculators.emt import EMT
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

from oracles import ase_calculator
from oracles.ase_calculator import ASECalculatorOracle, ASESettings
from oracles.base import Candidate
from oracles.registry import get_oracle, validate_settings
from oracles.relax import RelaxSettings, relax_structure
from oracles.testing import cu_al_structures, fcc

EMT_PATH = "ase.calculators.emt:EMT"


def emt_factory(**kwargs: Any) -> EMT:
    """A factory (not a class) as the calculator: the oracle accepts either."""
    return EMT(**kwargs)


def not_a_calculator() -> dict[str, str]:
    return {"energy": "none"}


def hcp(element: str, a: float) -> Structure:
    return Structure.from_spacegroup(194, Lattice.hexagonal(a, 1.633 * a), [element], [[1 / 3, 2 / 3, 0.25]])


def _emt_relaxed_energy_per_atom(structure: Structure, **kw: Any) -> float:
    out = relax_structure(structure, calculator=EMT(), settings=RelaxSettings(fmax=0.05, steps=300, **kw))
    return out.energy_total / len(out.structure)


def test_pure_cu_has_zero_formation_energy_against_emts_own_cu() -> None:
    """ASE's reference crystal of Cu is fcc: with ``ase_reference`` fcc Cu lies at exactly 0, and μ_Cu is EMT's
    relaxed fcc Cu energy (≈ −0.007 eV/atom, nothing like MP's −4.1 eV/atom)."""
    oracle = get_oracle("ase", calculator=EMT_PATH, elemental_structures="ase_reference")
    [r] = oracle.evaluate([Candidate.from_structure(fcc("Cu", 3.61), id="cu")])
    assert r.status == "ok", r.message
    assert r.targets["formation_energy_per_atom"] == pytest.approx(0.0, abs=1e-4)
    mu = r.provenance["elemental_references"]["Cu"]
    assert mu["structure"] == "fcc (ASE reference crystal)"
    assert mu["energy_per_atom"] == pytest.approx(_emt_relaxed_energy_per_atom(fcc("Cu", 3.61)), abs=1e-4)
    assert abs(mu["energy_per_atom"]) < 0.1


def test_lowest_references_are_emts_ground_state_among_fcc_bcc_hcp() -> None:
    """EMT puts hcp Cu just below fcc Cu: with the default ``lowest`` the reference is hcp, hcp Cu is at 0 and
    fcc Cu just above it (by the EMT energy difference, computed here independently)."""
    oracle = get_oracle("ase", calculator=EMT_PATH)
    by_id = {r.candidate_id: r for r in oracle.evaluate([Candidate.from_structure(fcc("Cu", 3.61), id="fcc"),
                                                         Candidate.from_structure(hcp("Cu", 2.55), id="hcp")])}
    assert by_id["fcc"].provenance["elemental_references"]["Cu"]["structure"].startswith("hcp")
    e_fcc = _emt_relaxed_energy_per_atom(fcc("Cu", 3.61))
    e_hcp = by_id["fcc"].provenance["elemental_references"]["Cu"]["energy_per_atom"]
    assert e_hcp < e_fcc
    assert by_id["hcp"].targets["formation_energy_per_atom"] == pytest.approx(0.0, abs=2e-4)
    assert by_id["fcc"].targets["formation_energy_per_atom"] == pytest.approx(e_fcc - e_hcp, abs=2e-4)
    assert by_id["fcc"].targets["formation_energy_per_atom"] > 0


def test_cual_formation_energy_is_against_emt_references_and_provenance_names_emt() -> None:
    oracle = get_oracle("ase", calculator=EMT_PATH, elemental_structures="ase_reference")
    [r] = oracle.evaluate([Candidate.from_structure(cu_al_structures()["CuAl"], id="cual")])
    assert r.status == "ok", r.message
    mu = {el: r.provenance["elemental_references"][el]["energy_per_atom"] for el in ("Cu", "Al")}
    assert mu["Cu"] == pytest.approx(_emt_relaxed_energy_per_atom(fcc("Cu", 3.61)), abs=1e-4)
    assert mu["Al"] == pytest.approx(_emt_relaxed_energy_per_atom(fcc("Al", 4.05)), abs=1e-4)
    e = r.targets["energy_per_atom"]
    assert e is not None
    assert r.targets["formation_energy_per_atom"] == pytest.approx(e - (mu["Cu"] + mu["Al"]) / 2, abs=1e-9)
    # the hull is EMT's own elements only: E_hull = E_form (a lower bound), never an MP-scale number
    assert r.targets["e_above_hull"] == r.targets["formation_energy_per_atom"]
    assert "corrected_energy_per_atom" not in r.targets
    p = r.provenance
    assert p["oracle"] == "ase" and p["calculator"] == EMT_PATH and p["calculator_class"] == "ase.calculators.emt.EMT"
    assert p["model"] == "ase.calculators.emt.EMT" and p["calculator_kwargs"] == {}
    assert p["calculator_version"] and p["reference"] == "same-calculator-elements"
    assert "lower bound" in p["hull_reference"] and "same calculator" in p["formation_energy_reference"]


def test_hull_none_and_references_none() -> None:
    s = cu_al_structures()["Cu3Al"]
    [r] = get_oracle("ase", calculator=EMT_PATH, hull="none").evaluate([Candidate.from_structure(s, id="x")])
    assert r.targets["e_above_hull"] is None and r.targets["formation_energy_per_atom"] is not None
    assert r.provenance["reference"] == "none"
    [r] = get_oracle("ase", calculator=EMT_PATH, elemental_references="none").evaluate(
        [Candidate.from_structure(s, id="x")])
    assert r.targets["formation_energy_per_atom"] is None and r.targets["energy_per_atom"] is not None


def test_references_are_cached_per_calculator_and_settings() -> None:
    settings = ASESettings(calculator=EMT_PATH, calculator_kwargs={"asap_cutoff": True}, fmax=0.04)
    oracle = ASECalculatorOracle(**settings.model_dump())
    oracle.evaluate([Candidate.from_structure(fcc("Al", 4.05), id="al")])
    cached = ase_calculator._REFERENCES[settings.calculator_key()]["Al"]
    again = ASECalculatorOracle(**settings.model_dump())
    [r] = again.evaluate([Candidate.from_structure(fcc("Al", 4.05), id="al")])
    assert ase_calculator._REFERENCES[settings.calculator_key()]["Al"] is cached  # not recomputed
    assert r.provenance["calculator_kwargs"] == {"asap_cutoff": True}
    other = settings.model_copy(update={"calculator_kwargs": {}})
    assert other.calculator_key() != settings.calculator_key()


def test_a_factory_and_static_mode() -> None:
    oracle = get_oracle("ase", calculator="tests.oracles.test_ase_calculator:emt_factory", mode="static")
    [r] = oracle.evaluate([Candidate.from_structure(fcc("Cu", 3.61), id="cu")])
    assert r.status == "ok" and r.n_steps == 0 and r.provenance["calculator_class"] == "ase.calculators.emt.EMT"
    assert r.targets["energy_per_atom"] == pytest.approx(r.energies[0])


def test_one_bad_candidate_does_not_lose_the_batch() -> None:
    """Na has no EMT parameters; a tiny time limit times out a far-from-equilibrium cell; the rest are ok."""
    s = cu_al_structures()
    batch = [Candidate.from_structure(s["Cu"], id="cu"),
             Candidate.from_structure(Structure(Lattice.cubic(3.0), ["Na", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]]), id="nacu"),
             Candidate.from_structure(s["CuAl"], id="cual")]
    results = get_oracle("ase", calculator=EMT_PATH).evaluate(batch)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "No EMT-potential for Na" in results[1].message and results[1].provenance["calculator"] == EMT_PATH
    stretched = s["CuAl"].copy()
    stretched.scale_lattice(stretched.volume * 1.6)
    [r] = get_oracle("ase", calculator=EMT_PATH, timeout_s=1e-6).evaluate([Candidate.from_structure(stretched, id="t")])
    assert r.status == "timeout" and "timed out" in r.message


@pytest.mark.parametrize(("path", "expected"), [
    ("ase.calculators.no_such_module:EMT", "cannot import module 'ase.calculators.no_such_module'"),
    ("ase.calculators.emt:EMTT", "has no attribute 'EMTT'"),
    ("EMT", "is not an import path"),
    ("pymatgen.core:Structure", "not an ASE calculator"),
    ("ase.calculators.emt:parameters", "not an ASE calculator class or factory"),
])
def test_a_bad_calculator_path_names_the_field_and_the_fix(path: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_settings("ase", {"calculator": path})
    [err] = info.value.errors()
    assert err["loc"] == ("calculator",) and expected in err["msg"] and "e.g. 'ase.calculators.emt:EMT'" in err["msg"]


def test_bad_kwargs_unknown_keys_and_non_calculators_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"calculator_kwargs do not fit.*rc, width"):
        validate_settings("ase", {"calculator": "ase.calculators.tip3p:TIP3P", "calculator_kwargs": {"cutoff": 3}})
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        validate_settings("ase", {"calculator": EMT_PATH, "fmaxx": 0.1})
    with pytest.raises(ValueError, match="returned a dict, not an ASE calculator"):
        get_oracle("ase", calculator="tests.oracles.test_ase_calculator:not_a_calculator")


def test_campaign_config_errors_name_oracle_settings_calculator() -> None:
    from orchestration.config import parse_config
    from orchestration.config.runtime import validate_oracle_settings
    from orchestration.errors import UserError

    cfg = parse_config({"name": "t", "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
                        "search_space": {"elements": ["Cu", "Al", "O"]}, "seed_data": {"dataset": "mp20"},
                        "candidates_per_round": 10, "batch_size": 2, "rounds": 1,
                        "oracle": {"name": "ase", "settings": {"calculator": "ase.calculators.emt:Emt"}}})
    with pytest.raises(UserError, match=r"`oracle.settings.calculator`: module 'ase.calculators.emt' has no attribute"):
        validate_oracle_settings(cfg)


def test_shipped_config_validates_and_its_seed_data_is_emt_labelled() -> None:
    """configs/ase_emt.yaml loads, its oracle settings validate, and its seed table (made with the ase oracle and
    EMT, see the config's header) has EMT-scale formation energies; a 1-round run is tests/test_notebook.py."""
    from orchestration.campaign.data import seed_data
    from orchestration.config import load_config
    from orchestration.config.runtime import validate_oracle_settings

    cfg = load_config("configs/ase_emt.yaml")
    validate_oracle_settings(cfg)
    assert cfg.oracle.name == "ase" and cfg.oracle.settings["calculator"] == EMT_PATH
    seed = seed_data(cfg, "formation_energy_per_atom")
    assert len(seed) == 37  # the ok rows of 100 sampled
    assert all(set(c.counts) <= {"Cu", "Al", "O"} for c in seed.crystals)
    assert float(seed.targets.min()) > -1.0  # EMT's scale: MP puts Al2O3 at −3.4 eV/atom, CuO at −0.8
