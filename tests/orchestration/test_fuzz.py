"""Property-based fuzzing (hypothesis) of what users feed matloop (issue 14): the crystal-table reader, a folder
of CIFs, the campaign-config loader and job-folder naming. Any input gives either a valid object or a clear
error (the readers' own error classes, which the CLI prints as one line), never a traceback.

Each reader gets 1,000 generated inputs; the runs are derandomized (the same inputs every time, so CI is
reproducible) and keep no example database in the checkout.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from discovery.crystal import REQUIRED_COLUMNS, CrystalTableError
from oracles.base import Candidate
from oracles.io import InputError, load_candidates
from oracles.queue import JOB_NAME_PREFIX_CHARS, job_dir, job_name
from orchestration.config import CampaignConfig, ConfigError, load_config, validate_oracle_settings

FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

CLEAR = (InputError, CrystalTableError)
"""What `matloop oracle run` / `proxy predict` print as one line (both are ValueErrors with a message)."""


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="matloop-fuzz-") as d:
        yield Path(d)


# -- crystal table -------------------------------------------------------------------------------------------

SPECIAL_CELLS = ["225", "225.7", "225.0", "0", "231", "-1", "1e308", "nan", "NaN", "inf", "-inf", "", " ", "Na4 Cl4",
                 "NaCl", "Li4 Mn4 O8", "Xx2", "Na0.5 Cl0.5", "Na-1", "(", "Fe(CO)5", "O1000000000000", "H" * 300, "90",
                 "180", "179.9999", "0.0", "5.6", "True", "None", "null", '"', "a,b", "é", "\x00", "Na\nCl", "2e2"]
cells = st.one_of(st.sampled_from(SPECIAL_CELLS), st.integers(-10**12, 10**12),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
header_names = st.one_of(st.sampled_from([*REQUIRED_COLUMNS, "id", "id", "note", "space_group"]), st.text(max_size=6))


@st.composite
def crystal_tables(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["table", "table", "table", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    required = draw(st.lists(st.sampled_from(REQUIRED_COLUMNS), unique=True, min_size=6))
    header = required + draw(st.lists(header_names, max_size=3))
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=4))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


@FUZZ
@given(data=crystal_tables())
def test_fuzz_crystal_table_reader(scratch: Path, data: bytes) -> None:
    path = scratch / "table.csv"
    path.write_bytes(data)
    try:
        candidates, frame = load_candidates(path)
    except CLEAR as exc:
        event("table: clear error")
        assert str(exc).strip()
        return
    event("table: read")
    assert frame is not None and len(frame) == len(candidates)
    assert len({c.id for c in candidates}) == len(candidates)
    for c in candidates:
        assert c.crystal is not None and 1 <= c.crystal.space_group <= 230


# -- folder of CIFs ------------------------------------------------------------------------------------------

NACL_CIF = """data_NaCl
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   4.02343758
_cell_length_b   4.02343758
_cell_length_c   4.02343758
_cell_angle_alpha   60.00000000
_cell_angle_beta   60.00000000
_cell_angle_gamma   60.00000000
_symmetry_Int_Tables_number   1
_chemical_formula_sum   'Na1 Cl1'
loop_
 _symmetry_equiv_pos_site_id
 _symmetry_equiv_pos_as_xyz
  1  'x, y, z'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_symmetry_multiplicity
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Cl  Cl0  1  0.50000000  0.50000000  0.50000000  1
  Na  Na1  1  0.00000000  0.00000000  0.00000000  1
