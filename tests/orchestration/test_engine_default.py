"""The CHGNet engine default (issue 17): a config that leaves ``engine`` out relaxes with the batched engine
(one candidate per oracle task, as before), hashes as if it said so, and a campaign stored when leaving it out
meant the ASE engine resumes on the ASE engine, neither refused nor silently switched. Real config parsing,
real SQLite store, real oracle objects (no model loaded, no relaxation)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.config import config_hash, load_config, parse_config, stored_reading
from orchestration.store import StoreError, open_campaign

BASE: dict[str, Any] = {"name": "eng", "targets": [{"name": "formation_energy_per_atom"}],
                        "search_space": {"elements": ["Na", "Cl"]}, "seed_data": {"dataset": "mp20"},
                        "candidates_per_round": 4, "batch_size": 2, "rounds": 1, "seed": 5}
# config_hash of BASE with each oracle.settings, computed by the code before the default changed (git 8a746ef);
# campaigns stored then carry these hashes, so they must keep resuming.
BEFORE = {"none": "d525aaefc2c85ab6", "ase": "178ce46c7f514667", "batched": "66b1a83117781ffb",
          "bfgs": "2640fcd717b92db4", "static": "a84ff9dc26d1e66d"}
SETTINGS: dict[str, dict[str, Any]] = {"none": {"steps": 40}, "ase": {"steps": 40, "engine": "ase"},
                                       "batched": {"steps": 40, "engine": "batched"},
                                       "bfgs": {"steps": 40, "optimizer": "BFGS"}, "static": {"mode": "static"}}


def _config(settings: dict[str, Any], **over: Any) -> Any:
    return parse_config({**BASE, "oracle": {"name": "chgnet", "settings": settings}, **over})


def test_leaving_the_engine_out_hashes_as_the_batched_engine() -> None:
    hashes = {k: config_hash(_config(s)) for k, s in SETTINGS.items()}
    assert hashes["none"] == hashes["batched"] == BEFORE["batched"]  # same meaning, same hash
    assert hashes["none"] != BEFORE["none"]  # not the hash of a campaign stored when it meant ASE
    for key in ("ase", "batched", "bfgs", "static"):  # explicit engines, ASE-only optimizers, static mode: as before
        assert hashes[key] == BEFORE[key], key
    assert _config(SETTINGS["none"]).science()["oracle"]["settings"]["engine"] == "batched"  # stored with the campaign
    assert "engine" not in _config(SETTINGS["bfgs"]).science()["oracle"]["settings"]


def test_stored_reading_keeps_what_a_stored_campaign_meant() -> None:
    none, ase, batched = (_config(SETTINGS[k]) for k in ("none", "ase", "batched"))
    # a campaign stored before the change without `engine`: resumes, on the ASE engine, under its stored hash
    for cfg in (none, ase):
        resumed, hashed = stored_reading(cfg, BEFORE["none"])
        assert hashed == BEFORE["none"] and resumed.oracle.settings["engine"] == "ase"
        assert resumed.oracle.settings["steps"] == 40 and resumed.name == "eng"
    # new campaigns, and campaigns that named their engine, read as written
    assert stored_reading(none, None) == (none, BEFORE["batched"])
    assert stored_reading(none, BEFORE["batched"]) == (none, BEFORE["batched"])
    assert stored_reading(ase, BEFORE["ase"]) == (ase, BEFORE["ase"])
    # asking for the batched engine explicitly is a change of an ASE campaign (the store refuses it)
    assert stored_reading(batched, BEFORE["none"]) == (batched, BEFORE["batched"])
    assert stored_reading(none, "0123456789abcdef") == (none, BEFORE["batched"])  # another config: unchanged
    assert _config({"steps": 40}, oracle={"name": "density"}).former_reading() is None


def _write(tmp_path: Path, settings: dict[str, Any]) -> Path:
    path = tmp_path / "eng.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = {**BASE, "oracle": {"name": "chgnet", "settings": settings}, "campaign_dir": str(tmp_path / "camp"),
            "tracking": {"enabled": False}}
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_campaign_stored_on_the_ase_default_resumes_on_ase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.campaign.context import campaign_for, release
    from orchestration.campaign.steps import batched_oracle

    monkeypatch.delenv("MATLOOP_STORE_URL", raising=False)
    path = _write(tmp_path, SETTINGS["none"])
    cfg = load_config(path)
    store, rec = open_campaign(cfg)
    store.close()
    science = rec.config
    del science["oracle"]["settings"]["engine"]
    with sqlite3.connect(tmp_path / "camp" / "store.db") as db:  # the row as the code before the change stored it
        db.execute("UPDATE campaigns SET config_hash = ?, config_json = ? WHERE name = 'eng'",
                   (BEFORE["none"], json.dumps(science, sort_keys=True)))
    store, rec = open_campaign(cfg)
    store.close()
    assert rec.config_hash == BEFORE["none"]
    camp = campaign_for(path)
    try:
        assert camp.config.oracle.settings["engine"] == "ase" and not batched_oracle(camp)
        assert camp.oracles.settings["engine"] == "ase"  # what the campaign's oracles are built with
    finally:
        release(path)
    from orchestration.cli_campaign import _prepare

    _cfg, snapshot = _prepare(path)  # `matloop run`: the snapshot that `matloop resume` reads names the engine
    assert load_config(snapshot).oracle.settings["engine"] == "ase"
    store, again = open_campaign(load_config(snapshot))
    store.close()
    assert again.config_hash == BEFORE["none"]
    path.write_text(path.read_text().replace("steps: 40", "steps: 40\n    engine: batched"))
    with pytest.raises(StoreError, match="config changed"):  # switching it is a change, not a resume
        open_campaign(load_config(path))


def test_a_new_campaign_uses_the_batched_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.campaign.context import campaign_for, release
    from orchestration.campaign.steps import batched_oracle

    monkeypatch.delenv("MATLOOP_STORE_URL", raising=False)
    path = _write(tmp_path, SETTINGS["none"])
    from oracles.registry import get_oracle

    camp = campaign_for(path)
    try:
        assert "engine" not in camp.config.oracle.settings
        assert camp.store.get_campaign("eng").config["oracle"]["settings"]["engine"] == "batched"
        assert camp.store.get_campaign("eng").config_hash == BEFORE["batched"]
        oracle = get_oracle("chgnet", **camp.oracles.settings)  # what the campaign's tasks build (no model loaded)
        assert oracle.settings.engine == "batched" and oracle.settings.workers == 1  # type: ignore[attr-defined]
        assert not batched_oracle(camp)  # one candidate per task, as before: the runner's parallelism is kept
    finally:
        release(path)
    explicit = _write(tmp_path / "x", SETTINGS["batched"])
    camp = campaign_for(explicit)
    try:
        assert batched_oracle(camp)  # `engine: batched` named: one oracle task for the round's batch
    finally:
        release(explicit)
    bfgs = _write(tmp_path / "b", SETTINGS["bfgs"])
    camp = campaign_for(bfgs)
    try:
        assert get_oracle("chgnet", **camp.oracles.settings).settings.engine == "ase"  # type: ignore[attr-defined]
    finally:
        release(bfgs)
