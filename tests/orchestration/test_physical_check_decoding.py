"""`matloop gfn check`'s decoding choice: passed to the CHGNet oracle and named in the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from discovery.crystal import Crystal
from orchestration.cli import app
from orchestration.physical_check import CheckDecoding, relaxation_check

runner = CliRunner()


def test_relaxation_check_uses_and_reports_the_decoding() -> None:
    """Rock-salt LiF given at 2x its volume: rescaled to the volume model's V0 and the best of 2 placements kept,
    it relaxes ok; the summary names the decoding."""
    big = 4.0 * 2 ** (1 / 3)
    lif = Crystal(225, {"Li": 4, "F": 4}, big, big, big, 90, 90, 90, id="lif")
    decoding = CheckDecoding(best_of=2, volume="model")
    summary, rows = relaxation_check([lif], np.array([-3.0]), workers=0, decoding=decoding)
    assert summary["decoding"] == {"decoder": "pyxtal", "best_of": 2, "volume": "model", "rattle": 0.0}
    assert summary["engine"] in ("ase", "batched") and summary["timeout_s"] == 300.0  # the oracle's default engine
    assert summary["cell_filter"] == "unit"  # the oracle's default
    assert rows[0]["status"] == "ok" and rows[0]["n_atoms"] == 8
    assert abs(rows[0]["chgnet_fe"] - (-3.0)) < 0.5


def test_relaxation_check_passes_the_cell_filter() -> None:
    """The Frechet cell filter reaches the oracle (and is named); rock-salt LiF at 1.2x its volume relaxes ok."""
    a = 4.0 * 1.2 ** (1 / 3)
    lif = Crystal(225, {"Li": 4, "F": 4}, a, a, a, 90, 90, 90, id="lif")
    summary, rows = relaxation_check([lif], np.array([-3.0]), workers=0, cell_filter="frechet",
                                     decoding=CheckDecoding(rattle=0.05))
    assert summary["cell_filter"] == "frechet" and rows[0]["status"] == "ok"
    assert abs(rows[0]["chgnet_fe"] - (-3.0)) < 0.5


def test_relaxation_check_passes_the_optimizer() -> None:
    """BFGS reaches the oracle, which runs it on the ASE engine unless the batched one is named (and both are
    named in the summary); both relax the strained LiF cell to the same energy."""
    a = 4.0 * 1.2 ** (1 / 3)
    lif = Crystal(225, {"Li": 4, "F": 4}, a, a, a, 90, 90, 90, id="lif")
    summary, rows = relaxation_check([lif], np.array([-3.0]), workers=0, optimizer="BFGS",
                                     decoding=CheckDecoding(rattle=0.05))
    assert summary["optimizer"] == "BFGS" and summary["engine"] == "ase" and rows[0]["status"] == "ok"
    assert abs(rows[0]["chgnet_fe"] - (-3.0)) < 0.5
    batched, brows = relaxation_check([lif], np.array([-3.0]), workers=0, optimizer="BFGS", engine="batched",
                                      decoding=CheckDecoding(rattle=0.05))
    assert batched["optimizer"] == "BFGS" and batched["engine"] == "batched" and brows[0]["status"] == "ok"
    assert abs(brows[0]["chgnet_fe"] - rows[0]["chgnet_fe"]) < 2e-3


def test_check_decoding_refuses_unknown_choices() -> None:
    assert CheckDecoding().oracle_settings() == {"decoder": {"name": "pyxtal"}, "decode_best_of": 1,
                                                 "decode_volume": "row", "decode_rattle": 0.0}
    assert CheckDecoding(rattle=0.05).oracle_settings()["decode_rattle"] == 0.05
    with pytest.raises(ValueError, match="rattle"):
        CheckDecoding(rattle=-0.1)
    with pytest.raises(ValueError, match="decoder"):
        CheckDecoding(decoder="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="volume"):
        CheckDecoding(volume="huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="best_of"):
        CheckDecoding(best_of=0)


@pytest.mark.parametrize(("option", "value", "named"), [("--decoder", "magic", "decoder"),
                                                       ("--decode-volume", "huge", "volume"),
                                                       ("--engine", "gpu", "engine"),
                                                       ("--cell-filter", "exp", "cell-filter"),
                                                       ("--optimizer", "LBFGS", "optimizer")])
def test_gfn_check_cli_names_a_bad_decoding_option(tmp_path: Path, option: str, value: str, named: str) -> None:
    res = runner.invoke(app, ["gfn", "check", "--checkpoint", str(tmp_path / "none"), "--proxy", str(tmp_path / "p"),
                              "--relax", "1", option, value])
    assert res.exit_code != 0 and named in res.output
