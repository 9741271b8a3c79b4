"""Physical sanity gates: structures no oracle may label ``ok``.

Every oracle that relaxes or evaluates a structure checks it with :func:`check_structure` before
spending the evaluation (the *input*: a decoded crystal or a given structure) and again on what the
evaluation produced (the *result*: a relaxed structure); a crystal-table row without atomic positions
is checked with :func:`check_volume`. A failed gate gives status ``invalid`` and a message naming the
reason (the atom, or the volume and the bound); it is never ``ok``.

Gates (units in the names):

* **isolated atom**: some atom has no neighbour (periodic images included) within ``cutoff_A``. For an
  ML potential the cutoff is the model's own atom-graph cutoff (CHGNet 0.3.0: 6 Å, read from the loaded
  model by :func:`model_cutoff`): beyond it the model sees a free atom and returns the energy of an
  isolated atom, not of a solid (a NaCl rock-salt cell with a = 30 Å came back ``ok`` at +1.1 eV/atom
  after zero relaxation steps). Other oracles use :data:`DEFAULT_NEIGHBOR_CUTOFF_A` (6 Å: no solid or
  liquid has an atom whose nearest neighbour is that far; the longest nearest-neighbour distance among
  the elements, Cs, is 5.3 Å).
* **volume per atom** (Å³/atom) outside [:data:`MIN_VOLUME_PER_ATOM_A3`, :data:`MAX_VOLUME_PER_ATOM_A3`].
  The bounds come from MP-20's training table (2,051 near-hull crystals, ``volume / nsites``):
  smallest 7.35 Å³/atom (MnB4), largest 115.0 Å³/atom (Cs, the most voluminous element). The gate is
  half the minimum and four times the maximum, generous enough for every known solid (diamond 5.7,
  solid Xe 60, the MP-20 validation table's loosest entry, LiS4, 202 Å³/atom) and for the volume the
  decoder's rescaling adds, while an evaluation far outside them is a gas of atoms or a collapsed cell,
  not a crystal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from pymatgen.core import Structure

Stage = Literal["input", "result"]
"""``input``: what is about to be evaluated; ``result``: the structure an evaluation ended with."""

MIN_VOLUME_PER_ATOM_A3: Final = 3.6
"""Lower volume bound, Å³/atom: half of MP-20 train's smallest (7.35 Å³/atom, MnB4), rounded down."""
MAX_VOLUME_PER_ATOM_A3: Final = 460.0
"""Upper volume bound, Å³/atom: four times MP-20 train's largest (115.0 Å³/atom, Cs)."""
DEFAULT_NEIGHBOR_CUTOFF_A: Final = 6.0
"""Neighbour cutoff (Å) of oracles without a model cutoff (DFT, dataset look-ups, density)."""
MAX_NAMED_ATOMS: Final = 3
"""At most this many isolated atoms are named in a message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Gates:
    """The gate parameters an oracle applies.

    cutoff_A: every atom needs a neighbour closer than this, Å.
    cutoff_source: where the cutoff comes from (recorded in provenance).
    min_volume_per_atom_A3, max_volume_per_atom_A3: the volume bounds, Å³/atom.
    """

    cutoff_A: float = DEFAULT_NEIGHBOR_CUTOFF_A
    cutoff_source: str = "default for oracles without a model cutoff"
    min_volume_per_atom_A3: float = MIN_VOLUME_PER_ATOM_A3
    max_volume_per_atom_A3: float = MAX_VOLUME_PER_ATOM_A3

    def provenance(self) -> dict[str, Any]:
        return {"neighbor_cutoff_A": self.cutoff_A, "neighbor_cutoff_source": self.cutoff_source,
                "volume_per_atom_bounds_A3": [self.min_volume_per_atom_A3, self.max_volume_per_atom_A3]}


def check_volume(volume_A3: float, n_atoms: int, *, gates: Gates | None = None) -> str | None:
    """The reason a cell of ``volume_A3`` (Å³) holding ``n_atoms`` atoms is unphysical, or ``None``."""
    gates = gates or Gates()
    if n_atoms <= 0 or not math.isfinite(volume_A3) or volume_A3 <= 0:
        return f"no valid cell (volume {volume_A3} Å³ for {n_atoms} atoms)"
    per_atom = volume_A3 / n_atoms
    if per_atom > gates.max_volume_per_atom_A3:
        return (f"volume per atom {per_atom:.1f} Å³/atom is above the physical bound "
                f"{gates.max_volume_per_atom_A3:g} Å³/atom (isolated atoms, not a crystal)")
    if per_atom < gates.min_volume_per_atom_A3:
        return (f"volume per atom {per_atom:.2f} Å³/atom is below the physical bound "
                f"{gates.min_volume_per_atom_A3:g} Å³/atom (collapsed cell)")
    return None


def isolated_atoms(structure: Structure, *, cutoff_A: float) -> list[int]:
    """Indices of the atoms with no neighbour (periodic images included) within ``cutoff_A`` Å."""
    centers, _, _, dists = structure.get_neighbor_list(cutoff_A)
    bonded = np.unique(centers[dists > 1e-8])
    return sorted(set(range(len(structure))) - {int(i) for i in bonded})


def check_structure(structure: Structure, *, gates: Gates | None = None) -> str | None:
    """The reason ``structure`` is unphysical (volume per atom, then isolated atoms), or ``None``.

    The volume is checked first: it is cheap and bounds the cost of the neighbour search.
    """
    gates = gates or Gates()
    reason = check_volume(float(structure.volume), len(structure), gates=gates)
    if reason is not None:
        return reason
    lonely = isolated_atoms(structure, cutoff_A=gates.cutoff_A)
    if not lonely:
        return None
    named = ", ".join(f"{i} ({structure[i].specie})" for i in lonely[:MAX_NAMED_ATOMS])
    more = f" and {len(lonely) - MAX_NAMED_ATOMS} more" if len(lonely) > MAX_NAMED_ATOMS else ""
    return (f"atom {named}{more} of {len(structure)} has no neighbour within {gates.cutoff_A:g} Å "
            f"({gates.cutoff_source})")


def gate_message(stage: Stage, reason: str) -> str:
    """The message of a result refused by a gate (``stage``: the evaluation's input or its result)."""
    what = "input structure" if stage == "input" else "final structure"
    return f"unphysical {what}: {reason}"


def model_cutoff(model: Any) -> float | None:
    """The atom-graph cutoff (Å) of a loaded graph-network model (CHGNet's ``graph_converter``), or ``None``."""
    converter = getattr(model, "graph_converter", None)
    cutoff = getattr(converter, "atom_graph_cutoff", None)
    if cutoff is None:
        return None
    return float(cutoff)
