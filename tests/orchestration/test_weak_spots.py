"""The "also weak" findings of issue 14: a fractional space group, a duplicate YAML key, the resume hint of a
campaign whose folder has another name, and the password file of deploy/start-postgres.sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from discovery.crystal import CrystalTableError, crystals_from_frame, read_crystal_table
from orchestration.cli_campaign import resume_command
from orchestration.config import ConfigError, load_config
from orchestration.servers import postgres_bin_dir

REPO = Path(__file__).resolve().parents[2]
ROW = {"composition": "Na4 Cl4", "a": 5.6, "b": 5.6, "c": 5.6, "alpha": 90, "beta": 90, "gamma": 90}


@pytest.mark.parametrize("value", [225.7, "225.7", "225.0000001", float("nan"), float("inf"), True, "2e2.5"])
def test_a_space_group_that_is_not_an_integer_is_an_error(value: object) -> None:
    with pytest.raises(CrystalTableError, match=r"space_group .* is not an integer"):
        crystals_from_frame(pd.DataFrame([{"space_group": value, **ROW}]))


def test_integral_space_groups_are_read_exactly(tmp_path: Path) -> None:
    assert [c.space_group for c in crystals_from_frame(pd.DataFrame([{"space_group": v, **ROW} for v in
                                                                     (225, 225.0, "225", " 221 ")]))] == [225] * 3 + [221]
    path = tmp_path / "t.csv"
    path.write_text("space_group,composition,a,b,c,alpha,beta,gamma\n225.7,Na4 Cl4,5.6,5.6,5.6,90,90,90\n")
    with pytest.raises(CrystalTableError, match=r"row 1: space_group 225\.7 is not an integer"):
        read_crystal_table(path)


def test_a_duplicate_yaml_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: a\nrounds: 1\nsearch_space:\n  elements: [Na, Cl]\n  max_atoms: 8\n  max_atoms: 12\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "c.yaml" in msg and "'max_atoms' appears twice (first at line 5)" in msg and "line 6" in msg
    path.write_text("name: a\nrounds: 1\nseed: 2\nrounds: 3\n")
    with pytest.raises(ConfigError, match=r"'rounds' appears twice \(first at line 2\)"):
        load_config(path)


def test_the_resume_hint_names_the_campaign_and_its_folder(tmp_path: Path) -> None:
    assert resume_command("demo", Path("runs/demo/campaign.yaml")) == "matloop resume demo"
    assert resume_command("demo", tmp_path / "elsewhere" / "campaign.yaml") == \
        f"matloop resume demo --dir {tmp_path / 'elsewhere'}"


@pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL binaries not installed")
def test_start_postgres_removes_the_password_file_when_initdb_fails(tmp_path: Path) -> None:
    services, tmp = tmp_path / "services", tmp_path / "tmp"
    (services / "postgres").mkdir(parents=True)
    (services / "postgres" / "leftover").write_text("not a data directory")  # initdb refuses a non-empty folder
    tmp.mkdir()
    if os.geteuid() == 0:
        import shutil

        shutil.chown(services / "postgres", user="postgres")
        os.chmod(tmp_path, 0o755)
    env = {**os.environ, "MATLOOP_SERVICES": str(services), "MATLOOP_PG_PASSWORD": "s3cret-pw", "TMPDIR": str(tmp),
           "PGPORT": "1", "PG_BIN": str(postgres_bin_dir())}
    proc = subprocess.run(["bash", "deploy/start-postgres.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "initdb" in proc.stderr and list(tmp.iterdir()) == []  # no password file left behind
    assert "s3cret-pw" not in proc.stdout + proc.stderr
