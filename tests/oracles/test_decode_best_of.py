"""Decoding choices for generated rows: best-of-k by CHGNet single-point energy, the cell at the volume model's V₀."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from discovery.crystal import Crystal
from discovery.proxy.lattice import default_lattice_prior
from oracles.chgnet import CHGNetSettings
from oracles.decode import (
    Decoded,
    DecodeSettings,
    at_model_volume,
    decode_batch,
    decode_crystal,
    single_point_energies,
)

# Spinel-like MgAl2O4 row (Fd-3m, 56 atoms conventional would be slow): a small trigonal Li-Ti-O row instead.
LITIO = Crystal(space_group=164, counts={"Li": 2, "Ti": 1, "O": 3}, a=3.0, b=3.0, c=5.1, alpha=90, beta=90,
                gamma=120, id="li2tio3")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_defaults_leave_decoding_unchanged() -> None:
    settings = DecodeSettings()
    assert settings.best_of == 1 and settings.volume == "row"
    assert CHGNetSettings().decode_settings() == settings
    a = decode_crystal(LITIO, seed=5)
    b = decode_crystal(LITIO, seed=5, settings=DecodeSettings(best_of=1, volume="row"))
    assert np.allclose(a.structure.frac_coords, b.structure.frac_coords)
    assert a.energy_per_atom is None and a.candidates == 1


def test_best_of_keeps_the_lowest_chgnet_energy_per_atom() -> None:
    k = 4
    batch = decode_batch(LITIO, k=k, seed=11)
    good = [d for d in batch if isinstance(d, Decoded)]
    energies = single_point_energies([d.structure for d in good])
    assert len(set(np.round(energies, 4))) > 1  # the placements differ, so the choice matters
    best = decode_crystal(LITIO, seed=11, settings=DecodeSettings(best_of=k))
    assert best.candidates == len(good)
    assert best.energy_per_atom == pytest.approx(min(energies), abs=1e-4)
    assert np.allclose(best.structure.frac_coords, good[best.chosen].structure.frac_coords)
    again = decode_crystal(LITIO, seed=11, settings=DecodeSettings(best_of=k))
    assert np.allclose(again.structure.frac_coords, best.structure.frac_coords)  # deterministic for a seed


def test_model_volume_rescales_the_row_to_v0() -> None:
    blown = Crystal(164, dict(LITIO.counts), 3.0 * 1.5, 3.0 * 1.5, 5.1 * 1.5, 90, 90, 120, id="blown")
    v0 = math.exp(float(default_lattice_prior().volume.predict([blown])[0][0]))
    scaled = at_model_volume(blown)
    assert scaled.volume / scaled.n_atoms == pytest.approx(v0, rel=1e-6)
    assert scaled.lattice[3:] == blown.lattice[3:] and scaled.a / scaled.c == pytest.approx(blown.a / blown.c)
    dec = decode_crystal(blown, seed=3, settings=DecodeSettings(volume="model"))
    per_atom = dec.structure.volume / len(dec.structure)
    assert per_atom == pytest.approx(v0 * dec.volume_scale, rel=1e-3)  # V₀, unless enlarged to pass the distances
    assert decode_crystal(blown, seed=3).structure.volume / len(dec.structure) == pytest.approx(
        blown.volume / blown.n_atoms, rel=1e-3)


def test_oracle_settings_carry_the_choices_and_refuse_nonsense() -> None:
    s = CHGNetSettings(decode_best_of=8, decode_volume="model").decode_settings()
    assert s.best_of == 8 and s.volume == "model"
    with pytest.raises(ValidationError, match="decode_best_of"):
        CHGNetSettings(decode_best_of=0)
    with pytest.raises(ValidationError, match="decode_volume"):
        CHGNetSettings(decode_volume="huge")
    with pytest.raises(ValueError, match="best_of"):
        DecodeSettings(best_of=0)


def test_rattle_moves_every_atom_by_its_distance_and_breaks_the_symmetry() -> None:
    """decode_rattle: each atom moves by exactly δ Å (deterministic for a seed); composition and cell are kept;
    the decoded structure's special positions are no longer special (the space group drops)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    plain = decode_crystal(LITIO, seed=3)
    settings = DecodeSettings(rattle=0.1)
    moved = decode_crystal(LITIO, seed=3, settings=settings)
    again = decode_crystal(LITIO, seed=3, settings=settings)
    other = decode_crystal(LITIO, seed=4, settings=settings)
    assert moved.structure.composition == plain.structure.composition
    assert np.allclose(moved.structure.lattice.matrix, plain.structure.lattice.matrix)
    shift = np.linalg.norm(moved.structure.cart_coords - plain.structure.cart_coords, axis=1)
    assert np.allclose(shift, 0.1, atol=1e-6)
    assert np.allclose(moved.structure.cart_coords, again.structure.cart_coords)
    assert not np.allclose(moved.structure.cart_coords - plain.structure.cart_coords,
                           other.structure.cart_coords - decode_crystal(LITIO, seed=4).structure.cart_coords)
    assert moved.min_distance_ratio != plain.min_distance_ratio
    sg = SpacegroupAnalyzer(moved.structure, symprec=0.01).get_space_group_number()
    assert sg < SpacegroupAnalyzer(plain.structure, symprec=0.01).get_space_group_number()
    assert CHGNetSettings(decode_rattle=0.1).decode_settings().rattle == 0.1
    assert CHGNetSettings().decode_settings().rattle == 0.0
    with pytest.raises(ValidationError, match="decode_rattle"):
        CHGNetSettings(decode_rattle=-0.1)
    with pytest.raises(ValueError, match="rattle"):
        DecodeSettings(rattle=2.0)
