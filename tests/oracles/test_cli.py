"""`matloop oracle run` / `list` and `matloop bench oracle --help`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from discovery.crystal import write_crystal_table
from orchestration.cli import app
from tests.oracles.helpers import impossible_crystal, nacl_crystal, small_structures

runner = CliRunner()


def test_run_density_on_a_crystal_table_keeps_input_columns(tmp_path: Path) -> None:
    table = write_crystal_table([nacl_crystal(), impossible_crystal()], tmp_path / "crystals.csv",
                                extra={"note": ["a", "b"]})
    out = tmp_path / "res.csv"
    result = runner.invoke(app, ["oracle", "run", "--oracle", "density", "--input", str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert list(df["id"]) == ["nacl-table", "impossible"]
    for col in ("status", "message", "energy_per_atom", "formation_energy_per_atom", "e_above_hull", "density",
                "space_group", "composition", "note"):
        assert col in df.columns
    assert (tmp_path / "res.jsonl").read_text().count("\n") == 2


def test_run_chgnet_on_a_folder_of_cifs_writes_relaxed_cifs(tmp_path: Path, mp20_dir: Path) -> None:
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for name in ("NaCl", "MgO"):
        small_structures()[name].to(filename=str(cifs / f"{name}.cif"))
    out = tmp_path / "out" / "results.csv"
    result = runner.invoke(app, ["oracle", "run", "--oracle", "chgnet", "--input", str(cifs), "--out", str(out),
                                 "--workers", "0", "--steps", "30", "--fmax", "0.1",
                                 "--option", f"mp20_dir={mp20_dir}"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert list(df["id"]) == ["MgO", "NaCl"] and set(df["status"]) == {"ok"}
    assert df["formation_energy_per_atom"].between(-4, -1).all() and df["e_above_hull"].notna().all()
    assert (out.parent / "results_structures" / "NaCl.cif").exists()
    provenance = [json.loads(line)["provenance"] for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [p["reference"] for p in provenance] == ["mp20+matbench"] * 2  # the dense hull by default


def test_run_reference_option_selects_the_sparse_hull(tmp_path: Path, mp20_dir: Path) -> None:
    cif = tmp_path / "NaCl.cif"
    small_structures()["NaCl"].to(filename=str(cif))
    out = tmp_path / "results.csv"
    result = runner.invoke(app, ["oracle", "run", "--oracle", "chgnet", "--input", str(cif), "--out", str(out),
                                 "--workers", "0", "--steps", "5", "--reference", "mp20+li-fe-o",
                                 "--option", f"mp20_dir={mp20_dir}"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.with_suffix(".jsonl").read_text().splitlines()[0])
    assert doc["provenance"]["reference"] == "mp20+li-fe-o" and doc["targets"]["e_above_hull"] is not None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--oracle", "nope"], "unknown oracle 'nope'"),
     (["--oracle", "density", "--fmax", "0.1"], "does not accept these settings (fmax"),
     (["--option", "novalue"], "expected KEY=VALUE")],
)
def test_user_errors_are_one_paragraph_without_traceback(tmp_path: Path, args: list[str], fragment: str) -> None:
    table = write_crystal_table([nacl_crystal()], tmp_path / "c.csv")
    result = runner.invoke(app, ["oracle", "run", "--input", str(table), "--out", str(tmp_path / "o.csv"), *args])
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["oracle", "run", "--input", str(tmp_path / "nope.csv"), "--out", "x.csv"])
    assert result.exit_code == 2 and "no such file" in result.output


def test_help_has_examples() -> None:
    for cmd in (["oracle", "run", "--help"], ["oracle", "list", "--help"], ["bench", "oracle", "--help"]):
        result = runner.invoke(app, cmd)
        assert result.exit_code == 0 and "Example" in result.output
    listed = runner.invoke(app, ["oracle", "list"]).output.split()
    assert {"chgnet", "density", "replay"} <= set(listed)
