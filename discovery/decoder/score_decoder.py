"""The score-based structure decoder: (space group, conventional-cell counts, lattice) → structures.

``decode`` draws one Wyckoff assignment per structure (weighted by the training frequencies), runs the
annealed Langevin sampler (:mod:`discovery.decoder.langevin`) for all of them as one batch, expands the
orbits into the conventional cell and keeps a sample only if spglib (symprec 0.1) finds exactly the
requested space group, its standardised conventional cell has exactly the requested counts, and no two
atoms are closer than ``min_distance``. Rejected samples are redrawn (new assignment, new chain) for up
to ``rounds`` rounds, then by plain random placement of the free parameters at the start lattice (as
pyxtal does; the distance limit relaxed towards the end) for up to ``fallback_tries``; ``last_stats`` counts what happened. Everything draws from
one generator seeded by ``seed``: the same call gives the same structures.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Element, Lattice, Structure

from discovery.crystal import Crystal
from discovery.decoder.graph import lattice_to_q, prior_q, q_to_parameters
from discovery.decoder.langevin import LangevinSample, SamplerSettings, langevin
from discovery.decoder.model import ScoreNet
from discovery.decoder.train import load_checkpoint, prior_volume
from discovery.decoder.wyckoff import (
    Assignment,
    DecoderError,
    assignment_distribution,
    sample_assignments,
    wyckoff_sites,
)

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "score-decoder"


def check_structure(structure: Structure, sg: int, counts: dict[str, int], *, min_distance: float = 0.0) -> bool:
    """True when spglib (symprec 0.1, angle tolerance spglib's default and 5°) gives ``sg``, its conventional standard cell has exactly ``counts``,
    and no two atoms are closer than ``min_distance`` Å."""
    import spglib

    cell = (structure.lattice.matrix.tolist(), structure.frac_coords.tolist(), [int(s.specie.Z) for s in structure])
    for angle_tolerance in (-1.0, 5.0):  # spglib's default and pymatgen's SpacegroupAnalyzer's
        ds = spglib.get_symmetry_dataset(cell, symprec=0.1, angle_tolerance=angle_tolerance)
        if ds is None or int(ds.number) != sg:
            return False
        std = Counter(Element.from_Z(int(x)).symbol for x in ds.std_types)
        if dict(std) != {el: int(n) for el, n in counts.items()}:
            return False
    if min_distance > 0 and len(structure) > 1:
        dm = structure.distance_matrix
        if float(dm[np.triu_indices(len(structure), 1)].min()) < min_distance:
            return False
    return min_distance <= 0 or len(structure) > 1 or min(structure.lattice.abc) >= min_distance


def build_structure(sg: int, assignment: Assignment, q: np.ndarray, params: list[np.ndarray]) -> Structure:
    """The conventional cell: lattice from the free parameters ``q``, each orbit expanded."""
    sites = wyckoff_sites(sg)
    species: list[str] = []
    coords: list[np.ndarray] = []
    for (el, idx), p in zip(assignment, params, strict=True):
        pos = sites[idx].expand(p)
        species += [el] * len(pos)
        coords.append(pos)
    return Structure(Lattice.from_parameters(*q_to_parameters(sg, q)), species, np.concatenate(coords))


class ScoreDecoder:
    """Score-based decoder (SMLD on Wyckoff free parameters and free lattice parameters)."""

    def __init__(self, model: ScoreNet, *, frequencies: dict[int, dict[str, float]], volumes: dict[str, float],
                 settings: SamplerSettings | None = None, device: str = "cpu", rounds: int = 4,
                 fallback_tries: int = 200, meta: dict[str, object] | None = None, threads: int = 1,
                 shapes: dict[str, list[float]] | None = None) -> None:
        self.model = model.eval().to(device)
        self.frequencies = frequencies
        self.volumes = volumes
        self.settings = settings or SamplerSettings()
        self.device = device
        self.rounds = rounds
        self.fallback_tries = fallback_tries
        self.meta = meta or {}
        self.shapes = shapes or {}
        self.threads = threads  # torch threads while decoding (restored after): the ops are tiny, 1 is fastest
        self.last_stats: Counter[str] = Counter()
        self._distributions: dict[tuple[int, tuple[tuple[str, int], ...]], tuple[list[Assignment], np.ndarray]] = {}

    def _distribution(self, sg: int, counts: dict[str, int]) -> tuple[list[Assignment], np.ndarray]:
        key = (sg, tuple(sorted(counts.items())))
        hit = self._distributions.get(key)
        if hit is None:
            if len(self._distributions) > 4096:
                self._distributions.clear()
            hit = self._distributions[key] = assignment_distribution(sg, counts, frequencies=self.frequencies.get(sg))
        return hit

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: str = "cpu",
             settings: SamplerSettings | None = None) -> ScoreDecoder:
        """Load a checkpoint directory (or ``model.pt``); ``None`` → the shipped checkpoint."""
        ck = load_checkpoint(SHIPPED_CHECKPOINT if path is None else path)
        if device != "cpu":
            raise DecoderError(f"device {device!r}: the decoder runs on cpu (its graphs are built per step on cpu)")
        return cls(ck.model, frequencies=ck.frequencies, volumes=ck.volumes, settings=settings, device=device,
                   meta=ck.meta, shapes=ck.shapes)

    def prior_lattice(self, sg: int, log_l0: float) -> np.ndarray:
        """Free lattice parameters of the prior cell (volume ``exp(3 log_l0)``, the group's mean shape)."""
        from discovery.symmetry import space_group

        shape = self.shapes.get(f"sg:{sg}") or self.shapes.get(f"system:{space_group(sg).lattice_system}")
        return prior_q(sg, log_l0, shape)

    def decode(self, crystal: Crystal, *, k: int = 1, seed: int = 0, use_lattice_hint: bool = True
               ) -> list[Structure]:
        """``k`` structures for the crystal-table row.

        Each has exactly ``crystal.space_group`` (spglib symprec 0.1) and ``crystal.counts`` as its
        conventional-cell composition. With ``use_lattice_hint`` the row's lattice (its free parameters in
        the crystal system, least squares) is the start of the lattice chain, which stays there while the
        lattice noise level is above ``settings.hint_sigma`` and then runs at low temperature to the end
        (see :mod:`discovery.decoder.langevin`); without it the chain starts from the learned prior: the volume
        of the per-element volume fit, the mean shape of the training cells of the group (or lattice system),
        plus noise σ_L,max, and runs on every level. ``k`` samples run as one batch; rejected ones are redrawn.
        Raises :class:`DecoderError` (``impossible``) when no Wyckoff assignment exists.
        """
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._decode(crystal, k=k, seed=seed, use_lattice_hint=use_lattice_hint)
        finally:
            torch.set_num_threads(previous)

    def _decode(self, crystal: Crystal, *, k: int, seed: int, use_lattice_hint: bool) -> list[Structure]:
        sg = int(crystal.space_group)
        counts = {el: int(n) for el, n in crystal.counts.items() if int(n) > 0}
        distribution = self._distribution(sg, counts)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        log_l0 = math.log(prior_volume(counts, self.volumes)) / 3
        hint = lattice_to_q(sg, crystal.lattice) if use_lattice_hint else None
        prior = self.prior_lattice(sg, log_l0)
        out: list[Structure | None] = [None] * k
        stats: Counter[str] = Counter()
        pending = list(range(k))
        for _ in range(self.rounds):
            if not pending:
                break
            assignments = sample_assignments(sg, counts, len(pending), rng, distribution=distribution)
            samples = langevin(self.model, sg, assignments, log_l0=log_l0, hint_q=hint, prior=prior,
                               settings=self.settings, gen=gen)
            still = []
            for slot, a, s in zip(pending, assignments, samples, strict=True):
                structure = self._accept(sg, counts, a, s)
                stats["langevin_samples"] += 1
                if structure is None:
                    still.append(slot)
                else:
                    out[slot] = structure
            pending = still
        stats["rejected"] = stats["langevin_samples"] - (k - len(pending))
        for slot in pending:
            out[slot] = self._fallback(sg, counts, rng, hint if hint is not None else prior)
            stats["fallback"] += 1
        self.last_stats = stats
        return [s for s in out if s is not None]

    def _accept(self, sg: int, counts: dict[str, int], assignment: Assignment, sample: LangevinSample
                ) -> Structure | None:
        try:
            structure = build_structure(sg, assignment, sample.q, sample.params)
        except ValueError:
            return None
        ok = check_structure(structure, sg, counts, min_distance=self.settings.min_distance)
        return structure if ok else None

    def _fallback(self, sg: int, counts: dict[str, int], rng: np.random.Generator, q: np.ndarray) -> Structure:
        """Random placement of the free parameters (no score) until a sample passes the checks; the distance
        limit is relaxed to a half, then a fifth of ``min_distance`` in the second and last thirds of the tries."""
        sites = wyckoff_sites(sg)
        for attempt in range(self.fallback_tries):
            min_distance = self.settings.min_distance * (1.0, 0.5, 0.2)[3 * attempt // self.fallback_tries]
            (assignment,) = sample_assignments(sg, counts, 1, rng, distribution=self._distribution(sg, counts))
            params = [rng.random(sites[i].dof) for _, i in assignment]
            structure = build_structure(sg, assignment, q, params)
            if check_structure(structure, sg, counts, min_distance=min_distance):
                return structure
        raise DecoderError(f"no valid structure for space group {sg} and {counts} after {self.rounds} Langevin "
                           f"rounds and {self.fallback_tries} random placements")

