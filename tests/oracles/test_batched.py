"""The batched relaxation engine (oracles.batched): CHGNet adapter against CHGNet's own predictions, fault
isolation inside a batch, agreement with the ASE engine, settings and provenance.

Faults are injected into the real CHGNet model behind the torch-sim interface (``FaultyCHGNetModel``), the
batched counterpart of ``oracles.testing.FaultyCalculator``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from oracles.base import Candidate
from oracles.batched.chgnet_adapter import CHGNetModel
from oracles.batched.engine import EngineSettings, relax_batch
from oracles.batched.pool import shared_round
from oracles.chgnet import CHGNetOracle, _Task
from oracles.relax import (
    RelaxFault,
    RelaxSettings,
    load_chgnet_calculator,
    load_chgnet_model,
    relax_structure,
)
from oracles.testing import impossible_crystal, rocksalt, small_structures


def _rattled() -> list[Structure]:
    rng = np.random.default_rng(0)
    out = []
    for i, s in enumerate([*small_structures().values(),
              Structure(Lattice.from_parameters(3.1, 3.3, 5.2, 90, 95, 120), ["Fe", "O", "O"],
                        [[0, 0, 0], [0.3, 0.3, 0.1], [0.6, 0.7, 0.4]])]):
        s = s.copy()
        s.perturb(0.05, min_distance=0.0, seed=i) if len(s) > 1 else None  # seeded: the same cells on every run
        s.apply_strain(float(rng.uniform(-0.03, 0.03)))
        out.append(s)
    return out


def test_adapter_matches_chgnet_single_structure_predictions() -> None:
    """Energy within 1e-4 eV/atom, forces within 2e-3 eV/Å, stress within 2e-5 eV/Å³ (3 MPa) of CHGNet's own
    ASE calculator on each structure alone (the adapter runs them as one batched graph; float32 model)."""
    import torch_sim as ts

    structures = _rattled()
    model = CHGNetModel(load_chgnet_model("cpu"))
    state = ts.io.structures_to_state(structures, device=model.device, dtype=model.dtype)
    out = model(state)
    calc = load_chgnet_calculator("cpu")
    owners = state.system_idx.numpy()
    for b, s in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        assert abs(float(out["energy"][b]) - atoms.get_potential_energy()) / len(s) < 1e-4
        assert np.abs(out["forces"][owners == b].numpy() - atoms.get_forces()).max() < 2e-3
        assert np.abs(out["stress"][b].numpy() - atoms.get_stress(voigt=False)).max() < 2e-5
    assert out["energy"].shape == (len(structures),) and out["stress"].shape == (len(structures), 3, 3)


def test_numpy_graphs_are_chgnets_graphs() -> None:
    """The numpy-built crystal graphs (oracles.batched.graph) have CHGNet's converter's edges and angles and give
    the same energies, forces and stresses (float32 rounding apart), also for cells smaller than the cutoff."""
    import torch_sim as ts

    structures = _rattled()
    chgnet = load_chgnet_model("cpu")
    fast, reference = CHGNetModel(chgnet), CHGNetModel(chgnet, graph_builder="chgnet")
    state = ts.io.structures_to_state(structures, device=fast.device, dtype=fast.dtype)
    for g, h in zip(fast.graphs(state), reference.graphs(state), strict=True):
        assert len(g.atom_graph) == len(h.atom_graph) and len(g.bond_graph) == len(h.bond_graph)
        assert len(g.undirected2directed) == len(h.undirected2directed)
        assert sorted(map(tuple, g.atom_graph.tolist())) == sorted(map(tuple, h.atom_graph.tolist()))
    out, ref = fast(state), reference(state)
    assert float((out["energy"] - ref["energy"]).abs().max()) < 1e-4
    assert float((out["forces"] - ref["forces"]).abs().max()) < 5e-4  # eV/Å; float32 rounding of forces up to ~10
    assert float((out["stress"] - ref["stress"]).abs().max()) < 1e-5  # eV/Å³; stresses up to 1.2 here
    # the isolated-atom policy is the converter's; CHGNet's ASE calculator sets the shared cached model's to
    # "warn" when one is built, so the test asks for "error" itself (and puts the policy back)
    converter = chgnet.graph_converter
    before = converter.on_isolated_atoms
    converter.set_isolated_atom_response("error")
    try:
        with pytest.raises(ValueError, match="isolated atom"):
            fast(ts.io.structures_to_state([Structure(Lattice.cubic(30.0), ["Na", "Cl"],
                                                      [[0, 0, 0], [0.5, 0.5, 0.5]])],
                                           device=fast.device, dtype=fast.dtype))
    finally:
        converter.set_isolated_atom_response(before)


def test_engine_agrees_with_ase_relaxation() -> None:
    """Same statuses, final energies within 5 meV/atom, step counts within 30 % + 5 of ASE's FIRE."""
    structures = _rattled()[:6]  # the rattled FeO2 cell has two nearby minima: each engine may find either
    model = CHGNetModel(load_chgnet_model("cpu"))
    batched = relax_batch(structures, model=model, settings=EngineSettings(steps=150))
    calc = load_chgnet_calculator("cpu")
    for s, b in zip(structures, batched, strict=True):
        a = relax_structure(s, calculator=calc, settings=RelaxSettings(steps=150))
        assert not isinstance(b, RelaxFault), b
        assert a.status == b.status
        assert abs(a.energy_total - b.energy_total) / len(s) < 5e-3
        assert abs(a.n_steps - b.n_steps) <= 0.3 * a.n_steps + 5
        assert len(b.energies_per_atom) == b.n_steps + 1


