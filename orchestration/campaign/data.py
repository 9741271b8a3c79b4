"""Seed data (what the first proxy is fit on) and the labels a campaign has gathered so far."""

from __future__ import annotations

import functools
import math

import numpy as np

from discovery.crystal import Crystal
from discovery.datasets import LabeledSet
from orchestration.config import CampaignConfig, ConfigError, Target
from orchestration.store import Store

# Campaign target name -> column name in the shipped datasets.
_OBELIX = {"ionic_conductivity": "log10_conductivity"}
_MP20 = ("formation_energy_per_atom", "band_gap", "e_above_hull")


def _load_target(config: CampaignConfig, target: str) -> LabeledSet:
    sd = config.seed_data
    if sd.path is not None:
        from discovery.datasets import load_crystal_csv

        try:
            data = load_crystal_csv(sd.path, target).data
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"campaign {config.name!r}: `seed_data.path` cannot be used: {exc}") from None
        return LabeledSet(data.crystals, data.targets, (target,))
    name = (sd.dataset or "").lower()
    if name == "mp20":
        from discovery.datasets import load_mp20

        train = load_mp20("train", "formation_energy_per_atom").data
        if target == "density":  # exact from the crystal table
            return LabeledSet(train.crystals, np.array([[c.density] for c in train.crystals]), (target,))
        if target in _MP20:
            data = load_mp20("train", target).data  # type: ignore[arg-type]
            return LabeledSet(data.crystals, data.targets, (target,))
    elif name == "obelix":
        from discovery.datasets import load_obelix

        data = load_obelix().data
        if target in _OBELIX:
            return LabeledSet(data.crystals, data.targets, (target,))
        if target == "density":
            return LabeledSet(data.crystals, np.array([[c.density] for c in data.crystals]), (target,))
    else:
        raise ConfigError(f"campaign {config.name!r}: `seed_data.dataset: {sd.dataset}` is not a known dataset; "
                          "use `mp20` or `obelix`, or give `seed_data.path` to a crystal table with label columns")
    raise ConfigError(f"campaign {config.name!r}: seed dataset {sd.dataset!r} has no labels for target {target!r}; "
                      "choose another dataset or give `seed_data.path` to a table with that column")


@functools.cache
def _seed_cached(config_json: str, target: str) -> LabeledSet:
    config = CampaignConfig.model_validate_json(config_json)
    data = _load_target(config, target)
    ok = np.isfinite(data.targets[:, 0])
    data = data.subset(np.flatnonzero(ok))
    limit = config.seed_data.max_rows
    if limit is None or len(data) <= limit:
        return data
    # Rows inside the search space's elements first, then the rest in a seeded random order.
    allowed = set(config.search_space.elements)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(data))
    inside = [int(i) for i in order if set(data.crystals[i].counts) <= allowed]
    outside = [int(i) for i in order if not set(data.crystals[i].counts) <= allowed]
    return data.subset(sorted((inside + outside)[:limit]))


def seed_data(config: CampaignConfig, target: str) -> LabeledSet:
    """The seed rows for ``target`` (deterministic; at most ``seed_data.max_rows``)."""
    return _seed_cached(config.model_dump_json(), target)


def seed_keys(config: CampaignConfig) -> set[tuple[str, int]]:
    """(reduced formula, space group) of every seed crystal used by the campaign (for dedupe)."""
    from discovery.selection import dedupe_key

    keys: set[tuple[str, int]] = set()
    for t in config.targets:
        keys.update(dedupe_key(c) for c in seed_data(config, t.name).crystals)
    return keys


def oracle_labels(store: Store, name: str, target: str, *, before_round: int) -> LabeledSet:
    """Oracle labels of ``target`` from rounds before ``before_round`` (status ok, finite values)."""
    results = [r for r in store.results(name) if r.round_index < before_round and r.status == "ok"]
    values = {r.candidate_id: r.targets.get(target) for r in results}
    # Sorted by id: results arrive in whatever order parallel (or resumed) oracle tasks finish, and
    # the proxy fit must not depend on it.
    ids = sorted(cid for cid, v in values.items() if v is not None and math.isfinite(v))
    crystals = store.crystals(name, ids) if ids else []
    return LabeledSet(list(crystals), np.array([[values[c] for c in ids]], dtype=float).reshape(-1, 1), (target,))


def training_set(store: Store, config: CampaignConfig, target: Target, *, before_round: int) -> LabeledSet:
    """What the proxy of ``target`` is fit on in round ``before_round``: seed rows plus oracle labels."""
    seed = seed_data(config, target.name)
    if target.source == "seed_proxy":
        return seed
    labels = oracle_labels(store, config.name, target.name, before_round=before_round)
    return seed.concat(labels) if len(labels) else seed


def label_weights(config: CampaignConfig, target: Target, data: LabeledSet) -> np.ndarray | None:
    """(n,) proxy-fit weights of :func:`training_set` rows: 1 per seed row, ``proxy.oracle_weight`` per oracle
    label (the rows after the seed data); None when every weight is 1."""
    w = config.proxy.oracle_weight
    if w == 1.0 or target.source == "seed_proxy":
        return None
    out = np.ones(len(data))
    out[len(seed_data(config, target.name)):] = w
    return out


def best_label(store: Store, config: CampaignConfig, target: Target, *, before_round: int) -> float:
    """Best value of ``target`` among the training labels (for expected improvement)."""
    y = training_set(store, config, target, before_round=before_round).targets[:, 0]
    if target.goal == "maximize":
        return float(np.max(y))
    if target.goal == "minimize":
        return float(np.min(y))
    return float(-np.min((y - (target.value or 0.0)) ** 2))


def plain(crystal: Crystal) -> Crystal:
    """The crystal without ``extra`` (what the proxy and oracle see)."""
    return Crystal(crystal.space_group, dict(crystal.counts), *crystal.lattice, id=crystal.id)
