"""The decoder choice (issue 16): pyxtal stays the default, the score decoder gives the exact space group and
composition, and a wrong choice is refused naming the field."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import spglib
from pydantic import ValidationError
from pymatgen.core import Element, Structure

from discovery.crystal import Crystal
from oracles.ase_calculator import ASESettings
from oracles.base import Candidate
from oracles.chgnet import CHGNetOracle, CHGNetSettings
from oracles.decode import (
    Decoded,
    DecodeError,
    DecoderOptions,
    DecodeSettings,
    decode_batch,
    decode_crystal,
    min_distance_ratio,
    score_decoder,
)
from oracles.sevennet import SevenNetSettings
from tests.oracles.helpers import impossible_crystal, nacl_crystal

CRYSTALS = [
    nacl_crystal(),
    Crystal(space_group=62, counts={"Li": 4, "Fe": 4, "P": 4, "O": 16}, a=10.3, b=6.0, c=4.7, alpha=90, beta=90,
            gamma=90, id="lfp"),
    Crystal(space_group=164, counts={"Li": 1, "Ti": 1, "Te": 2}, a=3.9, b=3.9, c=6.9, alpha=90, beta=90, gamma=120,
            id="litite2"),
    Crystal(space_group=38, counts={"Er": 2, "Fe": 2, "C": 4}, a=3.6, b=4.6, c=6.0, alpha=90, beta=90, gamma=90,
            id="erfec2"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One torch thread, as the oracles and `matloop decode` run the decoder: with the default two threads on a
    loaded 2-core box the Langevin sampler's many small ops ran ~10× slower (thread contention)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _symmetry(structure: Structure) -> tuple[int, dict[str, int]]:
    """spglib's space group (symprec 0.1) and the counts of its conventional standard cell."""
    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    ds = spglib.get_symmetry_dataset(cell, symprec=0.1)
    assert ds is not None
    return int(ds.number), dict(Counter(Element.from_Z(int(z)).symbol for z in ds.std_types))


def test_pyxtal_stays_the_default_everywhere() -> None:
    assert DecodeSettings().decoder == "pyxtal" and DecoderOptions().name == "pyxtal"
    assert CHGNetSettings().decode_settings() == DecodeSettings()
    assert SevenNetSettings().decode_settings() == DecodeSettings()
    assert ASESettings(calculator="ase.calculators.emt:EMT").decode_settings() == DecodeSettings()
    crystal = CRYSTALS[1]
    default = decode_crystal(crystal, seed=3)
    explicit = decode_crystal(crystal, seed=3, settings=CHGNetSettings(decoder={"name": "pyxtal"}).decode_settings())
    assert np.allclose(default.structure.frac_coords, explicit.structure.frac_coords)
    assert default.structure.lattice.abc == pytest.approx((10.3, 6.0, 4.7))  # pyxtal keeps the row's lattice


@pytest.mark.parametrize("hint", [True, False])
def test_score_decoder_gives_the_exact_space_group_and_composition(hint: bool) -> None:
    settings = CHGNetSettings(decoder={"name": "score", "use_lattice_hint": hint}).decode_settings()
    assert settings.decoder == "score" and settings.use_lattice_hint is hint
    for crystal in (CRYSTALS[0], CRYSTALS[2]) if hint else (CRYSTALS[2],):
        dec = decode_crystal(crystal, seed=11, settings=settings)
        assert _symmetry(dec.structure) == (crystal.space_group, crystal.counts), crystal.id
        assert dec.structure.composition.get_el_amt_dict() == pytest.approx(crystal.counts)
        assert min_distance_ratio(dec.structure) >= settings.min_distance_ratio
    first = decode_crystal(CRYSTALS[2], seed=11, settings=settings)
    assert np.allclose(first.structure.frac_coords, decode_crystal(CRYSTALS[2], seed=11, settings=settings)
                       .structure.frac_coords)  # deterministic for a seed


def test_score_decoder_batch_of_one_row() -> None:
    settings = DecodeSettings(decoder="score")
    crystal = CRYSTALS[2]
    decoded = decode_batch(crystal, k=4, seed=5, settings=settings)
    assert len(decoded) == 4
    for dec in decoded:
        assert isinstance(dec, Decoded), dec
        assert _symmetry(dec.structure) == (crystal.space_group, crystal.counts)
        assert min_distance_ratio(dec.structure) >= settings.min_distance_ratio
    assert len({tuple(np.round(d.structure.frac_coords.ravel(), 6)) for d in decoded if isinstance(d, Decoded)}) > 1
    impossible = decode_batch(impossible_crystal(), k=3, settings=settings)
    assert len(impossible) == 3 and all(isinstance(e, DecodeError) and e.impossible for e in impossible)


def test_score_decoder_is_loaded_once_and_flags_impossible_rows() -> None:
    settings = DecodeSettings(decoder="score")
    decode_crystal(nacl_crystal(), seed=1, settings=settings)
    loads = score_decoder.cache_info().misses
    decode_crystal(CRYSTALS[2], seed=2, settings=settings)
    assert score_decoder.cache_info().misses == loads and score_decoder(None) is score_decoder(None)
    with pytest.raises(DecodeError) as err:
        decode_crystal(impossible_crystal(), settings=settings)  # NaCl (1+1 atoms) in Fm-3m: no Wyckoff set
    assert err.value.impossible


def test_missing_checkpoint_is_a_decode_error(tmp_path: Path) -> None:
    settings = DecodeSettings(decoder="score", checkpoint=str(tmp_path / "nowhere"))
    with pytest.raises(DecodeError, match="could not be loaded") as err:
        decode_crystal(nacl_crystal(), settings=settings)
    assert not err.value.impossible


@pytest.mark.parametrize("model", [CHGNetSettings, SevenNetSettings])
def test_a_wrong_decoder_is_refused_naming_the_field(model: type[CHGNetSettings]) -> None:
    with pytest.raises(ValidationError, match=r"decoder\.name[\s\S]*'pyxtal' or 'score'"):
        model(decoder={"name": "diffusion"})
    with pytest.raises(ValidationError, match=r"decoder\.lattice_hint[\s\S]*Extra inputs are not permitted"):
        model(decoder={"name": "score", "lattice_hint": True})
    with pytest.raises(ValidationError, match=r"decoder\.checkpoint is only read by the score decoder"):
        model(decoder={"name": "pyxtal", "checkpoint": "x"})
    with pytest.raises(ValueError, match="decoder: unknown decoder 'diffusion'"):
        DecodeSettings(decoder="diffusion")  # type: ignore[arg-type]


def test_chgnet_oracle_decodes_with_the_score_decoder(mp20_dir: Path) -> None:
    with CHGNetOracle(workers=0, steps=15, mp20_dir=str(mp20_dir), decoder={"name": "score"}) as oracle:
        res = oracle.evaluate([Candidate.from_crystal(nacl_crystal())], seed=4)[0]
    assert res.status in ("ok", "unconverged"), res.message
    assert res.provenance["decoder"] == "score" and res.provenance["settings"]["decoder"]["name"] == "score"
    assert res.targets["formation_energy_per_atom"] < -1.0  # rock salt NaCl: MP −2.10 eV/atom