class FaultyCHGNetModel(CHGNetModel):
    """The real CHGNet adapter with a fault injected for chosen reduced formulas."""

    faults: dict[str, str] = {}

    def forward(self, state: Any, **kw: Any) -> dict[str, torch.Tensor]:
        formulas = [s.composition.reduced_formula for s in self.structures(state)]
        if any(self.faults.get(f) == "raise" for f in formulas):
            raise RuntimeError("injected model failure")
        if any(self.faults.get(f) == "crash" for f in formulas):  # the worker dies as in a segfault (workers ≥ 1)
            os._exit(70)
        out = super().forward(state, **kw)
        for b, f in enumerate(formulas):
            fault = self.faults.get(f)
            mask = state.system_idx == b
            if fault == "nan":
                out["energy"][b] = math.nan
            elif fault == "nan_forces":
                out["forces"][mask] = math.nan
            elif fault == "explode":
                out["stress"][b] = -0.5 * torch.eye(3, dtype=out["stress"].dtype)
            elif fault == "slow":
                time.sleep(0.3)
                out["forces"][mask] += 0.5  # never converges
        return out


@dataclass
class FaultyBatchedFactory:
    """``calculator_factory`` whose calculator brings the faulty torch-sim model (the ``batched_model`` hook)."""

    faults: dict[str, str] = field(default_factory=dict)

    def __call__(self, device: str) -> Any:
        calc = load_chgnet_calculator(device)
        faults = dict(self.faults)

        def batched_model() -> FaultyCHGNetModel:
            model = FaultyCHGNetModel(calc.model, device=device)
            model.faults = faults
            return model

        calc.batched_model = batched_model
        return calc


FAULTS = {"MgO": "raise", "LiF": "nan", "KCl": "explode", "NaF": "nan_forces", "Si": "slow"}
EXPECTED = {
    "NaCl": ("ok", ""),
    "MgO": ("failed", "RuntimeError: injected model failure"),
    "LiF": ("failed", "non-finite energy"),
    "KCl": ("failed", "structure exploded"),
    "NaF": ("failed", "non-finite forces"),
    "Si": ("timeout", "timed out"),
    "isolated": ("invalid", "isolated"),
    "impossible": ("invalid", "not compatible with the Wyckoff positions of space group 225"),
    "CsCl": ("ok", ""),
}


