"""Campaign CLI: bad input exits non-zero with one paragraph and writes nothing; help texts have an
example; status/export/resume read a real (small) campaign store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from discovery.crystal import Crystal
from orchestration.cli import app
from orchestration.config import config_hash, parse_config
from orchestration.store import Store

runner = CliRunner()

BASE: dict = {
    "name": "clitest",
    "seed": 1,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Na", "Cl", "O"], "max_elements": 2, "max_atoms_per_element": 4, "max_atoms": 8,
                     "space_groups": ["cubic"]},
    "seed_data": {"dataset": "mp20", "max_rows": 50},
    "candidates_per_round": 10,
    "batch_size": 2,
    "oracle": {"name": "density"},
    "rounds": 1,
    "success": {"metric": "density", "at_least": 2.0},
}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """An empty working directory (runs/, .prefect/ would be created here)."""
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


def _write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_paragraph_error(result: object, *needles: str) -> str:
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, out  # type: ignore[attr-defined]
    assert "Traceback" not in out and "error:" in out
    text = " ".join(out.split())
    for n in needles:
        assert n in text, text
    return text


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("name: x\nsearch_space:\n  elements: [Na, Cl\nrounds: 2\n", ["not valid YAML", "line"]),
        ({**BASE, "bacth_size": 3}, ["bacth_size", "not a known setting", "batch_size"]),
        ({**BASE, "search_space": {**BASE["search_space"], "elements": ["Na", "Xx"]}}, ["'Xx'", "not a chemical element"]),
        ({**BASE, "search_space": {"elements": ["Na", "Cl"], "space_groups": [230], "max_atoms_per_element": 8,
                                   "max_atoms": 16}}, ["`search_space`", "230"]),
        ({**BASE, "store_url": "postgresql://nobody@127.0.0.1:1/matloop"}, ["cannot reach the campaign store",
                                                                            "127.0.0.1:1"]),
        ({**BASE, "oracle": {"name": "vasp9000"}}, ["vasp9000", "not a known oracle"]),
        ({**BASE, "oracle": {"name": "density", "settings": {"bogus": 1}}},
         ["bad.yaml", "`oracle.settings.bogus` is not a setting of oracle 'density'"]),
        ({**BASE, "oracle": {"name": "chgnet", "settings": {"fmx": 0.1, "steps": -1}}},
         ["`oracle.settings.fmx`", "did you mean `fmax`?", "`oracle.settings.steps`", "2 problems"]),
        ({**BASE, "oracle": {"name": "gpaw", "settings": {"code": "qe", "retry": {"max_attempt": 2}}}},
         ["`oracle.settings.code`", "`oracle.settings.retry.max_attempt`"]),
    ],
    ids=["malformed-yaml", "unknown-key", "unknown-element", "impossible-space", "unreachable-store", "unknown-oracle",
         "unknown-oracle-setting", "bad-chgnet-settings", "bad-gpaw-settings"],
)
def test_bad_input_exits_with_one_paragraph_and_writes_nothing(workdir: Path, content: object, needles: list[str]) -> None:
    cfg = _write(workdir / "bad.yaml", content)
    before = _files(workdir)
    result = runner.invoke(app, ["run", str(cfg), "--quiet"])
    _one_paragraph_error(result, *needles)
    assert _files(workdir) == before  # nothing written: no runs/, no store, no .prefect


def test_missing_config_and_unknown_campaign(workdir: Path) -> None:
    _one_paragraph_error(runner.invoke(app, ["run", "nope.yaml"]), "nope.yaml does not exist")
    _one_paragraph_error(runner.invoke(app, ["resume", "ghost"]), "ghost", "campaign.yaml does not exist")
    _one_paragraph_error(runner.invoke(app, ["status"]), "no campaign store")
    _one_paragraph_error(runner.invoke(app, ["status", "ghost"]), "ghost")
    assert _files(workdir) == set()


def test_schedule_rejects_a_bad_cron(workdir: Path) -> None:
    cfg = _write(workdir / "ok.yaml", BASE)
    _one_paragraph_error(runner.invoke(app, ["schedule", str(cfg), "--cron", "every tuesday"]), "every tuesday", "cron")
    assert _files(workdir) == {"ok.yaml"}


@pytest.mark.parametrize("command", ["run", "resume", "status", "export", "ui", "schedule"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example: matloop " + command in " ".join(result.output.split())


def _store_with_results(workdir: Path) -> Path:
    """A small campaign store written through the store API (one round, a batch of 3, 2 results)."""
    cfg = parse_config({**BASE, "campaign_dir": str(workdir / "runs" / "clitest")})
    db = workdir / "runs" / "clitest" / "store.db"
    store = Store.open(f"sqlite:///{db}")
    store.create_campaign("clitest", config=cfg.science(), config_hash=config_hash(cfg), seed=1, code_version="test")
    store.start_round("clitest", 0, seed=1, code_version="test")
    crystals = [Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90, id="a"),
                Crystal(221, {"Na": 1, "Cl": 1}, 3.4, 3.4, 3.4, 90, 90, 90, id="b"),
                Crystal(225, {"Na": 8, "O": 4}, 5.5, 5.5, 5.5, 90, 90, 90, id="c")]
    store.add_candidates("clitest", 0, crystals, scores=[1.0, 0.5, 0.2])
    store.select_batch("clitest", 0, ["a", "b", "c"], oracle="density")
    cif = "data_x\n_cell_length_a 5.6\n"
    store.record_result("clitest", "a", status="ok", targets={"density": 2.2}, relaxed_cif=cif)
    store.record_result("clitest", "b", status="ok", targets={"density": 1.5})
    store.close()
    return db


def test_status_json_and_export(workdir: Path) -> None:
    _store_with_results(workdir)
    result = runner.invoke(app, ["status", "--json"])  # the only store under runs/
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["name"] == "clitest" and info["rounds_completed"] == 0 and info["oracle_calls"] == 2
    assert info["hits"] == 1 and [b["id"] for b in info["best"]] == ["a", "b"]
    assert info["best"][0]["density"] == pytest.approx(2.2) and info["pending"] == ["c"]
    text = runner.invoke(app, ["status", "clitest"])
    assert text.exit_code == 0 and "2 oracle calls" in " ".join(text.output.split())

    out = workdir / "export"
    result = runner.invoke(app, ["export", "clitest", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = (out / "crystals.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("id,") and "density" in rows[0]  # labelled only: a, b
    assert sorted(p.name for p in (out / "cifs").iterdir()) == ["a.cif"]
