"""Fixtures for the oracle tests (one CHGNet model per test process, shared by every oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oracles.chgnet import CHGNetOracle

SHARED_MP20 = Path("/work/shared/data/mp20")
REPO_MP20 = Path(__file__).resolve().parents[2] / "discovery" / "data" / "mp20"


@pytest.fixture(scope="session")
def mp20_dir() -> Path:
    """MP-20 tables for the hull reference: the repo copy, else the shared data (CI has the repo copy)."""
    for d in (REPO_MP20, SHARED_MP20):
        if d.is_dir() and any(d.glob("*.csv*")):
            return d
    pytest.skip("MP-20 tables not available")


@pytest.fixture(scope="session")
def chgnet_fast(mp20_dir: Path) -> CHGNetOracle:
    """In-process CHGNet oracle with a small step cap (fast tests on near-relaxed inputs)."""
    oracle = CHGNetOracle(workers=0, steps=40, timeout_s=120, mp20_dir=str(mp20_dir))
    oracle.warm_up()
    return oracle
