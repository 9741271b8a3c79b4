"""CHGNet as a torch-sim ``ModelInterface`` (torch-sim 0.3.0 ships no CHGNet interface).

The adapter turns each system of a batched :class:`torch_sim.SimState` into a CHGNet ``CrystalGraph``
(CHGNet's own graph converter, so neighbour lists and cutoffs are exactly CHGNet's) and runs CHGNet's
batched-graph ``forward`` once for the whole batch. Outputs follow torch-sim's conventions:

* ``energy`` (eV, per system, shape ``[n_systems]``) = CHGNet's energy per atom × atoms;
* ``forces`` (eV/Å, ``[n_atoms, 3]``);
* ``stress`` (eV/Å³, ``[n_systems, 3, 3]``, ASE sign convention) = CHGNet's stress (GPa) × ``ase.units.GPa``,
  exactly what CHGNet's ASE calculator reports.

The optimizer state may be float64 (the default here, like ASE); the model runs in its own float32.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pymatgen.core import Lattice, Structure
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState

from oracles.batched.graph import crystal_graph


class CHGNetModel(ModelInterface):
    """torch-sim model interface over a loaded ``chgnet.model.CHGNet``.

    Example::

        model = CHGNetModel(load_chgnet_model("cpu"), device="cpu")
        out = model(torch_sim.io.structures_to_state([s1, s2], device=model.device, dtype=model.dtype))
    """

    def __init__(self, model: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 graph_builder: Literal["numpy", "chgnet"] = "numpy") -> None:
        """``graph_builder``: ``numpy`` builds each step's crystal graphs with :mod:`oracles.batched.graph`
        (the same graphs, ~5× faster); ``chgnet`` with CHGNet's own converter from pymatgen structures."""
        super().__init__()
        self.graph_builder = graph_builder
        self._device = torch.device(device)
        self._dtype = dtype
        self._compute_stress = True
        self._compute_forces = True
        self._memory_scales_with = "n_atoms_x_density"
        self.model = model.to(self._device)
        self.model.eval()
        self.cutoff = float(model.graph_converter.atom_graph_cutoff)
        self.model_time_s = 0.0
        """Wall time inside :meth:`forward` (graph construction, forward and backward pass), s."""
        self.n_calls = 0

    def structures(self, state: SimState) -> list[Structure]:
        """The systems of ``state`` as pymatgen structures (Cartesian coordinates, row-vector lattice)."""
        positions = state.positions.detach().cpu().double().numpy()
        cells = state.row_vector_cell.detach().cpu().double().numpy()
        numbers = state.atomic_numbers.detach().cpu().numpy()
        owners = state.system_idx.detach().cpu().numpy()
        out = []
        for b in range(state.n_systems):
            mask = owners == b
            out.append(Structure(Lattice(cells[b]), numbers[mask].tolist(), positions[mask],
                                 coords_are_cartesian=True, validate_proximity=False))
        return out

    def graphs(self, state: SimState) -> list[Any]:
        """One CHGNet ``CrystalGraph`` per system of ``state`` (see ``graph_builder``)."""
        if self.graph_builder == "chgnet":
            return [self.model.graph_converter(s) for s in self.structures(state)]
        positions = state.positions.detach().cpu().double().numpy()
        cells = state.row_vector_cell.detach().cpu().double().numpy()
        numbers = state.atomic_numbers.detach().cpu().numpy()
        owners = state.system_idx.detach().cpu().numpy()
        masks = [owners == b for b in range(state.n_systems)]
        return [crystal_graph(self.model.graph_converter, positions[m], cells[b], numbers[m])
                for b, m in enumerate(masks)]

    def forward(self, state: SimState | dict[str, torch.Tensor], **_: Any) -> dict[str, torch.Tensor]:
        import time

        t0 = time.perf_counter()
        try:
            if isinstance(state, dict):
                state = SimState(**state, masses=torch.ones_like(state["positions"]))
            graphs = [g.to(self._device) for g in self.graphs(state)]
            energy, forces, stress = self._efs(graphs)
            return {"energy": energy.to(self._dtype), "forces": forces.to(self._dtype),
                    "stress": stress.to(self._dtype)}
        finally:
            self.model_time_s += time.perf_counter() - t0
            self.n_calls += 1

    def _efs(self, graphs: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy (eV), forces (eV/Å) and stress (eV/Å³) of a batch of CHGNet graphs.

        The same computation as ``CHGNet.forward(graphs, task="efs")`` (batched graph, ``_compute``, composition
        model) with one difference: forces and stresses come from one ``torch.autograd.grad`` call without
        ``create_graph`` (CHGNet keeps the double-backward graph for training; inference does not need it)."""
        from chgnet.model.model import BatchedGraph

        cm = self.model
        batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=cm.bond_basis_expansion,
                                           angle_basis_expansion=cm.angle_basis_expansion, compute_stress=True)
        pred = cm._compute(batched, compute_force=False, compute_stress=False)
        n_atoms = pred["atoms_per_graph"].to(pred["e"].dtype)
        total = pred["e"] * n_atoms if cm.is_intensive else pred["e"]
        n_graphs = len(graphs)
        grads = torch.autograd.grad(total.sum(), [*batched.atom_positions, *batched.strains])
        forces = -torch.cat(grads[:n_graphs], dim=0)
        volumes = torch.as_tensor(batched.volumes)
        stress = torch.stack(grads[n_graphs:], dim=0) / volumes.view(-1, 1, 1)
        comp = cm.composition_model(graphs) if cm.composition_model is not None else 0.0
        energy = (pred["e"] + comp) * n_atoms if cm.is_intensive else pred["e"] + comp
        return energy.detach(), forces.detach(), stress.detach()
