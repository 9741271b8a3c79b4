"""The on-disk table cache and the batched composition path (discovery.gfn.tables, discovery.gfn.batched)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from discovery.gfn import SearchSpace
from discovery.gfn.batched import BatchComposition, PackedTables
from discovery.gfn.constraints import CompositionConstraints, CompositionRules
from discovery.gfn.tables import SHIPPED_DIR, TableFile, open_tables, rules_digest, table_paths, write_tables

RULES = CompositionRules(("Li", "Fe", "O", "Cl", "N", "C", "Se", "Si", "Cu"), max_elements=3, max_per_element=5,
                         max_atoms=15)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MATLOOP_CACHE_DIR", str(tmp_path))
    return tmp_path


def _walk_masks(cc: CompositionConstraints, sg: int, seed: int, n: int = 40) -> list[tuple[bytes, bool]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        state = cc.initial(sg)
        while True:
            mask, can_end = cc.action_mask(sg, state)
            out.append((np.packbits(mask).tobytes(), can_end))
            choices = np.argwhere(mask)
            if not len(choices) or (can_end and rng.uniform() < 0.3):
                break
            e, c = choices[rng.integers(len(choices))]
            state = cc.step(sg, state, int(e), int(c) + 1)
    return out


def test_cache_is_written_once_and_read_back(cache: Path) -> None:
    built = CompositionConstraints.cached(RULES)
    assert not built.from_cache
    user, _ = table_paths(RULES)
    assert user.exists() and not list(user.parent.glob("*.tmp"))  # written atomically, no leftovers
    loaded = CompositionConstraints.cached(RULES)
    assert loaded.from_cache
    fresh = CompositionConstraints(RULES)
    for sg in (1, 12, 62, 166, 191, 221, 225, 229):
        assert loaded.space_group_feasible(sg) == fresh.space_group_feasible(sg)
        if fresh.space_group_feasible(sg):
            assert _walk_masks(loaded, sg, seed=sg) == _walk_masks(fresh, sg, seed=sg)


def test_cache_key_changes_with_the_space() -> None:
    other = CompositionRules(RULES.elements, max_elements=3, max_per_element=4, max_atoms=15)
    assert rules_digest(other) != rules_digest(RULES)
    assert rules_digest(CompositionRules(tuple(reversed(RULES.elements)), max_elements=3, max_per_element=5,
                                         max_atoms=15)) == rules_digest(RULES)  # same space, any element order


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-space"])
def test_damaged_cache_is_rebuilt_with_a_warning(cache: Path, damage: str) -> None:
    CompositionConstraints.cached(RULES)
    user, _ = table_paths(RULES)
    if damage == "garbage":
        user.write_bytes(b"not a table file")
    elif damage == "truncated":
        data = user.read_bytes()
        user.write_bytes(data[: len(data) // 2])
    else:
        with np.load(user) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["meta"] = np.frombuffer(b'{"format": 1, "digest": "0000", "members": []}', dtype=np.uint8)
        write_tables(user, arrays, compress=False)
    with pytest.warns(UserWarning, match="table cache"):
        cc = CompositionConstraints.cached(RULES)
    assert not cc.from_cache and cc.space_group_feasible(225) == CompositionConstraints(RULES).space_group_feasible(225)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CompositionConstraints.cached(RULES).from_cache  # rewritten whole


def test_shipped_tables_serve_the_paper_space(cache: Path) -> None:
    rules = SearchSpace().rules
    _, shipped = table_paths(rules)
    assert shipped.parent == SHIPPED_DIR and shipped.exists(), "rebuild with: python -m discovery.gfn.tables --ship"
    assert shipped.stat().st_size < 20e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = open_tables(rules)
    assert TableFile(shipped, rules_digest(rules)).compressed
    user, _ = table_paths(rules)
    assert found is not None and found.path == user and not found.compressed  # a memory-mapped copy
    assert isinstance(found.arrays["dil2"], np.memmap)
    space = SearchSpace()
    assert space.constraints.from_cache and len(space.feasible_space_groups) > 200


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_masks_and_steps_match_the_one_state_api(cache: Path, seed: int) -> None:
    cc = CompositionConstraints.cached(RULES)
    packed = PackedTables(cc)
    rng = np.random.default_rng(seed)
    feasible = [sg for sg in range(1, 231) if cc.space_group_feasible(sg)]
    assert list(np.flatnonzero(packed.feasible)) == feasible
    n = 64
    sgs = rng.choice(feasible, n)
    batch = BatchComposition(packed, n)
    batch.start(np.arange(n), sgs)
    states = {i: cc.initial(int(sgs[i])) for i in range(n)}
    checked = 0
    while states:
        rows = np.array(sorted(states))
        masks, can_end = batch.masks(rows)
        stepped, ended = [], []
        for j, i in enumerate(rows.tolist()):
            mask, end = cc.action_mask(int(sgs[i]), states[i])
            assert np.array_equal(masks[j], mask) and can_end[j] == end, (i, states[i].counts)
            checked += 1
            choices = np.argwhere(mask)
            if not len(choices) or (end and rng.uniform() < 0.3):
                assert end
                ended.append(i)
                continue
            e, c = choices[rng.integers(len(choices))]
            states[i] = cc.step(int(sgs[i]), states[i], int(e), int(c) + 1)
            stepped.append((i, int(e), int(c) + 1))
        batch.finish(np.array(ended, dtype=np.int64))
        for i in ended:
            del states[i]
        if stepped:
            r, e, c = (np.array(x) for x in zip(*stepped, strict=True))
            batch.step(r, e, c)
    assert checked > 2 * n


def test_batched_rollouts_sample_valid_crystals_and_replay_them(cache: Path) -> None:
    from discovery.chemistry import is_smact_valid
    from discovery.gfn import CrystalGFN, PolicyConfig
    from discovery.gfn.replay import forced_rollout
    from discovery.symmetry import is_wyckoff_compatible

    space = SearchSpace(elements=RULES.elements, max_elements=3, max_atoms_per_element=5, max_atoms=15)
    gfn = CrystalGFN(space, seed=0, policy=PolicyConfig(hidden=32, layers=1))
    assert gfn.env.packed is not None  # budget-free, min_elements 2: the batched path
    crystals = gfn.sample(200, seed=1)
    for c in crystals:
        assert is_smact_valid(c.counts) and is_wyckoff_compatible(c.space_group, list(c.counts.values()))
        assert sum(c.counts.values()) <= 15 and len(c.counts) <= 3
    ro = forced_rollout(gfn.env, crystals)
    assert [(c.space_group, c.counts) for c in ro.crystals] == [(c.space_group, c.counts) for c in crystals]
