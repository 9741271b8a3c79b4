"""S.U.N. labels of a campaign, written through the real store: labelled once per result in campaign order,
relabelled after a crash between results and labels (never lost, never duplicated), shown by status, export,
the round summary and the round metrics; an unconverged result is never a hit anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from discovery.crystal import Crystal
from discovery.datasets.base import DATA_DIR
from discovery.sun import SunLabels
from orchestration.campaign import report, status
from orchestration.campaign.sun import label_campaign, round_report, sun_metrics
from orchestration.config import CampaignConfig, config_hash, parse_config
from orchestration.store import Store

NAME = "suntest"
CONFIG: dict = {
    "name": NAME, "seed": 0,
    "targets": [{"name": "e_above_hull", "goal": "minimize"}],
    "search_space": {"elements": ["Li", "Na", "Cl", "N"]},
    "seed_data": {"dataset": "mp20", "max_rows": 50},
    "candidates_per_round": 10, "batch_size": 4, "oracle": {"name": "chgnet"}, "rounds": 2,
}


def _known() -> tuple[str, Structure]:
    row = pd.read_csv(DATA_DIR / "mp20" / "mp20_val_cif.csv.gz", nrows=1).iloc[0]
    return str(row["material_id"]), Structure.from_str(row["cif"], fmt="cif")


def li3cl() -> Structure:
    """Li3Cl in the Cu3Au (L1_2) type: a formula no reference holds."""
    return Structure(Lattice.cubic(4.0), ["Cl", "Li", "Li", "Li"],
                     [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])


def n2_packing() -> Structure:
    x = 1.10 / 6.0
    return Structure(Lattice.cubic(6.0), ["N"] * 4, [[0, 0, 0], [x, 0, 0], [0.5, 0.5, 0.0], [0.5 + x, 0.5, 0.0]])


# (id, round, status, e_above_hull, structure): round 0 then round 1
def _results() -> list[tuple[str, int, str, float | None, Structure | None]]:
    _mid, known = _known()
    return [
        ("known", 0, "ok", 0.0, known),                       # an MP-20 structure: not novel
        ("new", 0, "ok", 0.05, li3cl()),                       # stable, novel, unique: S.U.N.
        ("unconv", 0, "unconverged", -0.3, li3cl() * (1, 1, 2)),  # E_hull says hit, status says no
        ("failed", 0, "failed", None, None),
        ("dup", 1, "ok", 0.02, li3cl() * (2, 1, 1)),           # the same crystal as "new", a round later
        ("mol", 1, "ok", -0.1, n2_packing()),                   # a molecular packing: 0-D, not S.U.N.
    ]


def _open(tmp_path: Path, rounds: tuple[int, ...]) -> tuple[Store, CampaignConfig]:
    cfg = parse_config({**CONFIG, "campaign_dir": str(tmp_path / "run")})
    store = Store.open(f"sqlite:///{tmp_path / 'run' / 'store.db'}")
    store.create_campaign(NAME, config=cfg.science(), config_hash=config_hash(cfg), seed=0, code_version="test")
    for r in rounds:
        _add_round(store, r)
    return store, cfg


def _add_round(store: Store, r: int) -> None:
    rows = [x for x in _results() if x[1] == r]
    if r > 0:
        for state in ("proxy_fitted", "generator_trained", "sampled", "selected", "evaluating", "evaluated", "logged",
                      "completed"):
            store.advance_round(NAME, r - 1, state)  # type: ignore[arg-type]
    store.start_round(NAME, r, seed=r, code_version="test")
    store.add_candidates(NAME, r, [Crystal(1 if cid == "new" else 221, {"Li": 3, "Cl": 1}, 4, 4, 4, 90, 90, 90, id=cid)
                                   for cid, *_ in rows])
    store.select_batch(NAME, r, [cid for cid, *_ in rows], oracle="chgnet")
    for cid, _r, st, e_hull, s in reversed(rows):  # stored in another order than the batch (parallel oracles)
        targets = {} if e_hull is None else {"e_above_hull": e_hull}
        store.record_result(NAME, cid, status=st, targets=targets,  # type: ignore[arg-type]
                            relaxed_cif=None if s is None else str(s.to(fmt="cif")))


def _check(labels: dict[str, SunLabels]) -> None:
    assert set(labels) == {"known", "new", "unconv", "failed", "dup", "mol"}
    k, new, unconv, dup, mol = (labels[i] for i in ("known", "new", "unconv", "dup", "mol"))
    assert not k.novel_structure and not k.novel_formula and k.match == _known()[0] and not k.sun
    assert new.sun and new.novel_formula and new.relaxed_space_group == 221 and new.sampled_space_group == 1
    assert not unconv.converged and not unconv.stable and not unconv.sun
    assert not dup.unique and not dup.novel_structure and dup.match == "new" and not dup.sun
    assert mol.dimensionality == 0 and mol.stable and mol.unique and not mol.sun
    assert not labels["failed"].converged and labels["failed"].relaxed_space_group is None


def test_labels_are_written_once_and_relabelled_after_a_crash(tmp_path: Path) -> None:
    store, cfg = _open(tmp_path, (0,))
    with store:
        assert store.unlabelled(NAME) == ["failed", "unconv", "new", "known"]
        assert label_campaign(store, cfg) == 4
        assert label_campaign(store, cfg) == 0 and store.unlabelled(NAME) == []  # nothing twice
        # round 1's results are stored, then the process dies before its labels: the next run labels them
        _add_round(store, 1)
        assert sorted(store.unlabelled(NAME)) == ["dup", "mol"]
        assert label_campaign(store, cfg) == 2
        resumed = store.sun_labels(NAME)
        _check(resumed)
        assert store.record_labels(NAME, list(resumed.values())) == 0  # insert-ignore: no duplicates
    fresh, cfg = _open(tmp_path / "fresh", (0, 1))  # labelled in one go: the same labels
    with fresh:
        assert label_campaign(fresh, cfg) == 6
        assert fresh.sun_labels(NAME) == resumed


def test_unconverged_is_never_a_hit_and_labels_are_shown_everywhere(tmp_path: Path) -> None:
    store, cfg = _open(tmp_path, (0, 1))
    with store:
        label_campaign(store, cfg)
        camp = SimpleNamespace(config=cfg, store=store, name=NAME)
        m0, m1 = report.round_metrics(camp, 0), report.round_metrics(camp, 1)  # type: ignore[arg-type]
        assert m0["hits_round"] == 2 and m1["hits_round"] == 2  # known + new; dup + mol (never unconv)
        s0, s1 = sun_metrics(store, NAME, 0), sun_metrics(store, NAME, 1)
        assert (s0["sun_round"], s0["cumulative_sun"], s1["sun_round"], s1["cumulative_sun"]) == (1, 1, 0, 1)
        assert s1["cumulative_stable"] == 4 and s1["cumulative_zero_dimensional_hits"] == 1
        assert s1["cumulative_unique"] == 3 and s1["cumulative_novel"] == 2  # new, mol

        md = report.top_markdown(camp, 0, run_link=None)  # type: ignore[arg-type]
        line = next(x for x in md.splitlines() if x.startswith("| unconv "))
        assert "| unconverged |" in line and "| yes |" not in line and "S.U.N." not in line
        assert "| 1 → 221 |" in next(x for x in md.splitlines() if x.startswith("| new "))
        assert "S.U.N." in next(x for x in md.splitlines() if x.startswith("| new "))

        art = round_report(store, cfg, 1)
        assert art["counts_cumulative"]["sun"] == 1 and {x["candidate_id"] for x in art["labels"]} == {"dup", "mol"}
        json.dumps(art)

        info = status.status(store, NAME, top=10)
        assert info["hits"] == 4 and info["sun"]["sun"] == 1 and info["sun"]["unlabelled"] == 0
        assert info["sun"]["zero_dimensional_hits"] == 1 and info["sun"]["sun_novel_formula"] == 1
        best = {b["id"]: b for b in info["best"]}
        assert "unconv" not in best and best["new"]["sun"] is True and best["new"]["relaxed_space_group"] == 221
        assert best["new"]["space_group"] == 1 and best["mol"]["dimensionality"] == 0 and not best["dup"]["unique"]

        status.export(store, NAME, tmp_path / "export")
        table = pd.read_csv(tmp_path / "export" / "crystals.csv").set_index("id")
        for col in ("converged", "stable", "novel_formula", "novel_structure", "unique", "sun", "dimensionality",
                    "relaxed_space_group"):
            assert col in table.columns
        assert bool(table.loc["new", "sun"]) and not bool(table.loc["unconv", "stable"])
        assert int(table.loc["new", "relaxed_space_group"]) == 221 and int(table.loc["new", "space_group"]) == 1


def test_the_zero_dimensional_switch_and_the_stability_bound(tmp_path: Path) -> None:
    store, cfg = _open(tmp_path, (0, 1))
    cfg = parse_config({**CONFIG, "campaign_dir": str(tmp_path / "run"), "sun": {"zero_dimensional": "include"},
                        "success": {"metric": "e_above_hull", "at_most": 0.03}})
    with store:
        label_campaign(store, cfg)
        labels = store.sun_labels(NAME)
        assert labels["mol"].sun  # 0-D allowed
        assert not labels["new"].stable and not labels["new"].sun  # 0.05 > 0.03 eV/atom


@pytest.mark.parametrize("metric", ["density"])
def test_stability_falls_back_to_0p1_when_success_is_not_on_e_above_hull(metric: str) -> None:
    from orchestration.campaign.sun import sun_settings

    cfg = parse_config({**CONFIG, "success": {"metric": metric, "at_least": 1.0}})
    assert sun_settings(cfg).stable_at_most == 0.1 and sun_settings(cfg).zero_dimensional == "exclude"
