"""Loaders that turn real sources into labelled crystal tables, with a report of every skipped row.

>>> data, report = load_mp20("train", "band_gap")
>>> data.targets.shape, report.summary()
"""

from discovery.datasets.base import (
    MAX_Z,
    VOCABULARY,
    CompositionSet,
    LabeledSet,
    Loaded,
    LoadedCompositions,
    SkippedRow,
    SkipReport,
    out_of_vocabulary,
)
from discovery.datasets.mp20 import MP20_TARGETS, MP20Split, MP20Target, load_mp20
from discovery.datasets.sources import (
    EXACT_COUNTS_KEY,
    OBELIX_TARGET,
    CompositionOnlyName,
    exact_counts,
    load_cif_folder,
    load_composition_only,
    load_crystal_csv,
    load_obelix,
    parse_conductivity,
)
from discovery.datasets.structures import RowError, crystal_from_structure, structure_from_cif

__all__ = [
    "EXACT_COUNTS_KEY", "MAX_Z", "MP20_TARGETS", "OBELIX_TARGET", "VOCABULARY", "CompositionOnlyName",
    "CompositionSet", "LabeledSet", "Loaded", "LoadedCompositions", "MP20Split", "MP20Target", "RowError",
    "SkipReport", "SkippedRow", "crystal_from_structure", "exact_counts", "load_cif_folder",
    "load_composition_only", "load_crystal_csv", "load_mp20", "load_obelix", "out_of_vocabulary",
    "parse_conductivity", "structure_from_cif",
]
