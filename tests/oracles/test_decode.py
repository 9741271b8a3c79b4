"""Decoding crystal-table rows to 3-D structures with pyxtal."""

from __future__ import annotations

import numpy as np
import pytest

from oracles.decode import DecodeError, DecodeSettings, decode_crystal, min_distance_ratio
from tests.oracles.helpers import impossible_crystal, nacl_crystal


def test_decodes_in_the_sampled_lattice_with_sane_distances() -> None:
    dec = decode_crystal(nacl_crystal(), seed=1)
    s = dec.structure
    assert s.composition.reduced_formula == "NaCl" and len(s) == 8
    assert s.lattice.abc == pytest.approx((5.69, 5.69, 5.69))
    assert dec.volume_scale == 1.0 and min_distance_ratio(s) >= 0.6


def test_decoding_is_deterministic_for_a_seed() -> None:
    from discovery.crystal import Crystal

    c = Crystal(space_group=62, counts={"Li": 4, "Fe": 4, "P": 4, "O": 16}, a=10.3, b=6.0, c=4.7,
                alpha=90, beta=90, gamma=90, id="lfp")
    a, b = decode_crystal(c, seed=7), decode_crystal(c, seed=7)
    assert np.allclose(a.structure.frac_coords, b.structure.frac_coords)
    other = decode_crystal(c, seed=8)
    assert not np.allclose(a.structure.frac_coords, other.structure.frac_coords)


def test_impossible_composition_space_group_pair_is_flagged_impossible() -> None:
    with pytest.raises(DecodeError, match="not compatible") as err:
        decode_crystal(impossible_crystal())
    assert err.value.impossible


def test_too_small_cell_is_rescaled_or_rejected() -> None:
    tiny = nacl_crystal(a=3.0)  # 1.5 Å Na-Cl bonds
    dec = decode_crystal(tiny, seed=0)
    assert dec.volume_scale > 1.0 and min_distance_ratio(dec.structure) >= 0.6
    with pytest.raises(DecodeError, match="too close") as err:
        decode_crystal(tiny, seed=0, settings=DecodeSettings(rescale_volume=False, attempts=2))
    assert not err.value.impossible


def test_decoding_stops_at_its_time_limit() -> None:
    import time

    from discovery.crystal import Crystal

    c = Crystal(space_group=62, counts={"Li": 4, "Fe": 4, "P": 4, "O": 16}, a=10.3, b=6.0, c=4.7,
                alpha=90, beta=90, gamma=90, id="lfp")
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match=r"within 0\.001 s") as info:
        decode_crystal(c, seed=7, settings=DecodeSettings(timeout_s=0.001))
    assert not info.value.impossible and time.monotonic() - t0 < 5
    assert decode_crystal(c, seed=7).structure.composition.reduced_formula == "LiFePO4"  # no stray limit left
