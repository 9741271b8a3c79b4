"""CHGNet's crystal graph built with numpy from arrays, for the batched engine's every FIRE step.

CHGNet's own ``CrystalGraphConverter`` takes a pymatgen ``Structure`` and builds the graph through Python
objects (one per node and per edge, then a Python loop over the line graph): on 4–12-atom cells that took
~1.5 ms per structure and step on one core, ~10–15 % of the batched engine's model time. :func:`crystal_graph`
returns the same graph from the same neighbour list (pymatgen's ``find_points_in_spheres``, as
``Structure.get_neighbor_list``, with the same cutoffs), with vectorised book-keeping:

* directed edges: the neighbour list in its order (index = row);
* undirected edges: each directed edge ``(i, j, image)`` paired with ``(j, i, -image)``, numbered in the order of
  their first directed edge (``undirected2directed`` = that first edge), as CHGNet's ``create_graph``;
* bond graph (angles): every ordered pair of distinct directed edges with the same centre, the first within
  ``bond_graph_cutoff`` (its undirected edge's length ≤ cutoff) and the second shorter than it, as rows
  ``[centre, undirected(e1), e1, undirected(e2), e2]`` (CHGNet's ``line_graph_adjacency_list``; the rows come in
  another order, which changes sums only by float rounding).

Isolated atoms and unpaired edges raise as CHGNet's converter does. ``tests/oracles/test_batched.py`` checks
energies, forces and stresses against CHGNet's converter.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch


def neighbor_list(positions: np.ndarray, cell: np.ndarray, cutoff: float,
                  tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(centre, neighbour, image, distance)`` of all pairs closer than ``cutoff`` Å (self pairs left out),
    as ``Structure.get_neighbor_list``. ``positions``: Cartesian, Å, ``[n, 3]``; ``cell``: rows are lattice
    vectors, Å, ``[3, 3]``."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    coords = np.ascontiguousarray(positions, dtype=float)
    center, neighbor, image, distance = find_points_in_spheres(
        coords, coords, r=float(cutoff), pbc=np.ones(3, dtype=np.int64),
        lattice=np.ascontiguousarray(cell, dtype=float), tol=tol)
    keep = ~((center == neighbor) & (distance <= tol))
    return center[keep], neighbor[keep], image[keep], distance[keep]


def crystal_graph(converter: Any, positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray) -> Any:
    """CHGNet ``CrystalGraph`` of one structure (see the module docstring); ``converter`` is the model's
    ``graph_converter`` (cutoffs, isolated-atom policy)."""
    from chgnet.graph.crystalgraph import CrystalGraph

    n_atoms = len(numbers)
    atom_cut, bond_cut = float(converter.atom_graph_cutoff), float(converter.bond_graph_cutoff)
    center, neighbor, image, distance = neighbor_list(positions, cell, atom_cut)
    image = np.asarray(image, dtype=np.int64)
    n_isolated = n_atoms - len(np.unique(center))
    if n_isolated:
        msg = (f"Structure graph_id=None has {n_isolated} isolated atom(s) with atom_graph_cutoff={atom_cut}. "
               "CHGNet calculation will likely go wrong")
        if converter.on_isolated_atoms == "error":
            raise ValueError(msg)
        if converter.on_isolated_atoms == "warn":
            print(msg, file=sys.stderr)
    n_edges = len(center)
    # pair each directed edge with its reverse: the same key read forwards and backwards
    span = int(np.abs(image).max(initial=0)) + 1
    base = 2 * span + 1

    def key(a: np.ndarray, b: np.ndarray, img: np.ndarray) -> np.ndarray:
        packed = ((img[:, 0] + span) * base + (img[:, 1] + span)) * base + (img[:, 2] + span)
        return (a.astype(np.int64) * n_atoms + b) * base**3 + packed

    forward, backward = key(center, neighbor, image), key(neighbor, center, -image)
    order = np.argsort(forward, kind="stable")
    pos = np.searchsorted(forward[order], backward)
    pos = np.minimum(pos, max(n_edges - 1, 0))
    partner = order[pos] if n_edges else pos
    if n_edges and not np.array_equal(forward[partner], backward):
        raise ValueError("Error: number of directed edges != 2 * number of undirected edges! This indicates "
                         "directed edges are not complete")
    edges = np.arange(n_edges)
    first = partner > edges
    undirected = np.empty(n_edges, dtype=np.int64)
    undirected[first] = np.arange(int(first.sum()))
    undirected[~first] = undirected[partner[~first]]
    undirected2directed = edges[first]
    # angles: (e1, e2) with the same centre, e1 != e2, |undirected(e1)| <= cutoff, |e2| < cutoff
    e1 = edges[distance[undirected2directed[undirected]] <= bond_cut]
    e2 = edges[distance < bond_cut]
    e2 = e2[np.argsort(center[e2], kind="stable")]
    c2 = center[e2]
    lo, hi = np.searchsorted(c2, center[e1], "left"), np.searchsorted(c2, center[e1], "right")
    counts = hi - lo
    first_rep = np.repeat(e1, counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    second_rep = e2[np.repeat(lo, counts) + offsets]
    keep = first_rep != second_rep
    first_rep, second_rep = first_rep[keep], second_rep[keep]
    bond_graph = np.stack([center[first_rep], undirected[first_rep], first_rep, undirected[second_rep], second_rep],
                          axis=1) if len(first_rep) else np.zeros((0, 5), dtype=np.int64)
    frac = np.linalg.solve(np.asarray(cell, dtype=float).T, np.asarray(positions, dtype=float).T).T
    dtype = torch.float32
    return CrystalGraph(
        atomic_number=torch.as_tensor(np.asarray(numbers), dtype=torch.int32),
        atom_frac_coord=torch.tensor(frac, dtype=dtype, requires_grad=True),
        atom_graph=torch.as_tensor(np.stack([center, neighbor], axis=1), dtype=torch.int32),
        neighbor_image=torch.as_tensor(image, dtype=dtype),
        directed2undirected=torch.as_tensor(undirected, dtype=torch.int32),
        undirected2directed=torch.as_tensor(undirected2directed, dtype=torch.int32),
        bond_graph=torch.as_tensor(bond_graph, dtype=torch.int32),
        lattice=torch.tensor(np.asarray(cell, dtype=float), dtype=dtype, requires_grad=True),
        atom_graph_cutoff=atom_cut, bond_graph_cutoff=bond_cut)
