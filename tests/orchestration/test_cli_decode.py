"""`matloop decode`: K structures per crystal-table row as <id>-<k>.cif, with the pyxtal or the score decoder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from typer.testing import CliRunner

from discovery.crystal import Crystal, write_crystal_table
from orchestration.cli import app
from orchestration.cli_decode import file_stem

ROWS = [
    Crystal(space_group=225, counts={"Na": 4, "Cl": 4}, a=5.69, b=5.69, c=5.69, alpha=90, beta=90, gamma=90,
            id="nacl"),
    Crystal(space_group=164, counts={"Li": 1, "Ti": 1, "Te": 2}, a=3.9, b=3.9, c=6.9, alpha=90, beta=90, gamma=120,
            id="mp-10189/LiTiTe2"),  # not a plain file name: a readable prefix plus a digest
    Crystal(space_group=225, counts={"Na": 1, "Cl": 1}, a=5.69, b=5.69, c=5.69, alpha=90, beta=90, gamma=90,
            id="impossible"),  # 1 + 1 atoms in Fm-3m: no Wyckoff set
]


def _decode(tmp_path: Path, decoder: str, k: int) -> tuple[Path, list[dict[str, str]]]:
    table = tmp_path / "rows.csv"
    write_crystal_table(ROWS, table)
    out = tmp_path / decoder
    res = CliRunner().invoke(app, ["decode", "--decoder", decoder, "--input", str(table), "--per-row", str(k),
                                   "--out", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    with (out / "decoded.csv").open() as fh:
        return out, list(csv.DictReader(fh))


@pytest.mark.parametrize("decoder", ["pyxtal", "score"])
def test_decode_writes_k_cif_files_per_row_with_the_row_composition(tmp_path: Path, decoder: str) -> None:
    out, summary = _decode(tmp_path, decoder, k=2)
    stems = {row.id: file_stem(row.id) for row in ROWS}
    assert stems["nacl"] == "nacl" and stems["mp-10189/LiTiTe2"].startswith("mp-10189") and "/" not in stems[ROWS[1].id]
    expected = {f"{stems[r.id]}-{k}.cif" for r in ROWS[:2] for k in range(2)}
    assert {p.name for p in out.glob("*.cif")} == expected
    for row in ROWS[:2]:
        for k in range(2):
            s = Structure.from_file(out / f"{stems[row.id]}-{k}.cif")
            assert s.composition.get_el_amt_dict() == pytest.approx(row.counts)
            assert SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number() == row.space_group
    status = {(r["id"], r["k"]): r["status"] for r in summary}
    assert status[("impossible", "0")] == "impossible" and len(summary) == 6
    assert all(status[(r.id, str(k))] == "ok" for r in ROWS[:2] for k in range(2))
    assert all(r["found_space_group"] == str(r["space_group"]) for r in summary if r["status"] == "ok")


def test_decode_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first, _ = _decode(tmp_path / "a", "pyxtal", k=1)
    second, _ = _decode(tmp_path / "b", "pyxtal", k=1)
    assert (first / "nacl-0.cif").read_text() == (second / "nacl-0.cif").read_text()


def test_decode_refuses_an_unknown_decoder_and_a_missing_table(tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"
    write_crystal_table(ROWS[:1], table)
    res = CliRunner().invoke(app, ["decode", "--decoder", "diffusion", "--input", str(table), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--decoder 'diffusion': choose pyxtal or score" in res.output
    res = CliRunner().invoke(app, ["decode", "--input", str(tmp_path / "none.csv"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "none.csv" in res.output
    assert not list(tmp_path.glob("*.cif"))


def test_decode_help_has_examples() -> None:
    res = CliRunner().invoke(app, ["decode", "--help"])
    assert res.exit_code == 0 and "matloop decode --decoder score" in res.output and "--per-row" in res.output
