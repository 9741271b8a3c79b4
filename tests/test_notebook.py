"""docs/notebook.md runs: its python blocks are executed in order, in one namespace, from the repository root
(against the session's Prefect server), and what they read back is checked."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "notebook.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the page's fenced ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)


def test_the_page_has_blocks_for_every_step() -> None:
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) == 7
    code = "\n".join(blocks)
    for needle in ("get_oracle(", "campaign_flow(", "st.status(", "st.export(", "EnsembleProxy.load(",
                   "mlflow.search_runs("):
        assert needle in code, needle


def test_every_block_runs(tmp_path: Path, prefect_server_settings: str, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the page's scratch folder lands in tmp_path
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    for i, block in enumerate(python_blocks(PAGE.read_text())):
        exec(compile(block, f"{PAGE}:block-{i + 1}", "exec"), namespace)  # the page's own code
    out = capsys.readouterr().out
    # 1. the oracle: EMT, formation energies against EMT's own references
    results = namespace["results"]
    assert [r.status for r in results] == ["ok", "ok"]  # type: ignore[attr-defined]
    assert "calculator: ase.calculators.emt:EMT" in out
    # 2-3. one round ran and its results are in the store, labelled by EMT
    info = namespace["info"]
    assert info["rounds_completed"] == 1 and info["oracle_calls"] == 6  # type: ignore[index]
    assert Path(str(namespace["work"])).parent == tmp_path
    stored = namespace["stored"]
    assert all(r.provenance["calculator"] == "ase.calculators.emt:EMT" for r in stored)  # type: ignore[attr-defined]
    # 4-5. the exported table and the proxy's predictions on it
    table = namespace["table"]
    assert len(table) == 6 and table["proxy_std"].gt(0).all()  # type: ignore[attr-defined]
    # 6. MLflow: the campaign's parent run and one round run
    runs = namespace["runs"]
    assert len(runs) >= 2  # type: ignore[arg-type]
