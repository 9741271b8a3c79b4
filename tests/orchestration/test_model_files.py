"""Corrupt model files (issue 14, defect 7): a damaged weights.pt / model.pt / config.json gives one line
naming the file, never a traceback (proxy predict, gfn sample and the load functions behind the campaign)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discovery.crystal import write_crystal_table
from discovery.gfn import CrystalGFN
from discovery.proxy import EnsembleProxy
from orchestration.cli import app
from tests.oracles.helpers import nacl_crystal

runner = CliRunner()
CHECKPOINTS = Path(__file__).resolve().parents[2] / "discovery" / "data" / "checkpoints"


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        path.write_bytes(b"\x00not a model\xff" * 10)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not-json":
        path.write_text('{"format": ')
    elif how == "wrong-json":
        doc = json.loads(data)
        path.write_text(json.dumps({k: v for k, v in doc.items() if k in ("format", "format_version")}))
    elif how == "list-json":
        path.write_text("[1, 2]")


PROXY_CASES = [("weights.pt", "truncated"), ("weights.pt", "garbage"), ("weights.pt", "empty"),
               ("config.json", "not-json"), ("config.json", "wrong-json"), ("config.json", "list-json")]
GFN_CASES = [("model.pt", "truncated"), ("model.pt", "garbage"), ("config.json", "not-json"),
             ("config.json", "wrong-json"), ("config.json", "list-json")]


def _one_line(result: object, *needles: str) -> None:
    out = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert result.exit_code == 2, out  # type: ignore[attr-defined]
    assert "Traceback" not in out and "error:" in out, out
    for n in needles:
        assert n in out, out


@pytest.mark.parametrize(("name", "how"), PROXY_CASES)
def test_a_damaged_proxy_file_is_named(tmp_path: Path, name: str, how: str) -> None:
    model = tmp_path / "proxy"
    shutil.copytree(CHECKPOINTS / "proxy-fe", model)
    _damage(model / name, how)
    with pytest.raises(ValueError, match=name):
        EnsembleProxy.load(model)
    table = write_crystal_table([nacl_crystal()], tmp_path / "in.csv")
    result = runner.invoke(app, ["proxy", "predict", "--model", str(model), "--input", str(table),
                                 "--out", str(tmp_path / "out.csv")])
    _one_line(result, name)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(("name", "how"), GFN_CASES)
def test_a_damaged_generator_file_is_named(tmp_path: Path, name: str, how: str) -> None:
    ckpt = tmp_path / "gfn"
    shutil.copytree(CHECKPOINTS / "crystal-gfn-fe", ckpt)
    _damage(ckpt / name, how)
    with pytest.raises(ValueError, match=name):
        CrystalGFN.load(ckpt)
    result = runner.invoke(app, ["gfn", "sample", "--checkpoint", str(ckpt), "-n", "2", "--out",
                                 str(tmp_path / "s.csv")])
    _one_line(result, name)