def _fault_batch() -> list[Candidate]:
    cands = [Candidate.from_structure(s, id=k) for k, s in small_structures().items()]
    isolated = Structure(Lattice.cubic(30.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return [*cands, Candidate.from_structure(isolated, id="isolated"), Candidate.from_crystal(impossible_crystal()),
            Candidate.from_structure(rocksalt("Cs", "Cl", 7.0), id="CsCl")]


def test_one_bad_structure_never_fails_the_batch(mp20_dir: Path) -> None:
    # the time limit counts per structure from when it entered the batch; the slow one slows the whole batch
    # (0.3 s a step), so the limit leaves the others room to finish first
    oracle = CHGNetOracle(engine="batched", calculator_factory=FaultyBatchedFactory(FAULTS), workers=0, steps=400,
                          timeout_s=12.0, mp20_dir=str(mp20_dir))
    seen: list[tuple[int, int]] = []
    results = oracle.evaluate(_fault_batch(), progress=lambda d, t: seen.append((d, t)))
    assert [r.candidate_id for r in results] == [c.id for c in _fault_batch()]
    for r in results:
        status, fragment = EXPECTED[r.candidate_id]
        assert r.status == status, [(x.candidate_id, x.status, x.message[:50]) for x in results]
        assert fragment in r.message, (r.candidate_id, r.message)
        assert r.provenance["engine"] == "batched" and r.provenance["oracle"] == "chgnet"
    slow = next(r for r in results if r.candidate_id == "Si")
    assert slow.n_steps >= 1 and slow.energies  # partial trajectory kept
    for r in results:
        if r.ok:
            assert r.targets["formation_energy_per_atom"] is not None and r.structure_cif
            assert "torch-sim" in r.provenance["engine_detail"] and r.provenance["model_version"]
    assert seen[-1] == (len(results), len(results)) and len(seen) >= 5  # progress as each one finishes


def test_a_later_oracle_of_the_process_does_not_inherit_injected_faults(mp20_dir: Path) -> None:
    """The in-process torch-sim model belongs to the oracle that built it: an oracle set up after one with a
    faulty model relaxes with its own (a leaked faulty model once failed later tests of the same process)."""
    mgo = Candidate.from_structure(small_structures()["MgO"], id="MgO")
    faulty = CHGNetOracle(engine="batched", calculator_factory=FaultyBatchedFactory({"MgO": "raise"}), workers=0,
                          steps=20, mp20_dir=str(mp20_dir))
    assert faulty.evaluate([mgo])[0].status == "failed"
    clean = CHGNetOracle(engine="batched", workers=0, steps=20, mp20_dir=str(mp20_dir))
    assert clean.evaluate([mgo])[0].status in ("ok", "unconverged")


def test_engine_isolates_a_structure_that_cannot_be_built() -> None:
    """A NaN coordinate among good structures: that one fails, the others relax."""
    good = small_structures()["NaCl"]
    bad = good.copy()
    bad.translate_sites([0], [math.nan, 0.0, 0.0], frac_coords=False, to_unit_cell=False)
    model = CHGNetModel(load_chgnet_model("cpu"))
    out = relax_batch([good, bad, good], model=model, settings=EngineSettings(steps=30))
    assert isinstance(out[1], RelaxFault) and out[1].status == "failed"
    assert not isinstance(out[0], RelaxFault) and not isinstance(out[2], RelaxFault)
    assert out[0].status == out[2].status == "ok"


def test_small_cpu_batches_let_structures_enter_as_others_finish() -> None:
    """With room for two 2-atom cells at a time, all six still finish, each with its own step count."""
    structures = _rattled()[:6]
    model = CHGNetModel(load_chgnet_model("cpu"))
    out = relax_batch(structures, model=model, settings=EngineSettings(steps=80, max_batch_atoms=4))
    assert all(not isinstance(o, RelaxFault) for o in out)
    assert len({o.n_steps for o in out}) > 1


def test_a_structure_relaxes_the_same_whoever_shares_its_batch() -> None:
    """Regression for torch-sim#490 (a structure joining the in-flight batch made every other skip a FIRE update):
    alone, in one batch, in reverse order and two at a time with joins, each structure ends with the same energy
    and step count."""
    rng = np.random.default_rng(1)
    structures = []
    for i, s in enumerate(_rattled()[:6]):  # far enough from their minima to take tens of steps, so that others join meanwhile
        s = s.copy()
        s.apply_strain(float(rng.uniform(0.06, 0.1)))
        s.perturb(0.15, min_distance=0.0, seed=10 + i) if len(s) > 1 else None
        structures.append(s)
    model = CHGNetModel(load_chgnet_model("cpu"))
    settings = EngineSettings(steps=80)
    together = relax_batch(structures, model=model, settings=settings)
    reverse = relax_batch(structures[::-1], model=model, settings=settings)[::-1]
    joining = relax_batch(structures, model=model, settings=EngineSettings(steps=80, max_batch_atoms=4))
    alone = [relax_batch([s], model=model, settings=settings)[0] for s in structures]
    for runs in zip(alone, together, reverse, joining, strict=True):
        assert all(not isinstance(o, RelaxFault) for o in runs)
        assert len({o.n_steps for o in runs}) == 1, [o.n_steps for o in runs]
        assert max(o.energy_total for o in runs) - min(o.energy_total for o in runs) < 1e-4


def test_a_lazy_source_is_read_only_as_the_batch_has_room() -> None:
    """Room for two 2-atom cells: when the first structure leaves the batch, only those two and the one the
    batcher looked at (and put back) have been read from the source; every structure still gets its outcome."""
    structures = _rattled()[:6]
    read: list[int] = []
    read_at_first_done: list[int] = []

    def source() -> Iterator[Structure]:
        for k, s in enumerate(structures):
            read.append(k)
            yield s

    def on_done(i: int, outcome: Any, wall_s: float, model_s: float) -> None:
        read_at_first_done.append(len(read))

    model = CHGNetModel(load_chgnet_model("cpu"))
    out = relax_batch(source(), model=model, settings=EngineSettings(steps=30, max_batch_atoms=4), on_done=on_done)
    assert read_at_first_done[0] == 3
    assert len(out) == 6 and all(not isinstance(o, RelaxFault) for o in out)


def _tasks(cands: list[Candidate]) -> list[_Task]:
    return [_Task(i, c.id, c.candidate_seed(0), c.crystal, c.structure) for i, c in enumerate(cands)]


def test_pool_workers_take_their_structures_from_one_shared_queue(mp20_dir: Path) -> None:
    """Two workers, each with room for two 2-atom cells: both take tasks from the shared queue, every task gets
    exactly one result as it finishes; the next evaluation on the same pool (a new generation) works too."""
    cands = [Candidate.from_structure(s, id=f"r{k}") for k, s in enumerate(_rattled()[:6])]
    with CHGNetOracle(engine="batched", workers=2, steps=30, max_batch_atoms=4, mp20_dir=str(mp20_dir)) as oracle:
        oracle.warm_up()
        assert oracle._queues is not None
        got: list[int] = []
        end = shared_round(oracle._ensure_pool(), oracle._queues, _tasks(cands), workers=2,
                           deadline=time.monotonic() + 600, on_result=lambda i, r: got.append(i))
        assert end.cause == "ok" and end.missing == [] and sorted(got) == list(range(len(cands)))
        assert sorted(end.taken) == list(range(len(cands))) and len(set(end.taken.values())) == 2
        seen: list[tuple[int, str]] = []
        results = oracle.evaluate(cands, on_result=lambda i, r: seen.append((i, r.candidate_id)))
    assert sorted(seen) == [(i, c.id) for i, c in enumerate(cands)]
    assert [r.candidate_id for r in results] == [c.id for c in cands]
    assert all(r.status == "ok" and r.provenance["engine"] == "batched" for r in results)


@pytest.mark.slow
def test_a_crashing_pool_worker_loses_only_its_own_candidate(mp20_dir: Path) -> None:
    """A structure that kills its worker (as a segfault would) fails alone; the structures that were in a batch
    when it happened are rerun one at a time, the others through the queue again."""
    cands = [Candidate.from_structure(s, id=k) for k, s in small_structures().items()]
    with CHGNetOracle(engine="batched", calculator_factory=FaultyBatchedFactory({"MgO": "crash"}), workers=2,
                      steps=30, max_batch_atoms=4, mp20_dir=str(mp20_dir)) as oracle:
        results = oracle.evaluate(cands)
    by_id = {r.candidate_id: r for r in results}
    assert by_id["MgO"].status == "failed" and "worker process died" in by_id["MgO"].message
    assert all(r.status == "ok" for k, r in by_id.items() if k != "MgO"), [(r.candidate_id, r.message) for r in results]


def test_settings_name_the_field_and_fix() -> None:
    with pytest.raises(ValidationError, match="relax_cell: true, or optimizer: FIRE, or engine: ase"):
        CHGNetOracle(engine="batched", optimizer="BFGS", relax_cell=False)
    with pytest.raises(ValidationError, match="engine"):
        CHGNetOracle(engine="torch")
    assert CHGNetOracle(engine="batched").provenance()["engine"] == "batched"
    bfgs = CHGNetOracle(engine="batched", optimizer="BFGS").provenance()
    assert bfgs["engine"] == "batched" and bfgs["settings"]["optimizer"] == "BFGS"
