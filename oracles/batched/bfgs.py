"""ASE's BFGS with ASE's ``UnitCellFilter``, over a torch-sim batch (torch-sim 0.3.0 has only FIRE and gradient descent).

Each structure is optimised exactly as ``BFGS(UnitCellFilter(atoms))`` does it in ASE 3.29 (``ase/_4/optimize/bfgs.py``,
``cellutil.py``), so a batched campaign gets the optimizer that converged 331 of 384 CHGNet relaxations of generated
crystals in 200 steps where FIRE converged 288 (docs/results/crystal-gfn.md):

* coordinates (``3N + 9`` per structure): the atom positions with the cell deformation taken out, ``r F⁻ᵀ`` (Å), and
  the deformation gradient ``F`` (cell = reference cell · Fᵀ, row vectors) times ``cell_factor`` (the atom count);
* forces on them: ``f F`` (eV/Å) and the virial ``−V (σ + p) F⁻ᵀ / cell_factor`` (eV);
* the Hessian starts at ``alpha · I`` (70 eV/Å²) and takes the BFGS update after each step (skipped when no
  coordinate moved by 1e-7); the step is ``V (f·V / |ω|)`` from the eigenpairs (ω, V) of the Hessian, scaled down
  as a whole when its longest row (an atom or a cell row) is longer than ``max_step`` (0.2 Å).

The model's call and the filter's algebra run on the whole batch; only the eigendecomposition, an (3N+9)² matrix per
structure, runs per structure. The Hessians live in the optimizer (keyed by a per-structure ``tag`` carried in the
state), not in the state, because their size differs between structures; :meth:`UnitCellBFGS.release` drops those
of structures that have left the batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch_sim.optimizers import UnitCellFireState, unit_cell_fire


@dataclass(kw_only=True)
class UnitCellBFGSState(UnitCellFireState):
    """torch-sim's unit-cell optimizer state (forces, stress, ``cell_forces``, reference cell, ``cell_factor``) plus
    ``tag`` [n_systems] (int64): which Hessian of :class:`UnitCellBFGS` belongs to each system. The FIRE fields
    (velocities, dt, α) are carried but unused."""

    tag: torch.Tensor
    _system_attributes = UnitCellFireState._system_attributes | {"tag"}


@dataclass(slots=True)
class _Memory:
    """One structure's BFGS memory: Hessian [D, D] (eV/Å², D = 3N + 9), last coordinates and forces [D]."""

    hessian: torch.Tensor
    x0: torch.Tensor
    f0: torch.Tensor


class UnitCellBFGS:
    """``init(state) -> UnitCellBFGSState`` (one model call) and ``step(state) -> state`` (one BFGS step, one model
    call), the interface of torch-sim's optimizers; ``alpha``: initial Hessian (eV/Å²), ``max_step``: longest row of
    a step (Å), both ASE's defaults."""

    def __init__(self, model: Any, *, alpha: float = 70.0, max_step: float = 0.2) -> None:
        self.model = model
        self.alpha = alpha
        self.max_step = max_step
        self._fire_init, _ = unit_cell_fire(model=model)
        self._tags = itertools.count()
        self._memory: dict[int, _Memory] = {}

    def init(self, state: Any) -> UnitCellBFGSState:
        st = self._fire_init(state)
        tags = torch.tensor([next(self._tags) for _ in range(st.n_systems)], dtype=torch.int64,
                            device=st.positions.device)
        return UnitCellBFGSState(**vars(st), tag=tags)

    def release(self, state: UnitCellBFGSState, done: torch.Tensor) -> None:
        """Forget the Hessians of the systems of ``state`` marked in ``done`` [n_systems] (they leave the batch for
        good)."""
        for t in state.tag[done].tolist():
            self._memory.pop(int(t), None)

    def step(self, state: UnitCellBFGSState) -> UnitCellBFGSState:
        n_sys = state.n_systems
        idx = state.system_idx
        f_grad = state.deform_grad()  # [S, 3, 3]
        cf = state.cell_factor.view(n_sys, 1, 1)
        f_per_atom = f_grad[idx]  # [N, 3, 3]
        x_atoms = torch.linalg.solve(f_per_atom, state.positions.unsqueeze(-1)).squeeze(-1)  # r F⁻ᵀ, [N, 3]
        f_atoms = torch.bmm(state.forces.unsqueeze(1), f_per_atom).squeeze(1)  # f F, [N, 3]
        x_cell = cf * f_grad  # [S, 3, 3]
        counts = torch.bincount(idx, minlength=n_sys).tolist()
        new_atoms, new_cell = [], []
        for b, (xa, fa) in enumerate(zip(x_atoms.split(counts), f_atoms.split(counts), strict=True)):
            x = torch.cat([xa, x_cell[b]]).reshape(-1).double()
            f = torch.cat([fa, state.cell_forces[b]]).reshape(-1).double()
            dx = self._step_one(int(state.tag[b]), x, f).to(xa.dtype).reshape(-1, 3)
            new_atoms.append(xa + dx[:-3])
            new_cell.append(x_cell[b] + dx[-3:])
        f_new = torch.stack(new_cell) / cf  # [S, 3, 3]
        state.cell_positions = cf * f_new
        state.row_vector_cell = torch.bmm(state.reference_row_vector_cell, f_new.mT)
        state.positions = torch.bmm(torch.cat(new_atoms).unsqueeze(1), f_new[idx].mT).squeeze(1)
        out = self.model(state)
        state.energy, state.forces, state.stress = out["energy"], out["forces"], out["stress"]
        volumes = torch.linalg.det(state.cell).view(n_sys, 1, 1)
        virial = -volumes * (state.stress + state.pressure)
        state.cell_forces = torch.linalg.solve(f_new, virial.mT).mT / cf  # ASE: solve(F, virialᵀ)ᵀ / cell_factor
        return state

    def _step_one(self, tag: int, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """ASE's ``BFGS.step`` for one structure: update its Hessian from the last step, return the next step [D]."""
        mem = self._memory.get(tag)
        if mem is None:
            hessian = self.alpha * torch.eye(x.numel(), dtype=torch.float64, device=x.device)
        else:
            hessian = mem.hessian
            dx = x - mem.x0
            if float(dx.abs().max()) >= 1e-7:
                dg = -(f - mem.f0)  # change of the gradient
                a = dx @ dg
                hdx = hessian @ dx
                b = dx @ hdx
                hessian = hessian + torch.outer(dg, dg) / a - torch.outer(hdx, hdx) / b
        self._memory[tag] = _Memory(hessian, x.clone(), f.clone())
        omega, vectors = torch.linalg.eigh(hessian)
        step = vectors @ ((f @ vectors) / omega.abs())
        longest = float(step.reshape(-1, 3).norm(dim=1).max())
        if longest >= self.max_step:
            step = step * (self.max_step / longest)
        return step
