"""`matloop decoder train|sample` on real data: a tiny training run, CIFs from the shipped checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import spglib
from pymatgen.core import Structure
from typer.testing import CliRunner

from discovery.decoder import ScoreDecoder
from discovery.decoder.train import DEFAULT_TRAIN
from orchestration.cli import app

runner = CliRunner()


def test_help_has_examples() -> None:
    result = runner.invoke(app, ["decoder", "--help"])
    assert result.exit_code == 0
    assert "matloop decoder sample --space-group 225" in result.output


def test_sample_writes_cifs_with_the_space_group(tmp_path: Path) -> None:
    out = tmp_path / "nacl"
    result = runner.invoke(app, ["decoder", "sample", "--space-group", "225", "--composition", "Na4 Cl4",
                                 "--lattice", "5.6,5.6,5.6,90,90,90", "--k", "3", "--levels", "4", "--steps", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    cifs = sorted(out.glob("*.cif"))
    assert len(cifs) == 3
    for cif in cifs:
        s = Structure.from_file(cif)
        cell = (s.lattice.matrix.tolist(), s.frac_coords.tolist(), [site.specie.Z for site in s])
        ds = spglib.get_symmetry_dataset(cell, symprec=0.1)
        assert ds is not None and ds.number == 225
        assert s.composition.formula.replace(" ", "") in {"Na4Cl4", "Cl4Na4"}


def test_sample_impossible_composition_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["decoder", "sample", "--space-group", "225", "--composition", "Na1 Cl1",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "no Wyckoff assignment" in result.output


def test_train_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    pd.read_csv(DEFAULT_TRAIN).iloc[:6].to_csv(data, index=False)
    result = runner.invoke(app, ["decoder", "train", "--out", str(tmp_path / "ck"), "--data", str(data),
                                 "--max-steps", "2", "--minutes", "1", "--batch-size", "2", "--hidden", "16",
                                 "--layers", "1", "--max-atoms", "12"])
    assert result.exit_code == 0, result.output
    decoder = ScoreDecoder.load(tmp_path / "ck")
    assert decoder.meta["steps"] == 2
    assert (tmp_path / "ck" / "train.json").exists()
