"""Decoding crystal-table rows into 3-D structures: pyxtal Wyckoff placement, or the score-based decoder.

A crystal-table row fixes the space group, the conventional-cell composition and the lattice
(a, b, c in Å, angles in degrees) but no atomic coordinates. :func:`decode_crystal` has two decoders
(``DecodeSettings.decoder``):

* ``"pyxtal"`` (default): places the atoms on Wyckoff positions with ``pyxtal.from_random`` *inside the
  given lattice*, retries with different seeds, and rejects structures whose atoms are too close. pyxtal
  does not reject unphysical cells when the lattice is given (NaCl with a = 3 Å gives 1.5 Å bonds), hence
  the distance check.
* ``"score"``: :class:`discovery.decoder.ScoreDecoder` (annealed Langevin dynamics on the asymmetric-unit
  positions and the free lattice parameters, exact space group and composition). With
  ``use_lattice_hint=True`` the row's lattice is the start of the lattice chain, which the decoder refines
  (the decoded cell may differ from the row's); with ``False`` the lattice comes from the decoder's learned
  prior alone. The decoder is loaded once per process and checkpoint (:func:`score_decoder`). The same
  distance check and rescaling as for pyxtal apply to its samples.

Three more choices apply to either decoder (all off by default):

* ``volume="model"``: the row's lattice is first rescaled isotropically to the equilibrium volume per atom
  V₀ that the lattice prior's volume model predicts for the composition
  (:class:`discovery.proxy.lattice.VolumeModel`, fitted on MP-20 train); angles and axis ratios are kept.
* ``best_of=k``: k complete decodings (seeds ``seed … seed + k − 1``, as :func:`decode_batch`), of which
  the one with the lowest CHGNet single-point energy per atom is kept (AIRSS-style selection of random
  placements; CHGNet's shipped weights, one batched call, a few seconds for k = 8 rows of 40 atoms).
  The kept structure's energy and its index are in :class:`Decoded`.
* ``rattle=δ`` (Å): after decoding, every atom is moved by δ in a random direction (seeded). Random
  Wyckoff placement puts atoms on special positions whose forces cancel by symmetry, so a relaxation that
  keeps the symmetry can stop on a saddle point far above the minimum; a small displacement breaks the
  symmetry, as random structure searching does (Pickard and Needs, J. Phys.: Condens. Matter 23, 053201,
  2011). On 64-sample draws of the small-cell FE Crystal-GFN, δ = 0.05 Å took the median |proxy − CHGNet|
  formation energy from 0.43–0.84 to 0.24–0.26 eV/atom and the median E_hull from 0.39–0.72 to 0.16–0.17
  (more steps per relaxation; docs/results/crystal-gfn.md).

Distance criterion: for every pair of atoms (periodic images included), ``d_ij ≥ ratio · (r_i + r_j)``
with ASE's covalent radii ``r`` and ``ratio = DecodeSettings.min_distance_ratio``. With
``rescale_volume=True`` a too-small cell is enlarged isotropically (fractional coordinates fixed, so
all distances scale by the same factor) just enough to pass; the factor is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
from ase.data import atomic_numbers, covalent_radii
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymatgen.core import Lattice, Structure

from discovery.crystal import Crystal
from oracles.deadline import TimeLimitExceeded, time_limit


class DecodeError(ValueError):
    """The crystal cannot be decoded; ``kind`` says whether it is impossible or just unlucky."""

    def __init__(self, message: str, *, impossible: bool) -> None:
        super().__init__(message)
        self.impossible = impossible


DecoderName = Literal["pyxtal", "score"]
DECODERS: tuple[str, ...] = get_args(DecoderName)
VolumeChoice = Literal["row", "model"]


class DecoderOptions(BaseModel):
    """The ``decoder`` setting of an oracle: which decoder turns crystal-table rows into structures.

    Example (campaign YAML, ``oracle.settings``)::

        decoder: {name: score, use_lattice_hint: true}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: DecoderName = Field(default="pyxtal", description=(
        "'pyxtal': random Wyckoff placement in the row's lattice; 'score': the score-based decoder (discovery.decoder)"))
    checkpoint: str | None = Field(default=None, description="score decoder checkpoint (default: the shipped one)")
    use_lattice_hint: bool = Field(default=True, description=(
        "score decoder: start the lattice chain from the row's lattice (refined) instead of the learned prior"))

    @model_validator(mode="after")
    def _checkpoint_only_for_score(self) -> DecoderOptions:
        if self.name == "pyxtal" and self.checkpoint is not None:
            raise ValueError("decoder.checkpoint is only read by the score decoder; remove it or set `name: score`")
        return self

    def settings(self, **options: Any) -> DecodeSettings:
        """:class:`DecodeSettings` with this decoder and the other ``options`` (attempts, distances...)."""
        return DecodeSettings(decoder=self.name, checkpoint=self.checkpoint, use_lattice_hint=self.use_lattice_hint,
                              **options)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeSettings:
    """Options for :func:`decode_crystal`.

    decoder: ``"pyxtal"`` or ``"score"`` (see the module docs).
    checkpoint: score decoder only: checkpoint path (``None``: the shipped checkpoint).
    use_lattice_hint: score decoder only: start from (and refine) the row's lattice; else the learned prior.
    attempts: placements tried (different seeds) before giving up.
    timeout_s: wall-clock limit for all attempts together, s (pyxtal can search for many minutes in a
        cell too small for its atoms).
    min_distance_ratio: minimum ``d_ij / (r_cov_i + r_cov_j)`` accepted (dimensionless).
    rescale_volume: enlarge a too-small cell isotropically instead of rejecting it.
    max_volume_scale: largest volume factor that rescaling may apply (dimensionless).
    volume: ``"row"``: the row's cell volume; ``"model"``: the row's cell rescaled to the volume model's V₀.
    best_of: decodings tried; the one with the lowest CHGNet single-point energy per atom is kept (1: the first).
    rattle: Å each atom of the decoded structure is moved in a random direction (0: none; see the module docs).
    """

    decoder: DecoderName = "pyxtal"
    checkpoint: str | None = None
    use_lattice_hint: bool = True
    attempts: int = 8
    timeout_s: float = 60.0
    min_distance_ratio: float = 0.6
    rescale_volume: bool = True
    max_volume_scale: float = 8.0
    volume: VolumeChoice = "row"
    best_of: int = 1
    rattle: float = 0.0

    def __post_init__(self) -> None:
        if self.best_of < 1:
            raise ValueError(f"best_of: must be at least 1 (got {self.best_of})")
        if not 0.0 <= self.rattle <= 0.5:
            raise ValueError(f"rattle: must be in [0, 0.5] Å (got {self.rattle})")
        if self.volume not in get_args(VolumeChoice):
            raise ValueError(f"volume: {self.volume!r} is not one of {', '.join(get_args(VolumeChoice))}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder: unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        if self.decoder == "pyxtal" and self.checkpoint is not None:
            raise ValueError("checkpoint: only the score decoder reads a checkpoint; remove it or use decoder='score'")


class DecodingFields(BaseModel):
    """The decoding settings of an oracle that relaxes crystal-table rows (a base of its settings model)."""

    decode_attempts: int = Field(8, ge=1)
    min_distance_ratio: float = Field(0.6, gt=0, description="decoding: min d_ij/(r_cov_i + r_cov_j)")
    rescale_volume: bool = True
    decoder: DecoderOptions = Field(DecoderOptions(),
                                    description="how crystal-table rows are decoded: {name: pyxtal|score, checkpoint, "
                                                "use_lattice_hint} (see oracles.decode)")
    decode_best_of: int = Field(1, ge=1, description=(
        "decoding: k complete decodings per row, the one with the lowest CHGNet single-point energy per atom is "
        "relaxed (AIRSS-style selection; 1: the first decoding, no energy call)"))
    decode_rattle: float = Field(0.0, ge=0, le=0.5, description=(
        "decoding: Å each decoded atom is moved in a random direction, to break the symmetry of random Wyckoff "
        "placements before relaxing (0: off; the shipped configs that use it: 0.05)"))
    decode_volume: VolumeChoice = Field("row", description=(
        "decoding: 'row': the row's cell volume; 'model': the row's cell rescaled isotropically to the lattice "
        "prior's equilibrium volume per atom for the composition (discovery.proxy.lattice, fitted on MP-20)"))

    def decode_settings(self) -> DecodeSettings:
        return self.decoder.settings(attempts=self.decode_attempts, min_distance_ratio=self.min_distance_ratio,
                                     rescale_volume=self.rescale_volume, best_of=self.decode_best_of,
                                     volume=self.decode_volume, rattle=self.decode_rattle)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded structure; ``volume_scale`` > 1 when the cell was enlarged, ``attempt`` is 0-based.

    With ``best_of`` > 1: ``chosen`` is the 0-based index of the kept decoding among the ``candidates`` that
    decoded and ``energy_per_atom`` its CHGNet single-point energy (eV/atom)."""

    structure: Structure
    attempt: int
    volume_scale: float
    min_distance_ratio: float
    chosen: int = 0
    candidates: int = 1
    energy_per_atom: float | None = None


@functools.cache
def _lattice_type(space_group: int) -> str:
    from pyxtal.symmetry import Group

    return str(Group(space_group).lattice_type)


def min_distance_ratio(structure: Structure) -> float:
    """Smallest ``d_ij / (r_cov_i + r_cov_j)`` over all pairs and periodic images (``inf`` if none < 4 Å)."""
    radii = np.array([covalent_radii[atomic_numbers[site.specie.symbol]] for site in structure])
    cutoff = max(4.0, 2.0 * float(radii.max()))
    centers, neighbors, _, dists = structure.get_neighbor_list(cutoff)
    if len(dists) == 0:
        return math.inf
    ratios = dists / (radii[centers] + radii[neighbors])
    return float(ratios.min())


def _place(crystal: Crystal, rng: np.random.Generator) -> Structure:
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice as PxLattice

    # The crystal's own species order: for generated crystals the canonical (electronegativity) order, the
    # one in which discovery.symmetry_decode guarantees that pyxtal's sequential placement succeeds.
    species = list(crystal.counts)
    lattice = PxLattice.from_para(*crystal.lattice, ltype=_lattice_type(crystal.space_group), random_state=rng)
    xtal = pyxtal()
    xtal.from_random(3, crystal.space_group, species, [crystal.counts[s] for s in species],
                     lattice=lattice, random_state=rng)
    if not xtal.valid:
        raise RuntimeError("pyxtal could not place the atoms in this lattice")
    return xtal.to_pymatgen()


@functools.lru_cache(maxsize=4)
def score_decoder(checkpoint: str | None = None) -> Any:
    """The :class:`discovery.decoder.ScoreDecoder` of ``checkpoint`` (``None``: shipped), loaded once per process
    (on the CPU) and reused by every candidate."""
    from discovery.decoder import ScoreDecoder

    return ScoreDecoder.load(path=checkpoint, device="cpu")


def _check_inputs(crystal: Crystal) -> None:
    if not math.isfinite(crystal.volume):
        raise DecodeError(f"lattice angles {crystal.lattice[3:]} do not form a valid cell", impossible=True)
    unknown = [el for el in crystal.counts if el not in atomic_numbers]
    if unknown:
        raise DecodeError(f"unknown element(s) {unknown}", impossible=True)


def decode_crystal(crystal: Crystal, *, seed: int = 0, settings: DecodeSettings | None = None) -> Decoded:
    """Decode one crystal into a 3-D structure with ``settings.decoder``; raises :class:`DecodeError` with the reason.

    Deterministic for a given ``seed``. ``impossible=True`` on the error means no seed can help
    (composition incompatible with the space group's Wyckoff positions, unknown element, bad cell).
    """
    settings = settings or DecodeSettings()
    _check_inputs(crystal)
    if settings.volume == "model":
        crystal = at_model_volume(crystal)
    if settings.best_of > 1:
        decoded = _best_of(crystal, seed=seed, settings=settings)
    elif settings.decoder == "score":
        decoded = _decode_score(crystal, seed=seed, settings=settings)
    else:
        decoded = _decode_pyxtal(crystal, seed=seed, settings=settings)
    return rattled(decoded, settings.rattle, seed=seed) if settings.rattle > 0 else decoded


def rattled(decoded: Decoded, distance: float, *, seed: int) -> Decoded:
    """``decoded`` with every atom moved by ``distance`` Å in a random direction (deterministic for ``seed``)."""
    rng = np.random.default_rng([seed, 7919])
    n = len(decoded.structure)
    step = rng.normal(size=(n, 3))
    step *= distance / np.linalg.norm(step, axis=1, keepdims=True)
    s = decoded.structure
    moved = Structure(s.lattice, s.species, s.cart_coords + step, coords_are_cartesian=True,
                      site_properties=s.site_properties or None)
    return replace(decoded, structure=moved, min_distance_ratio=min_distance_ratio(moved))


def at_model_volume(crystal: Crystal) -> Crystal:
    """``crystal`` with its lattice lengths scaled by one factor so that its volume per atom is the volume model's
    equilibrium V₀ for its composition (Å³/atom; angles and axis ratios kept)."""
    from discovery.proxy.lattice import default_lattice_prior

    ln_v0 = float(default_lattice_prior().volume.predict([crystal])[0][0])
    scale = (math.exp(ln_v0) / (crystal.volume / crystal.n_atoms)) ** (1.0 / 3.0)
    a, b, c = crystal.lattice[:3]
    return dataclasses.replace(crystal, a=a * scale, b=b * scale, c=c * scale)


def single_point_energies(structures: list[Structure]) -> list[float]:
    """CHGNet single-point energies per atom (eV/atom) of ``structures`` (the shipped weights, one batched call)."""
    from oracles.relax import energies_per_atom, load_chgnet_model

    return energies_per_atom(structures, model=load_chgnet_model("cpu"), batch_size=len(structures))


def _best_of(crystal: Crystal, *, seed: int, settings: DecodeSettings) -> Decoded:
    """``settings.best_of`` decodings (:func:`decode_batch`); the one with the lowest CHGNet energy per atom."""
    one = replace(settings, best_of=1, volume="row", rattle=0.0)  # the caller set the volume and rattles the kept one
    decodings = decode_batch(crystal, k=settings.best_of, seed=seed, settings=one)
    good = [d for d in decodings if isinstance(d, Decoded)]
    if not good:
        errors = [d for d in decodings if isinstance(d, DecodeError)]
        raise DecodeError(f"none of {settings.best_of} decodings succeeded: {errors[0]}",
                          impossible=all(e.impossible for e in errors))
    energies = single_point_energies([d.structure for d in good])
    finite = [(e, j) for j, e in enumerate(energies) if math.isfinite(e)]
    e, j = min(finite) if finite else (math.nan, 0)
    best = good[j]
    return Decoded(best.structure, best.attempt, best.volume_scale, best.min_distance_ratio, chosen=j,
                   candidates=len(good), energy_per_atom=e if finite else None)


def decode_batch(crystal: Crystal, *, k: int, seed: int = 0, settings: DecodeSettings | None = None
                 ) -> list[Decoded | DecodeError]:
    """``k`` decodings of one crystal (each a :class:`Decoded` or the :class:`DecodeError` of that one).

    pyxtal: ``decode_crystal(crystal, seed=seed + j)`` for j < k. Score decoder: one batched call of the
    decoder for all k (one Langevin chain per sample, run together: several times faster per sample than k
    calls), each sample then through the same distance check; a sample that fails it is replaced by
    ``decode_crystal(crystal, seed=seed + j)`` (retries, then rescaling). Deterministic for ``seed``."""
    settings = settings or DecodeSettings()
    if settings.volume == "model" and math.isfinite(crystal.volume):
        crystal, settings = at_model_volume(crystal), replace(settings, volume="row")
    if settings.decoder != "score" or k == 1 or settings.best_of > 1:
        return [_attempt(crystal, seed + j, settings) for j in range(k)]
    from discovery.decoder import DecoderError

    try:
        _check_inputs(crystal)
        decoder = score_decoder(settings.checkpoint)
        with time_limit(settings.timeout_s * k):
            structures = decoder.decode(crystal, k=k, seed=_score_seed(seed, -1),
                                        use_lattice_hint=settings.use_lattice_hint)
    except DecodeError as exc:
        return [exc] * k
    except DecoderError as exc:  # it already retried (new assignments and chains, then random placements)
        return [DecodeError(f"score decoder: {exc}", impossible=exc.impossible)] * k
    except (OSError, ValueError, TimeLimitExceeded):
        structures = []  # each sample on its own below, which reports the reason
    out: list[Decoded | DecodeError] = []
    for j in range(k):
        structure = structures[j] if j < len(structures) else None
        ratio = min_distance_ratio(structure) if structure is not None else 0.0
        out.append(Decoded(structure, 0, 1.0, ratio) if structure is not None and ratio >= settings.min_distance_ratio
                   else _attempt(crystal, seed + j, settings))
    return out


def _attempt(crystal: Crystal, seed: int, settings: DecodeSettings) -> Decoded | DecodeError:
    try:
        return decode_crystal(crystal, seed=seed, settings=settings)
    except DecodeError as exc:
        return exc


def _decode_pyxtal(crystal: Crystal, *, seed: int, settings: DecodeSettings) -> Decoded:
    from pyxtal.msg import Comp_CompatibilityError

    last_problem = "no attempt made"
    best: tuple[float, int, Structure] | None = None
    deadline = time.monotonic() + settings.timeout_s
    for attempt in range(settings.attempts):
        rng = np.random.default_rng([seed, attempt])
        try:
            with time_limit(max(deadline - time.monotonic(), 0.0)):
                structure = _place(crystal, rng)
        except TimeLimitExceeded:
            raise DecodeError(f"pyxtal found no acceptable placement within {settings.timeout_s:g} s "
                              f"({attempt + 1} of {settings.attempts} attempts started; last: {last_problem})",
                              impossible=False) from None
        except Comp_CompatibilityError:
            raise DecodeError(
                f"composition {crystal.formula} is not compatible with the Wyckoff positions of "
                f"space group {crystal.space_group}", impossible=True) from None
        except Exception as exc:  # pyxtal raises many kinds for unlucky placements
            last_problem = f"pyxtal failed ({type(exc).__name__}: {exc})"
            continue
        ratio = min_distance_ratio(structure)
        if ratio >= settings.min_distance_ratio:
            return Decoded(structure, attempt, 1.0, ratio)
        last_problem = (f"atoms too close (min d/(r_i+r_j) = {ratio:.2f} < {settings.min_distance_ratio})")
        if best is None or ratio > best[0]:
            best = (ratio, attempt, structure)
    return _rescaled_or_fail(best, last_problem, settings)


def _score_seed(seed: int, attempt: int) -> int:
    """The score decoder's integer seed of one attempt (a pure function of ``seed`` and ``attempt``)."""
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def _decode_score(crystal: Crystal, *, seed: int, settings: DecodeSettings) -> Decoded:
    from discovery.decoder import DecoderError

    try:
        decoder = score_decoder(settings.checkpoint)
    except (OSError, ValueError) as exc:
        raise DecodeError(f"the score decoder could not be loaded from {settings.checkpoint or 'the shipped checkpoint'}"
                          f": {exc}", impossible=False) from None
    last_problem = "no attempt made"
    best: tuple[float, int, Structure] | None = None
    deadline = time.monotonic() + settings.timeout_s
    for attempt in range(settings.attempts):
        try:
            with time_limit(max(deadline - time.monotonic(), 0.0)):
                structure = decoder.decode(crystal, k=1, seed=_score_seed(seed, attempt),
                                           use_lattice_hint=settings.use_lattice_hint)[0]
        except TimeLimitExceeded:
            raise DecodeError(f"the score decoder gave no acceptable structure within {settings.timeout_s:g} s "
                              f"({attempt + 1} of {settings.attempts} attempts started; last: {last_problem})",
                              impossible=False) from None
        except DecoderError as exc:  # it already retried (new assignments and chains, then random placements)
            raise DecodeError(f"score decoder: {exc}", impossible=exc.impossible) from None
        ratio = min_distance_ratio(structure)
        if ratio >= settings.min_distance_ratio:
            return Decoded(structure, attempt, 1.0, ratio)
        last_problem = f"atoms too close (min d/(r_i+r_j) = {ratio:.2f} < {settings.min_distance_ratio})"
        if best is None or ratio > best[0]:
            best = (ratio, attempt, structure)
    return _rescaled_or_fail(best, last_problem, settings)


def _rescaled_or_fail(best: tuple[float, int, Structure] | None, last_problem: str,
                      settings: DecodeSettings) -> Decoded:
    """The closest-packed attempt enlarged isotropically just enough to pass, or :class:`DecodeError`."""
    if settings.rescale_volume and best is not None and best[0] > 0:
        ratio, attempt, structure = best
        length_scale = settings.min_distance_ratio / ratio * 1.001
        if length_scale**3 <= settings.max_volume_scale:
            lat = structure.lattice
            a, b, c = (x * length_scale for x in lat.abc)
            scaled = Structure(Lattice.from_parameters(a, b, c, *lat.angles), structure.species, structure.frac_coords)
            return Decoded(scaled, attempt, length_scale**3, min_distance_ratio(scaled))
        last_problem += f"; the cell would need a {length_scale**3:.1f}× volume (limit {settings.max_volume_scale}×)"
    raise DecodeError(f"no acceptable placement in {settings.attempts} attempts: {last_problem}", impossible=False)
