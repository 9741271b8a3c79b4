"""Campaign config: every shipped config loads; bad input gives one paragraph naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestration.config import (
    LATTICE_SYSTEM_GROUPS,
    CampaignConfig,
    ConfigError,
    build_search_space,
    config_hash,
    load_config,
    parse_config,
)

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _minimal(**over: object) -> dict:
    data: dict = {
        "name": "t",
        "targets": [{"name": "formation_energy_per_atom"}],
        "search_space": {"elements": ["Na", "Cl"]},
        "seed_data": {"dataset": "mp20"},
        "candidates_per_round": 10,
        "batch_size": 2,
        "oracle": {"name": "density"},
        "rounds": 2,
    }
    data.update(over)
    return data


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="c.yaml")
    msg = str(info.value)
    assert "\n" not in msg, "the message is one paragraph"
    return msg


def test_shipped_configs_load() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"demo", "formation_energy_paper", "band_gap", "li_conductor", "density"} <= names
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.batch_size <= cfg.candidates_per_round
    demo = load_config(CONFIGS[[p.stem for p in CONFIGS].index("demo")])
    assert demo.rounds == 3 and demo.oracle.name == "chgnet" and demo.search_space.max_atoms <= 12
    paper = load_config(CONFIGS[[p.stem for p in CONFIGS].index("formation_energy_paper")])
    assert len(paper.search_space.elements) == 22 and paper.search_space.max_atoms == 80
    band = load_config(CONFIGS[[p.stem for p in CONFIGS].index("band_gap")])
    assert band.targets[0].value == 1.34


def test_defaults_and_resolved_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MATLOOP_STORE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_config(_minimal(campaign_dir=str(tmp_path / "c")))
    assert cfg.resolved_store_url() == f"sqlite:///{tmp_path / 'c' / 'store.db'}"
    assert cfg.resolved_tracking_uri().startswith("sqlite:///") and cfg.experiment_name() == "matloop/t"
    assert cfg.success.metric == "e_above_hull" and cfg.success.at_most == 0.1
    assert cfg.success.is_hit({"e_above_hull": 0.05}, status="ok")
    assert not cfg.success.is_hit({"e_above_hull": 0.2}, status="ok")
    assert not cfg.success.is_hit({"e_above_hull": float("nan")}, status="ok") and not cfg.success.is_hit({}, status="ok")
    for status in ("unconverged", "failed", "invalid", "timeout"):  # only an ok result is a hit
        assert not cfg.success.is_hit({"e_above_hull": -1.0}, status=status)
    assert cfg.sun.zero_dimensional == "exclude"
    assert cfg.runner.kind == "local"
    monkeypatch.setenv("MATLOOP_STORE_URL", "postgresql://u@h/db")
    assert cfg.resolved_store_url() == "postgresql://u@h/db"
    assert parse_config(_minimal(store_url="sqlite:///x.db")).resolved_store_url() == "sqlite:///x.db"


def test_hash_ignores_operational_fields_only() -> None:
    a = parse_config(_minimal())
    b = parse_config(_minimal(store_url="postgresql://u@127.0.0.1/x", runner={"kind": "dask"}))
    c = parse_config(_minimal(seed=1))
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert "checkpoint" not in a.science()["generator"]  # configs without one keep their earlier hash
    d = parse_config(_minimal(generator={"checkpoint": "discovery/data/checkpoints/crystal-gfn-fe"}))
    assert config_hash(d) != config_hash(a)
    assert "relative_to_hull" not in a.science()["acquisition"]
    e = parse_config(_minimal(acquisition={"relative_to_hull": "mp20+matbench"}))
    assert config_hash(e) != config_hash(a)
    assert "sun" not in a.science()  # the S.U.N. section at its defaults leaves earlier hashes alone
    assert config_hash(parse_config(_minimal(sun={"zero_dimensional": "exclude"}))) == config_hash(a)
    assert config_hash(parse_config(_minimal(sun={"zero_dimensional": "include"}))) != config_hash(a)


def test_space_groups_accept_lattice_system_names() -> None:
    cfg = parse_config(_minimal(search_space={"elements": ["Na", "Cl"], "space_groups": ["cubic", 2, 225]}))
    groups = cfg.search_space.space_group_numbers()
    assert groups is not None and set(LATTICE_SYSTEM_GROUPS["cubic"]) | {2} == set(groups)
    assert sum(len(v) for v in LATTICE_SYSTEM_GROUPS.values()) == 230


def test_dask_runner_variants() -> None:
    cfg = parse_config(_minimal(runner={"kind": "dask", "cluster": {"type": "slurm", "cores": 4, "queue": "cpu"}}))
    assert cfg.runner.kind == "dask" and cfg.runner.cluster.type == "slurm"
    msg = _error(_minimal(runner={"kind": "dask", "cluster": {"type": "slurm", "cpus": 4}}))
    assert "`runner.cluster.cpus` is not a known setting" in msg and "cores" in msg


def test_unknown_key_names_path_and_suggests() -> None:
    msg = _error(_minimal(acquisition={"kind": "ucb", "kapa": 2}))
    assert "c.yaml" in msg and "`acquisition.kapa`" in msg and "did you mean `kappa`" in msg
    assert "`colour`" in _error(_minimal(colour="red"))


def test_unknown_element() -> None:
    msg = _error(_minimal(search_space={"elements": ["Na", "Xx"]}))
    assert "`search_space.elements`" in msg and "'Xx' is not a chemical element" in msg


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"batch_size": 20}, "batch_size (20) exceeds candidates_per_round"),
        ({"search_space": {"elements": ["Na"], "min_elements": 2}}, "min_elements (2) exceeds"),
        ({"search_space": {"elements": ["Na", "Cl"], "space_groups": [231]}}, "outside 1–230"),
        ({"search_space": {"elements": ["Na", "Cl"], "space_groups": ["cubik"]}}, "search_space.space_groups[0]"),
        ({"search_space": {"elements": ["Na", "Cl"], "length_range": [5, 2]}}, "length_range"),
        ({"targets": [{"name": "band_gap", "goal": "target"}]}, "add e.g. `value: 1.34`"),
        ({"acquisition": {"kind": "thompson"}}, "`acquisition.kind`"),
        ({"seed_data": {}}, "exactly one of `dataset`"),
        ({"name": "bad name/x"}, "`name`"),
        ({"rounds": 0}, "`rounds`"),
        ({"store_url": "postgresql://u:secret@127.0.0.1/db"}, "store_url contains a password"),
        ({"generator": {"checkpoint": "nowhere/gfn"}}, "no Crystal-GFN checkpoint at 'nowhere/gfn'"),
        ({"acquisition": {"relative_to_hull": "mp-all"}}, "`acquisition.relative_to_hull`"),
        ({"acquisition": {"kind": "ei", "relative_to_hull": "mp20+matbench"}}, "kind 'greedy' or 'ucb', not 'ei'"),
        ({"targets": [{"name": "density", "goal": "maximize"}], "acquisition": {"relative_to_hull": "li-fe-o"}},
         "needs a `formation_energy_per_atom` target with goal 'minimize'"),
    ],
)
def test_invalid_values_name_the_field(over: dict, needle: str) -> None:
    assert needle in _error(_minimal(**over))


def test_missing_field_and_non_mapping() -> None:
    data = _minimal()
    del data["oracle"]
    assert "`oracle` is required" in _error(data)
    assert "not a mapping" in _error([1, 2])


def test_malformed_yaml_reports_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch_space:\n  elements: [Na, Cl\nrounds: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert str(bad) in msg and "line 4" in msg and "column" in msg
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_relative_seed_path_resolved_against_config_dir(tmp_path: Path) -> None:
    import yaml

    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(_minimal(seed_data={"path": "seed.csv"})))
    cfg = load_config(f)
    assert cfg.seed_data.path == tmp_path / "seed.csv"
    assert isinstance(cfg, CampaignConfig)


def test_search_space_for_the_generator() -> None:
    demo = load_config(CONFIGS[[p.stem for p in CONFIGS].index("demo")])
    space = build_search_space(demo)
    assert set(space.elements) == set(demo.search_space.elements) and space.max_atoms == 12
    cubic = build_search_space(parse_config(_minimal(search_space={"elements": ["Na", "Cl"], "space_groups": ["cubic"]})))
    assert cubic.space_groups == LATTICE_SYSTEM_GROUPS["cubic"]


def test_impossible_search_space_is_a_config_error() -> None:
    cfg = parse_config(_minimal(search_space={"elements": ["Na", "Cl"], "space_groups": [230],
                                              "max_atoms_per_element": 8, "max_atoms": 16}))
    with pytest.raises(ConfigError) as info:
        build_search_space(cfg)
    msg = str(info.value)
    assert "`search_space`" in msg and "230" in msg and "\n" not in msg


@pytest.mark.slow
@pytest.mark.parametrize("name", ["formation_energy_paper", "li_conductor", "density"])
def test_shipped_search_spaces_are_feasible(name: str) -> None:
    """The generator accepts every shipped search space (the large ones take 5–15 s to check)."""
    space = build_search_space(load_config(CONFIGS[[p.stem for p in CONFIGS].index(name)]))
    assert space.feasible_space_groups  # at least one space group hosts a valid composition


def test_task_runner_for_each_runner_kind() -> None:
    import importlib.util

    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from orchestration.config import task_runner_for

    local = task_runner_for(parse_config(_minimal(runner={"kind": "local", "max_workers": 3})).runner)
    assert isinstance(local, ThreadPoolTaskRunner) and local._max_workers == 3
    dask = task_runner_for(parse_config(_minimal(runner={"kind": "dask", "cluster": {"n_workers": 2}})).runner)
    assert isinstance(dask, DaskTaskRunner) and dask.cluster_kwargs["n_workers"] == 2
    addr = task_runner_for(parse_config(_minimal(runner={"kind": "dask", "cluster": {"type": "address", "address": "tcp://127.0.0.1:8786"}})).runner)
    assert addr.address == "tcp://127.0.0.1:8786"
    slurm = parse_config(_minimal(runner={"kind": "dask", "cluster": {"type": "slurm", "jobs": 4}})).runner
    if importlib.util.find_spec("dask_jobqueue") is None:
        with pytest.raises(ConfigError, match="dask-jobqueue"):
            task_runner_for(slurm)
    else:
        assert task_runner_for(slurm).adapt_kwargs == {"minimum": 1, "maximum": 4}


def test_oracle_labels_weigh_more_in_the_refit_when_asked() -> None:
    from discovery.crystal import Crystal
    from discovery.datasets.base import LabeledSet
    from orchestration.campaign.data import label_weights, seed_data

    cfg = parse_config(_minimal(proxy={"oracle_weight": 20}))
    target = cfg.targets[0]
    seed = seed_data(cfg, target.name)
    oracle = LabeledSet([Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90)] * 2, np.array([[-2.0], [-1.9]]),
                        (target.name,))
    w = label_weights(cfg, target, seed.concat(oracle))
    assert w is not None and len(w) == len(seed) + 2 and set(w[:len(seed)]) == {1.0} and list(w[-2:]) == [20.0, 20.0]
    assert label_weights(parse_config(_minimal()), target, seed.concat(oracle)) is None  # default: plain bootstrap
    assert "oracle_weight" not in parse_config(_minimal()).science()["proxy"]  # earlier configs keep their hash
    assert "`proxy.oracle_weight`" in _error(_minimal(proxy={"oracle_weight": 0.5}))


def test_shipped_configs_start_from_a_checkpoint_of_their_own_search_space() -> None:
    """Every shipped config naming generator.checkpoint can warm-start from it (equal search spaces), as a
    campaign's first round checks."""
    from discovery.gfn import CrystalGFN
    from orchestration.config.runtime import build_search_space
    from orchestration.config.schema import resolve_checkpoint

    named = [(p, cfg) for p in CONFIGS if (cfg := load_config(p)).generator.checkpoint is not None]
    assert {p.stem for p, _ in named} >= {"formation_energy_paper", "formation_energy_small"}
    for path, cfg in named:
        assert cfg.generator.checkpoint is not None
        gfn = CrystalGFN.load(resolve_checkpoint(cfg.generator.checkpoint))
        assert gfn.space == build_search_space(cfg), path.name
