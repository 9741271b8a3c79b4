"""Job folders and result files per candidate: collision-free, bounded, always inside the workdir (issue 14,
defects 1-3), and duplicate ids in one input are an error that names them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from discovery.crystal import write_crystal_table
from oracles.base import Candidate
from oracles.dft.oracle import DFTOracle
from oracles.io import InputError, load_candidates, write_results
from oracles.queue import FileLedger, drive, job_dir, job_name
from orchestration.cli import app
from tests.oracles.dft.conftest import CHEAP, gpaw_available, si_structure  # noqa: F401 (fixture)
from tests.oracles.helpers import nacl_crystal

runner = CliRunner()


def _undecodable(cid: str) -> Candidate:
    """A candidate whose crystal pyxtal cannot place (NaCl in Fm-3m with one atom each): the DFT oracle
    records an ``invalid`` result in its job folder without running a job."""
    return Candidate.from_crystal(nacl_crystal(id=cid, counts={"Na": 1, "Cl": 1}))


def test_ids_that_sanitise_alike_get_their_own_folders_and_results(tmp_path: Path) -> None:
    ids = ["a;b", "a_b", "a b", "a/b", "A_B"]
    oracle = DFTOracle(workdir=str(tmp_path), **CHEAP)
    results = oracle.evaluate([_undecodable(i) for i in ids], seed=0)
    assert [r.candidate_id for r in results] == ids
    assert all(r.status == "invalid" for r in results)
    folders = {Path(r.provenance["job_dir"]) for r in results}
    assert len(folders) == len(ids) and all(f.exists() for f in folders)
    assert len({job_name(i) for i in ids}) == len(ids)


@pytest.mark.parametrize("cid", ["..", ".", "../..", "/etc", "~", ".hidden", ""])
def test_dot_ids_stay_inside_the_workdir(tmp_path: Path, cid: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "attempt-0").mkdir()  # what `..` used to delete: a folder next to the workdir
    [r] = DFTOracle(workdir=str(work), **CHEAP).evaluate([_undecodable(cid)], seed=0)
    assert r.candidate_id == cid and r.status == "invalid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt-0", "work"]
    assert Path(r.provenance["job_dir"]).resolve().is_relative_to(work.resolve())
    name = job_name(cid)
    assert name not in (".", "..") and not name.startswith(".") and "/" not in name


@pytest.mark.usefixtures("gpaw_available")
def test_a_real_job_with_id_dotdot_keeps_job_files_and_slot_locks_inside_the_workdir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    [r] = DFTOracle(workdir=str(work), **CHEAP).evaluate([Candidate.from_structure(si_structure(), id="..")], seed=0)
    assert r.status == "ok", r.message
    assert [p.name for p in tmp_path.iterdir()] == ["work"]
    assert (work / ".local-slots").is_dir()
    assert Path(r.provenance["job_dir"]).parent.parent == work.resolve()


def test_a_5000_character_id_is_a_bounded_name(tmp_path: Path) -> None:
    long_id = "x" * 5000
    [r] = DFTOracle(workdir=str(tmp_path), **CHEAP).evaluate([_undecodable(long_id)], seed=0)
    assert r.candidate_id == long_id and r.status == "invalid"
    assert len(Path(r.provenance["job_dir"]).parent.name) <= 57
    assert FileLedger(tmp_path / "ledger").final_result(long_id) == r
    # another id with the same first characters has another folder
    assert job_dir(tmp_path, long_id, 0) != job_dir(tmp_path, long_id + "y", 0)


def test_results_of_a_5000_character_id_are_written(tmp_path: Path, chgnet_fast: object) -> None:
    """With CHGNet the relaxation is done before the result table is written: a file name the system
    refuses used to lose it."""
    long_id = "Na" * 2500
    [r] = chgnet_fast.evaluate([Candidate.from_crystal(nacl_crystal(id=long_id))], seed=0)  # type: ignore[attr-defined]
    assert r.structure_cif
    out = write_results([r], tmp_path / "res.csv")
    df = pd.read_csv(out, dtype={"id": str})
    assert df["id"].tolist() == [long_id]
    cif = out.parent / df["structure_file"].iloc[0]
    assert cif.exists() and len(cif.name) <= 64


def test_duplicate_ids_are_an_error_that_names_them(tmp_path: Path) -> None:
    table = write_crystal_table([nacl_crystal(id="dup"), nacl_crystal(id="ok"), nacl_crystal(id="dup", a=5.8)],
                                tmp_path / "in.csv")
    with pytest.raises(InputError, match=r"duplicate candidate id\(s\) 'dup'"):
        load_candidates(table)
    with pytest.raises(ValueError, match="duplicate candidate id"):
        drive(DFTOracle(workdir=str(tmp_path / "w"), **CHEAP), [_undecodable("x"), _undecodable("x")],
              root=tmp_path / "w", ledger=FileLedger(tmp_path / "w" / "ledger"), seed=0)
    assert not (tmp_path / "w" / job_name("x")).exists()  # refused before anything was submitted
    out = tmp_path / "res.csv"
    res = runner.invoke(app, ["oracle", "run", "--oracle", "density", "--input", str(table), "--out", str(out)])
    assert res.exit_code == 2 and "'dup'" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_a_file_ledger_written_before_job_names_is_still_read(tmp_path: Path) -> None:
    """A workdir of the previous release (``<sanitised id>-<crc32>.json``): a rerun collects, not resubmits."""
    import json
    import zlib
    from dataclasses import asdict

    from oracles.base import OracleResult
    from oracles.queue import JobHandle

    ledger = FileLedger(tmp_path / "ledger")
    for cid in ("a;b", "a_b"):
        legacy = f"a_b-{zlib.crc32(cid.encode()):08x}.json"
        (tmp_path / "ledger" / "results" / legacy).write_text(
            OracleResult(candidate_id=cid, status="ok", targets={"density": 1.0}).to_json())
        handle = JobHandle(cid, 0, "42", "local", str(tmp_path / "a_b" / "attempt-0"))
        (tmp_path / "ledger" / "submissions" / legacy).write_text(json.dumps([asdict(handle)]))
    for cid in ("a;b", "a_b"):
        result = ledger.final_result(cid)
        assert result is not None and result.candidate_id == cid
        assert [h.job_id for h in ledger.submissions(cid)] == ["42"]
    # a legacy file that holds another id (a crc32 collision) is not taken for this one
    other = f"x-{zlib.crc32(b'x'):08x}.json"
    (tmp_path / "ledger" / "results" / other).write_text(OracleResult(candidate_id="y", status="ok").to_json())
    assert ledger.final_result("x") is None
