"""The batched BFGS (oracles.batched.bfgs): ASE's BFGS(UnitCellFilter) step for step, independent of who shares the
batch, unchanged by the engine's per-structure retry of a failed batched step, and with its memory released."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from oracles.batched import bfgs as bfgs_module
from oracles.batched.chgnet_adapter import CHGNetModel
from oracles.batched.engine import EngineSettings, relax_batch
from oracles.relax import (
    RelaxFault,
    RelaxOutcome,
    RelaxSettings,
    load_chgnet_calculator,
    load_chgnet_model,
    relax_structure,
)
from tests.oracles.test_batched import _rattled

BFGS = EngineSettings(steps=80, optimizer="BFGS")


def _far_from_minimum() -> list[Structure]:
    """Six small cells strained 6–10 % and rattled 0.15 Å: up to ~10 BFGS steps each, atoms and cell."""
    rng = np.random.default_rng(1)
    out = []
    for i, s in enumerate(_rattled()[:6]):
        s = s.copy()
        s.apply_strain(float(rng.uniform(0.06, 0.1)))
        s.perturb(0.15, min_distance=0.0, seed=10 + i) if len(s) > 1 else None
        out.append(s)
    return out


@pytest.fixture(scope="module")
def model() -> CHGNetModel:
    return CHGNetModel(load_chgnet_model("cpu"))


def _outcomes(out: list[Any]) -> list[RelaxOutcome]:
    assert all(isinstance(o, RelaxOutcome) for o in out), [o for o in out if isinstance(o, RelaxFault)]
    return out


def test_batched_bfgs_takes_ases_bfgs_steps(model: CHGNetModel) -> None:
    """Against ASE's BFGS(UnitCellFilter) with the same CHGNet on each structure alone: the same status, the energy
    after each of the first 5 steps within 2e-5 eV/atom (the float32 model's noise), step counts within 2 and final
    energies within 1 meV/atom."""
    structures = _far_from_minimum()
    batched = _outcomes(relax_batch(structures, model=model, settings=BFGS))
    calc = load_chgnet_calculator("cpu")
    for s, b in zip(structures, batched, strict=True):
        a = relax_structure(s, calculator=calc, settings=RelaxSettings(steps=80, optimizer="BFGS"))
        assert a.status == b.status, (s.composition.reduced_formula, a.status, b.status)
        k = min(6, len(a.energies_per_atom), len(b.energies_per_atom))
        assert k >= 2
        np.testing.assert_allclose(b.energies_per_atom[:k], a.energies_per_atom[:k], atol=2e-5)
        assert abs(a.n_steps - b.n_steps) <= 2, (s.composition.reduced_formula, a.n_steps, b.n_steps)
        assert abs(a.energy_total - b.energy_total) / len(s) < 1e-3


def test_a_structure_relaxes_the_same_whoever_shares_its_batch(model: CHGNetModel) -> None:
    """Each structure's Hessian is its own: alone, in one batch, in reverse order and two at a time with joins,
    each structure ends with the same step count and energy."""
    structures = _far_from_minimum()
    together = _outcomes(relax_batch(structures, model=model, settings=BFGS))
    reverse = _outcomes(relax_batch(structures[::-1], model=model, settings=BFGS))[::-1]
    joining = _outcomes(relax_batch(structures, model=model,
                                    settings=EngineSettings(steps=80, optimizer="BFGS", max_batch_atoms=4)))
    alone = [_outcomes(relax_batch([s], model=model, settings=BFGS))[0] for s in structures]
    assert max(o.n_steps for o in alone) >= 6 and len({o.n_steps for o in alone}) > 2  # joins happen mid-way (9 here)
    for runs in zip(alone, together, reverse, joining, strict=True):
        assert len({o.n_steps for o in runs}) == 1, [o.n_steps for o in runs]
        assert max(o.energy_total for o in runs) - min(o.energy_total for o in runs) < 1e-4


class _FailsInBatches(CHGNetModel):
    """CHGNet that raises on every batched call with more than one structure after the first two: the engine then
    repeats each step per structure from the state before it (the BFGS memory was already updated by the batched
    try)."""

    calls = 0

    def forward(self, state: Any, **kw: Any) -> dict[str, torch.Tensor]:
        type(self).calls += 1
        if state.n_systems > 1 and type(self).calls > 2:
            raise RuntimeError("injected batch failure")
        return super().forward(state, **kw)


def test_a_step_repeated_per_structure_is_the_same_step(model: CHGNetModel) -> None:
    structures = _far_from_minimum()[:3]
    alone = [_outcomes(relax_batch([s], model=model, settings=BFGS))[0] for s in structures]
    failing = _FailsInBatches(load_chgnet_model("cpu"))
    retried = _outcomes(relax_batch(structures, model=failing, settings=BFGS))
    assert failing.calls > 10
    for a, r in zip(alone, retried, strict=True):
        assert (a.status, a.n_steps) == (r.status, r.n_steps)
        assert abs(a.energy_total - r.energy_total) < 1e-4


def test_the_hessians_of_finished_structures_are_released(model: CHGNetModel, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    made: list[bfgs_module.UnitCellBFGS] = []
    real_init = bfgs_module.UnitCellBFGS.__init__

    def init(self: bfgs_module.UnitCellBFGS, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        made.append(self)

    monkeypatch.setattr(bfgs_module.UnitCellBFGS, "__init__", init)
    structures = _far_from_minimum()
    sizes: list[int] = []
    out = relax_batch(structures, model=model, settings=EngineSettings(steps=80, optimizer="BFGS", max_batch_atoms=4),
                      on_done=lambda *a: sizes.append(len(made[0]._memory)))
    assert len(_outcomes(out)) == 6 and len(made) == 1
    assert max(sizes) <= 3  # at most the structures in flight (two 2-atom cells and the one just finishing)
    assert made[0]._memory == {}


def test_bfgs_needs_the_unit_cell_filter(model: CHGNetModel) -> None:
    with pytest.raises(ValueError, match="cell_filter unit, or optimizer FIRE"):
        relax_batch(_rattled()[:1], model=model, settings=EngineSettings(optimizer="BFGS", cell_filter="frechet"))