"""
CIF_TOKENS = ["0", "-1", "nan", "inf", "1e308", "0.5", "?", ".", "Xx", "Na", "O", "'x, y'", "'x+1/2, y, z'", "loop_",
              "_cell_length_a", "data_", "  ", "60", "180", "0.25(3)"]


@st.composite
def cif_texts(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "text":
        return draw(st.text(max_size=400)).encode("utf-8", "surrogatepass")
    lines = NACL_CIF.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "replace_token", "duplicate", "text"]))
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "text":
            lines[i] = draw(st.text(max_size=40))
        else:
            parts = lines[i].split() or [""]
            parts[draw(st.integers(0, len(parts) - 1))] = draw(st.one_of(st.sampled_from(CIF_TOKENS), st.text(max_size=8)))
            lines[i] = "  ".join(parts)
        if not lines:
            lines = [""]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(files=st.lists(cif_texts(), min_size=1, max_size=2))
def test_fuzz_cif_folder_reader(scratch: Path, files: list[bytes]) -> None:
    folder = scratch / "cifs"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, data in enumerate(files):
        (folder / f"c{i}.cif").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about every odd CIF; the result is what counts
        try:
            candidates, frame = load_candidates(folder)
        except CLEAR as exc:
            event("cif: clear error")
            assert str(exc).strip()
            return
    event("cif: read")
    assert frame is None and [c.id for c in candidates] == [f"c{i}" for i in range(len(files))]
    assert all(c.structure is not None and c.structure.is_ordered for c in candidates)


# -- campaign config -----------------------------------------------------------------------------------------

VALID: dict = {
    "name": "fuzz",
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Na", "Cl"], "max_atoms": 8},
    "seed_data": {"dataset": "mp20"},
    "candidates_per_round": 10,
    "batch_size": 2,
    "oracle": {"name": "density"},
    "rounds": 2,
}
KEYS = [*VALID, "seed", "proxy", "acquisition", "generator", "selection", "stopping", "success", "sun", "campaign_dir",
        "store_url", "tracking", "runner", "settings", "name", "elements", "kind", "goal", "value", "at_most"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True),
                    st.text(max_size=10), st.sampled_from(["Na", "Xx", "cubic", "ucb", "density", "chgnet", "mp20", "-1",
                                                          "postgresql://u:p@h/db", "sqlite:///x.db", "local", "dask"]))
yaml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6),
                                                                            inner, max_size=4)), max_leaves=12)


def _to_yaml(value: object, indent: int = 0) -> str:
    """A deliberately hand-written YAML emitter (duplicate keys, odd scalars) so inputs are not all well formed."""
    import json

    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "\n" + "\n".join(f"{pad}{json.dumps(str(k))}: {_to_yaml(v, indent + 2)}" for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n" + "\n".join(f"{pad}- {_to_yaml(v, indent + 2).lstrip()}" for v in value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return "null"


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["edited", "edited", "edited", "tree", "text"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "tree":
        return _to_yaml(draw(yaml_values)).lstrip("\n")
    data = {k: v for k, v in VALID.items()}
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "delete", "set_nested"]))
        key = draw(st.sampled_from(KEYS))
        if action == "delete":
            data.pop(key, None)
        elif action == "set":
            data[key] = draw(yaml_values)
        else:
            section = draw(st.sampled_from(["search_space", "oracle", "seed_data", "proxy", "runner", "tracking"]))
            inner = data.get(section) if isinstance(data.get(section), dict) else {}
            data[section] = {**inner, draw(st.sampled_from(KEYS)): draw(yaml_values)}
    text = _to_yaml(data).lstrip("\n")
    if draw(st.booleans()):  # a duplicate top-level key, or a stray line
        text += "\n" + draw(st.sampled_from(['"rounds": 3', '"name": "x"', "\t- oops", ": :", "[unclosed"]))
    return text


@FUZZ
@given(text=config_texts())
def test_fuzz_config_loader(scratch: Path, text: str, monkeypatch_env: None) -> None:
    path = scratch / "campaign.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path)
        validate_oracle_settings(cfg, source=str(path))
    except ConfigError as exc:
        event("config: clear error")
        assert str(exc).strip() and "Traceback" not in str(exc)
        return
    event("config: valid")
    assert isinstance(cfg, CampaignConfig)


@pytest.fixture(scope="module")
def monkeypatch_env() -> Iterator[None]:
    """The config reads MATLOOP_STORE_URL / MLFLOW_TRACKING_URI only when resolving; keep them out anyway."""
    saved = {k: os.environ.pop(k) for k in ("MATLOOP_STORE_URL", "MLFLOW_TRACKING_URI") if k in os.environ}
    yield
    os.environ.update(saved)


# -- job-folder naming ---------------------------------------------------------------------------------------

ids = st.one_of(st.text(max_size=80), st.text(max_size=6000), st.sampled_from([".", "..", "", "/", "a/../..", "~",
                                                                                "a;b", "a_b", "A_B", "\x00", "CON"]))


@FUZZ
@given(a=ids, b=ids, attempt=st.integers(0, 1000))
def test_fuzz_job_names_are_safe_bounded_and_collision_free(scratch: Path, a: str, b: str, attempt: int) -> None:
    name = job_name(a)
    assert 0 < len(name) <= JOB_NAME_PREFIX_CHARS + 17
    assert name not in (".", "..") and not name.startswith(".") and "/" not in name and "\x00" not in name
    assert all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in name)
    assert (job_name(a) == job_name(b)) == (a == b)
    path = job_dir(scratch / "root", a, attempt)
    assert path.parent.parent == scratch / "root" and path.name == f"attempt-{attempt}"
    assert Path(os.path.normpath(path)).is_relative_to(scratch / "root")


def test_fuzz_candidates_with_any_id_are_accepted_by_the_queue_helpers() -> None:
    """Ids that are not file names are still candidate ids (the table keeps them as given)."""
    from tests.oracles.helpers import nacl_crystal

    weird = ["..", "a/b", "x" * 5000, "é", ""]
    assert [Candidate.from_crystal(nacl_crystal(id=i or "row-0")).id for i in weird] == [i or "row-0" for i in weird]
