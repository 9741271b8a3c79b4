"""Campaign plots and structure previews from real data: the mp20+matbench hull of Na-Cl, a rock-salt CIF."""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

from orchestration import plots
from orchestration.campaign.report import _md_link, structure_previews

NACL = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _png(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_structure_previews_beside_the_cif(tmp_path: Path) -> None:
    cif = NACL.to(fmt="cif")
    paths = structure_previews(cif, candidate_id="r000-00001", out_dir=tmp_path)
    assert sorted(p.name for p in paths) == ["r000-00001.png", "r000-00001.txt"]
    text = (tmp_path / "r000-00001.txt").read_text()
    assert text.startswith("r000-00001: NaCl (Fm-3m), 8 atoms") and "--- CIF ---" in text and "_cell_length_a" in text
    width, height = _png(tmp_path / "r000-00001.png")
    assert width >= 800 and height >= 300


def test_reference_hull_and_e_above_hull_plots(tmp_path: Path) -> None:
    from oracles.reference import load_reference

    ref = load_reference("mp20+matbench")
    diagram = ref.phase_diagram(frozenset({"Na", "Cl"}))
    hull_line = [(e.composition.get_atomic_fraction("Na"), diagram.get_form_energy_per_atom(e)) for e in diagram.stable_entries]
    assert min(y for _, y in hull_line) < -2.0  # NaCl, about -2.1 eV/atom on the MP2020 scale
    ref_points = [(e.composition.get_atomic_fraction("Na"), e.e_form) for e in ref.system_entries(frozenset({"Na", "Cl"}))]
    out = plots.binary_hull(("Cl", "Na"), hull_line=hull_line, reference_points=ref_points,
                            points_by_round={0: [(0.5, -1.9), (0.25, -1.0)], 1: [(0.5, -2.05)]},
                            reference="mp20+matbench", out=tmp_path / "hull_Cl-Na.png")
    assert _png(out) == (880, 550)
    hist = plots.e_above_hull_by_round({0: [0.3, 0.05, float("nan")], 1: [-0.02, 2.5]}, reference="mp20+matbench",
                                       stable_at_most=0.1, out=tmp_path / "e_above_hull_by_round.png")
    assert _png(hist) == (880, 495)


def test_markdown_links_only_a_leading_url() -> None:
    assert _md_link("http://h/#/x?y=1 (run r)") == "[http://h/#/x?y=1](http://h/#/x?y=1) (run r)"
    assert _md_link("run r of experiment e") == "run r of experiment e"
