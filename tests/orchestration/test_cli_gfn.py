"""`matloop gfn train|sample` and `matloop bench gfn` through the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discovery.chemistry import is_smact_valid
from discovery.crystal import read_crystal_table
from discovery.gfn import CrystalGFN
from discovery.symmetry import is_wyckoff_compatible
from orchestration.cli import app

runner = CliRunner()
SMALL = ["--elements", "Li Mn O", "--max-elements", "3", "--max-atoms-per-element", "4", "--max-atoms", "12"]


def test_train_then_sample_on_two_processes_writes_the_same_valid_table(tmp_path: Path) -> None:
    ckpt = tmp_path / "gfn"
    res = runner.invoke(app, ["gfn", "train", "--reward", "density", "--iterations", "3", "--out", str(ckpt), *SMALL])
    assert res.exit_code == 0, res.output
    tables = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.csv"
        res = runner.invoke(app, ["gfn", "sample", "--checkpoint", str(ckpt), "-n", "300", "--seed", "3",
                                  "--workers", str(workers), "--out", str(out)])
        assert res.exit_code == 0, res.output
        tables.append(read_crystal_table(out))
    one, two = tables
    assert len(one) == 300
    assert [(c.space_group, c.counts, c.lattice) for c in one] == [(c.space_group, c.counts, c.lattice) for c in two]
    for c in one:
        assert set(c.counts) <= {"Li", "Mn", "O"} and c.n_atoms <= 12
        assert is_smact_valid(c.counts) and is_wyckoff_compatible(c.space_group, list(c.counts.values()))


def test_train_lattice_ranges_bound_every_sample(tmp_path: Path) -> None:
    ckpt = tmp_path / "gfn"
    res = runner.invoke(app, ["gfn", "train", "--reward", "density", "--iterations", "2", "--out", str(ckpt), *SMALL,
                              "--lengths", "2.4 30", "--angles", "60 120"])
    assert res.exit_code == 0, res.output
    space = json.loads((ckpt / "config.json").read_text())["space"]
    assert space["length_range"] == [2.4, 30.0] and space["angle_range"] == [60.0, 120.0]
    out = tmp_path / "s.csv"
    assert runner.invoke(app, ["gfn", "sample", "--checkpoint", str(ckpt), "-n", "200", "--out", str(out)]).exit_code == 0
    for c in read_crystal_table(out):
        assert all(2.4 <= x <= 30.0 for x in c.lattice[:3]) and all(60.0 <= x <= 120.0 for x in c.lattice[3:])
    bad = runner.invoke(app, ["gfn", "train", "--iterations", "1", "--out", str(tmp_path / "b"), "--lengths", "5"])
    assert bad.exit_code != 0 and "--lengths" in bad.output and "Traceback" not in bad.output


def test_train_lr_final_decays_the_rates_and_is_recorded(tmp_path: Path) -> None:
    ckpt = tmp_path / "gfn"
    res = runner.invoke(app, ["gfn", "train", "--reward", "density", "--iterations", "4", "--save-every", "2",
                              "--lr-final", "0.1", "--out", str(ckpt), *SMALL])
    assert res.exit_code == 0, res.output
    assert json.loads((ckpt / "train_report.json").read_text())["lr_final"] == 0.1
    lr = CrystalGFN.load(ckpt).optimizer().param_groups[0]["lr"]  # the saved Adam keeps the last step's rate
    assert lr == pytest.approx(5e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 4))))
    bad = runner.invoke(app, ["gfn", "train", "--iterations", "1", "--lr-final", "2", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "--lr-final" in bad.output and "Traceback" not in bad.output


def test_sample_needs_a_checkpoint_or_untrained(tmp_path: Path) -> None:
    res = runner.invoke(app, ["gfn", "sample", "-n", "10", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code != 0
    assert "--checkpoint" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_bench_gfn_prints_one_json_object() -> None:
    res = runner.invoke(app, ["bench", "gfn", "--json", "--iterations", "2", "--samples", "200", "--pyxtal-pairs", "10",
                              "--workers", "2", "--no-cold"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("trajectories_per_s_train", "samples_per_s", "samples_per_s_1_process", "batch_size", "device",
                "valid_smact", "valid_pyxtal", "valid_lattice", "table_load_s", "fresh_sample_untrained_1000_s",
                "fresh_sample_peak_rss_gib", "fresh_train_50_s", "fresh_train_trajectories_per_s",
                "fresh_train_peak_rss_gib"):
        assert key in result
    assert "table_build_s" not in result and result["table_from_cache"]
    assert 0 < result["fresh_sample_peak_rss_gib"] < 8 and result["fresh_sample_untrained_1000_s"] > 0
    assert result["sampling_workers"] == 2
    assert result["valid_smact"] == result["valid_pyxtal"] == result["valid_lattice"] == 1.0


def test_gfn_sample_imports_neither_prefect_nor_mlflow(tmp_path: Path) -> None:
    """Start-up cost: `matloop gfn sample` must not pay for the campaign stack (run in a clean interpreter)."""
    import subprocess
    import sys

    out = tmp_path / "u.csv"
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orchestration.cli import app\n"
        f"r = CliRunner().invoke(app, ['gfn', 'sample', '--untrained', '-n', '20', '--out', {str(out)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('prefect', 'mlflow', 'scipy.special') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert len(read_crystal_table(out)) == 20
