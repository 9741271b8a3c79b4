"""The crystal table: read/write round trip, validation messages, density."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from discovery.crystal import Crystal, CrystalTableError, read_crystal_table, write_crystal_table


def test_round_trip_preserves_extra_columns(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": ["x1"], "space_group": [225], "composition": ["Na4 Cl4"], "a": [5.64], "b": [5.64],
                       "c": [5.64], "alpha": [90], "beta": [90], "gamma": [90], "note": ["rocksalt"]})
    df.to_csv(tmp_path / "in.csv", index=False)
    crystals = read_crystal_table(tmp_path / "in.csv")
    assert crystals[0].counts == {"Na": 4, "Cl": 4} and crystals[0].extra == {"note": "rocksalt"}
    write_crystal_table(crystals, tmp_path / "out.csv")
    back = pd.read_csv(tmp_path / "out.csv")
    assert list(back.columns) == ["id", "space_group", "composition", "a", "b", "c", "alpha", "beta", "gamma", "note"]
    assert back.loc[0, "composition"] == "Na4 Cl4"
    # NaCl rock salt: 2.16 g/cm³
    assert crystals[0].density == pytest.approx(2.165, abs=0.01)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("space_group", 231, "outside 1–230"), ("composition", "Xx2", "cannot be parsed"), ("a", -1, "out of range"),
     ("gamma", 180, "out of range"), ("composition", "Fe0.5 O", "non-integer")],
)
def test_bad_rows_name_row_and_column(tmp_path: Path, column: str, value: object, message: str) -> None:
    row = {"space_group": 1, "composition": "Fe2 O3", "a": 5, "b": 5, "c": 5, "alpha": 90, "beta": 90, "gamma": 90}
    row[column] = value
    pd.DataFrame([row]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CrystalTableError, match=message) as err:
        read_crystal_table(tmp_path / "bad.csv")
    assert "row 1" in str(err.value)


def test_missing_columns(tmp_path: Path) -> None:
    pd.DataFrame([{"space_group": 1}]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CrystalTableError, match="missing column"):
        read_crystal_table(tmp_path / "bad.csv")


def test_formula_orders_by_electronegativity() -> None:
    assert Crystal(1, {"O": 8, "Li": 4, "Mn": 4}, 5, 5, 5, 90, 90, 90).formula == "Li4 Mn4 O8"
