"""Independent validity checks of sampled crystals (the acceptance checks of the generator).

Each check uses the reference tool directly, not the generator's own tables:
``smact.screening.smact_validity(..., include_alloys=False)``, ``pyxtal().from_random(3, sg,
species, counts)``, and the lattice-system relations of the space group.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from collections.abc import Sequence

import numpy as np
from pymatgen.core import Composition

from discovery.crystal import Crystal, cell_volume
from discovery.symmetry import is_wyckoff_compatible, space_group

TOL = 1e-6


def smact_ok(crystal: Crystal) -> bool:
    from smact.screening import smact_validity

    return bool(smact_validity(Composition(crystal.counts), include_alloys=False))


class _PyxtalTimeout(Exception):
    pass


def pyxtal_ok(crystal: Crystal, *, seed: int = 0, timeout_s: int | None = 60) -> bool:
    """True when ``pyxtal().from_random(3, sg, species, counts)`` places the composition (no lattice
    given) within ``timeout_s`` seconds (SIGALRM; main thread only). pyxtal's random placement can
    give up ("long time to generate structure") on compositions that crowd low-freedom positions
    even though they are Wyckoff-compatible; such cases count as failures here."""
    from pyxtal import pyxtal

    species = list(crystal.counts)
    counts = [crystal.counts[s] for s in species]
    use_alarm = timeout_s is not None and threading.current_thread() is threading.main_thread()

    def _raise(*_: object) -> None:
        raise _PyxtalTimeout

    previous = signal.signal(signal.SIGALRM, _raise) if use_alarm else None
    try:
        if use_alarm:
            signal.alarm(int(timeout_s))  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xtal = pyxtal()
            xtal.from_random(3, crystal.space_group, species, counts, seed=seed)
        return bool(xtal.valid)
    except Exception:
        return False
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def lattice_ok(crystal: Crystal) -> bool:
    """Lattice parameters obey the space group's lattice system and give a cell of positive volume."""
    a, b, c, al, be, ga = crystal.lattice
    system = space_group(crystal.space_group).lattice_system

    def eq(x: float, y: float) -> bool:
        return math.isclose(x, y, rel_tol=TOL, abs_tol=TOL)

    rules = {
        "cubic": eq(a, b) and eq(b, c) and eq(al, 90) and eq(be, 90) and eq(ga, 90),
        "tetragonal": eq(a, b) and eq(al, 90) and eq(be, 90) and eq(ga, 90),
        "hexagonal": eq(a, b) and eq(al, 90) and eq(be, 90) and eq(ga, 120),
        "orthorhombic": eq(al, 90) and eq(be, 90) and eq(ga, 90),
        "monoclinic": eq(al, 90) and eq(ga, 90),
        "triclinic": True,
    }
    vol = float(cell_volume(np.array([crystal.lattice]))[0])
    return bool(rules[system]) and math.isfinite(vol) and vol > 0


def _pyxtal_pair(job: tuple[int, tuple[tuple[str, int], ...], int, int | None]) -> bool:
    sg, counts, seed, timeout_s = job
    return pyxtal_ok(Crystal(sg, dict(counts), 5, 5, 5, 90, 90, 90), seed=seed, timeout_s=timeout_s)


def validity_report(
    crystals: Sequence[Crystal], *, pyxtal_max: int | None = 300, seed: int = 0, pyxtal_timeout_s: int | None = 60,
    processes: int = 1,
) -> dict[str, float]:
    """Fractions of ``crystals`` passing each check. pyxtal runs on distinct (space group,
    composition) pairs only (the lattice plays no part in it), at most ``pyxtal_max`` of them chosen
    at random (``None``: all), since one call takes 0.01–10 s; ``processes`` > 1 spreads the pyxtal
    calls over a process pool. Species go to pyxtal in the crystal's order (canonical
    electronegativity order for generated crystals)."""
    n = len(crystals)
    if not n:
        return {"smact": math.nan, "pyxtal": math.nan, "lattice": math.nan, "unique": math.nan}
    # distinct pairs; each keeps the crystal's own species order (canonical for generated crystals),
    # which is the order the decodability rule guarantees (discovery.symmetry_decode)
    by_key = {(c.space_group, tuple(sorted(c.counts.items()))): (c.space_group, tuple(c.counts.items())) for c in crystals}
    pairs = [by_key[k] for k in sorted(by_key)]
    rng = np.random.default_rng(seed)
    if pyxtal_max is not None and len(pairs) > pyxtal_max:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), pyxtal_max, replace=False))]
    jobs = [(sg, counts, seed, pyxtal_timeout_s) for sg, counts in pairs]
    if processes > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pyx = pool.map(_pyxtal_pair, jobs, chunksize=1)
    else:
        pyx = [_pyxtal_pair(job) for job in jobs]
    keys = {(c.space_group, tuple(sorted(c.counts.items())), tuple(round(x, 6) for x in c.lattice)) for c in crystals}
    return {
        "smact": float(np.mean([smact_ok(c) for c in crystals])),
        "pyxtal": float(np.mean(pyx)),
        "pyxtal_checked": float(len(pairs)),
        "lattice": float(np.mean([lattice_ok(c) for c in crystals])),
        "wyckoff": float(np.mean([is_wyckoff_compatible(c.space_group, c.counts.values()) for c in crystals])),
        "unique": len(keys) / n,
    }
