"""Exact look-ahead masks for the composition subspace.

Hard constraints (every terminal composition satisfies all of them):

* SMACT validity with ICSD24 oxidation states and the Pauling test — exactly
  ``smact_validity(composition, include_alloys=False)``;
* exact Wyckoff compatibility with the chosen space group (:mod:`discovery.symmetry`), restricted
  to compositions pyxtal's random placement decodes reliably (:mod:`discovery.symmetry_decode`,
  a deliberate deviation: the rule's algebra has one pessimistic successor per state and count);
* limits: distinct elements in ``[min_elements, max_elements]``, atoms per element in
  ``[1, max_per_element]``, total atoms ``≤ max_atoms``.

Elements are added in a canonical order (Pauling electronegativity ascending, see
:func:`discovery.chemistry.canonical_order`), each at most once, with a count. In that order the
Pauling test becomes a cut — cations first, then anions — so a small dynamic programme over
(element index, phase, elements left, Wyckoff resource state, charge) tells, for every partial
composition, the fewest atoms any valid completion needs. An action is allowed only if the state
it leads to has a completion within the budget, so **no trajectory can get stuck** and **every
valid composition stays reachable** (by adding its elements in canonical order).

Phases: ``C0`` (cation phase, no cation chosen yet in the current electronegativity group),
``C1`` (cation phase, a cation chosen in the current group: an anion of equal electronegativity
would fail the strict Pauling test), ``A`` (anion phase).

Shapes: ``Q = 2 * q_max + 1`` charge bins (index ``q + q_max``), ``R`` Wyckoff resource states,
``J = max_elements + 1`` counts of additional elements, ``N`` elements, ``C = max_per_element``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from discovery.chemistry import canonical_order, element_chem
from discovery.symmetry import WyckoffAlgebra
from discovery.symmetry_decode import decodable_algebra

if TYPE_CHECKING:
    from discovery.gfn.tables import TableFile

C0, C1, A = 0, 1, 2
INF = np.int16(10_000)
NONE = 255  # "no completion" in the uint8 tables
ROW_CACHE = 400_000  # rows kept per Wyckoff algebra (352 bytes each at paper scale)


@dataclass(frozen=True)
class CompositionRules:
    """Limits of the composition subspace; ``elements`` is stored in canonical order."""

    elements: tuple[str, ...]
    max_elements: int = 5
    min_elements: int = 2
    max_per_element: int = 16
    max_atoms: int = 80

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError("elements: at least one element is needed")
        object.__setattr__(self, "elements", canonical_order(self.elements))
        if not 1 <= self.min_elements <= self.max_elements:
            raise ValueError(f"min_elements={self.min_elements} must be in 1..max_elements={self.max_elements}")
        if not 1 <= self.max_per_element <= 64:
            raise ValueError(f"max_atoms_per_element={self.max_per_element} must be in 1..64")
        if not 1 <= self.max_atoms <= 250:
            raise ValueError(f"max_atoms={self.max_atoms} must be in 1..250")


@dataclass
class PrefixState:
    """A partial composition: ``triples`` is an (T, 3) int array of (phase, resource state, charge)."""

    last: int  # canonical index of the last element added, -1 at the start
    n_elements: int
    atoms: int
    triples: np.ndarray
    unary_ok: bool = False  # a single element is valid on its own (when min_elements == 1)
    counts: tuple[tuple[int, int], ...] = field(default=())  # (element index, count)


class _ElementTables:
    """Per-element data in canonical order (shared by all space groups)."""

    def __init__(self, rules: CompositionRules) -> None:
        chem = [element_chem(s) for s in rules.elements]
        self.n = len(chem)
        self.cation = [c.cation_states for c in chem]
        self.anion = [c.anion_states for c in chem]
        en = [c.electronegativity for c in chem]
        self.group = np.zeros(self.n, dtype=np.int64)
        for i in range(1, self.n):
            self.group[i] = self.group[i - 1] + (en[i] != en[i - 1])
        self.new_group = np.ones(self.n + 1, dtype=bool)
        for i in range(1, self.n):
            self.new_group[i] = self.group[i] != self.group[i - 1]
        self.max_state = max(max(abs(s) for s in c.oxidation_states) for c in chem)
        self.q_max = int(self.max_state * rules.max_per_element * max(1, rules.max_elements - 1))
        # options (N, O): oxidation state, phase after taking it, cation?, valid (padding is invalid)
        n_opt = max(len(c.oxidation_states) for c in chem)
        self.opt_sigma = np.zeros((self.n, n_opt), dtype=np.int64)
        self.opt_cat = np.zeros((self.n, n_opt), dtype=bool)
        self.opt_valid = np.zeros((self.n, n_opt), dtype=bool)
        for i, c in enumerate(chem):
            states = list(c.cation_states) + list(c.anion_states)
            self.opt_sigma[i, : len(states)] = states
            self.opt_cat[i, : len(c.cation_states)] = True
            self.opt_valid[i, : len(states)] = True
        self.opt_after = np.where(self.opt_cat, C1, A)

    def option_mask(self, phase: int, last_group: int) -> np.ndarray:
        """(N, O) options allowed after a prefix in ``phase`` whose last element is in ``last_group``."""
        if phase == A:
            return self.opt_valid & ~self.opt_cat
        if phase == C0:
            return self.opt_valid
        return self.opt_valid & (self.opt_cat | (self.group != last_group)[:, None])


class SpaceGroupConstraints:
    """Look-ahead tables for one Wyckoff algebra (shared by space groups with equal algebra).

    Built from the algebra (:meth:`build`) or read back from the table cache
    (:mod:`discovery.gfn.tables`). Budget-free spaces (``max_atoms ≥ max_elements · max_per_element``,
    like the paper's 5 · 16 ≤ 80) keep only bit tables: ``comp[n]`` (completable after ``n``
    elements, for :meth:`CompositionConstraints.step`) and ``dil[n]`` (which (element, count) actions
    keep a prefix of ``n`` elements completable, for the masks), each over the charge window that can
    still reach zero (:func:`charge_window`). Other spaces keep the uint8 table ``M`` of fewest atoms.
    """

    def __init__(self, rules: CompositionRules, elements: _ElementTables, *, key: object, start: int,
                 succ: np.ndarray, tables: dict[str, np.ndarray]) -> None:
        self.rules, self.el, self.key, self.start = rules, elements, key, int(start)
        self.succ = succ.astype(np.int64)  # (C + 1, R, S), padded with the dummy state R
        self.R = self.succ.shape[1]
        self.Q = 2 * elements.q_max + 1
        self.J = rules.max_elements  # a completion adds at most max_elements - 1 elements
        self.budget_free = rules.max_atoms >= rules.max_elements * rules.max_per_element
        self.tables = tables
        self._flat: np.ndarray | None = None
        self._plans: dict[tuple[int, int, int], np.ndarray] = {}
        self._row_cache: dict[tuple[int, int, int, int, int], np.ndarray] = {}
        # CompositionConstraints.step results by (counts so far, element, count): prefix states are
        # never mutated, so trajectories that share a prefix share its state
        self.step_cache: dict[tuple[object, ...], PrefixState] = {}

    @classmethod
    def build(cls, rules: CompositionRules, algebra: WyckoffAlgebra, elements: _ElementTables) -> SpaceGroupConstraints:
        """Run the dynamic programme for one algebra (0.01–0.5 s at paper scale; :mod:`discovery.gfn.lookahead`)."""
        from discovery.gfn.lookahead import TableBuilder

        b = TableBuilder(rules, algebra, elements)
        return cls(rules, elements, key=algebra.key, start=algebra.start, succ=b.succ, tables=b.run())

    def fits_alone(self, n: int) -> bool:
        """``n`` atoms of one element fit the Wyckoff positions (unary compositions)."""
        return 1 <= n <= self.rules.max_per_element and bool((self.succ[n, self.start] < self.R).any())

    # -- queries ----------------------------------------------------------------------------------
    def completable(self, n_after: int, element: int, after: np.ndarray, succ: np.ndarray, q: np.ndarray,
                    budget: int) -> np.ndarray:
        """Broadcast bool: a prefix of ``n_after`` elements ending with ``element``, in phase ``after``,
        resource state ``succ`` and charge ``q``, has a valid completion of at most ``budget`` atoms."""
        if "M" in self.tables:
            qi = self.el.q_max - q
            ok = (qi >= 0) & (qi < self.Q)
            vals = self.tables["M"][n_after - 1][element + 1][after, succ, np.clip(qi, 0, self.Q - 1)]
            return ok & (vals <= budget)
        w = charge_window(self.rules, self.el, n_after)
        b = w - q  # completion charge −q
        ok = (b >= 0) & (b <= 2 * w)
        b = np.clip(b, 0, 2 * w)
        byte = self.tables[f"comp{n_after}"][element + 1][after, succ, b >> 3]
        return ok & ((byte >> (7 - (b & 7))) & 1).astype(bool)

    @property
    def flat(self) -> np.ndarray:
        """M flattened per n_after with the charge axis padded by Q on both sides (3Q bins, offset Q):
        any shifted prefix charge gathers in range, outside the table it reads "none" (built on first use)."""
        if self._flat is None:
            M = self.tables["M"]
            pad = np.full((*M.shape[:4], self.Q), NONE, dtype=np.uint8)
            self._flat = np.concatenate([pad, M, pad], axis=4).reshape(len(M), -1)
        return self._flat

    def _plan(self, n_elements: int, r: int, variant: int) -> np.ndarray:
        """Gather plan of :meth:`row`: (N, C, O·S) flat indices into ``flat[n_elements]`` for prefix
        charge q_max (add ``q_max − q`` for another charge). ``variant`` −1: anions only (phase A),
        −2: every option (phase C0), g ≥ 0: phase C1 after a cation of electronegativity group g."""
        key = (n_elements, r, variant)
        plan = self._plans.get(key)
        if plan is None:
            el, C, Q = self.el, self.rules.max_per_element, self.Q
            phase, group = {-1: (A, -1), -2: (C0, -1)}.get(variant, (C1, variant))
            counts = np.arange(1, C + 1)
            succ = self.succ[1:, r]  # (C, S)
            e1 = np.arange(1, el.n + 1)[:, None, None, None]
            base = ((e1 * 3 + el.opt_after[:, None, :, None]) * (self.R + 1) + succ[None, :, None, :]) * (3 * Q)
            shift = counts[None, :, None] * el.opt_sigma[:, None, :]  # (N, C, O)
            plan = base + (Q - shift)[..., None]  # index of charge bin q_max − q − nσ when q = 0, plus Q
            ok = el.option_mask(phase, group)[:, None, :, None] & (succ < self.R)[None, :, None, :]
            sentinel = self.flat.shape[1] - 1  # always "none" (right padding)
            plan = np.where(ok, plan, sentinel - 2 * self.el.q_max).reshape(el.n, C, -1)
            if self.flat.shape[1] < 2**31 - 1:
                plan = plan.astype(np.int32)
            self._plans[key] = plan
        return plan

    def completable_mask(self, n_elements: int, triples: np.ndarray, last_group: int) -> np.ndarray:
        """(N, C) bool: actions with a valid completion from any prefix triple (budget-free spaces)."""
        dil = self.tables[f"dil{n_elements}"]
        w = charge_window(self.rules, self.el, n_elements)
        triples = triples[np.abs(triples[:, 2]) <= w]  # no completion outside the window
        C = self.rules.max_per_element
        ph, r, q = triples.T
        cI = np.arange(C)[:, None, None]
        other_group = np.packbits(self.el.group != last_group)
        acc = np.zeros((C, dil.shape[-1]), dtype=np.uint8)
        # cations after C0/C1 prefixes; anions after C0/A prefixes, or after C1 from another EN group
        for kind, rows, allowed in ((0, ph != A, None), (1, ph != C1, None), (1, ph == C1, other_group)):
            if not rows.any():
                continue
            sI = self.succ[1:, r[rows]].transpose(0, 2, 1)  # (C, S, T'); padded successors: empty state R
            got = dil[kind][cI, sI, (q[rows] + w)[None, None, :]]  # (C, S, T', ⌈N/8⌉)
            got = np.bitwise_or.reduce(got.reshape(C, -1, got.shape[-1]), axis=1)
            acc |= got if allowed is None else got & allowed
        return np.unpackbits(acc, axis=1, count=self.el.n).astype(bool).T

    def row(self, n_elements: int, phase: int, r: int, q: int, last_group: int) -> np.ndarray:
        """(N, C) uint8 fewest total atoms (this element included) of a valid completion after adding
        element e with count n to a prefix with triple (phase, r, q); 255 where the action leads nowhere.
        Cached: the rows of a long run are reused across states."""
        key = (n_elements, phase, r, q, last_group if phase == C1 else -1)
        out = self._row_cache.get(key)
        if out is not None:
            return out
        C = self.rules.max_per_element
        if n_elements >= self.rules.max_elements:
            out = np.full((self.el.n, C), NONE, dtype=np.uint8)
        else:
            variant = -1 if phase == A else (-2 if phase == C0 else last_group)
            idx = self._plan(n_elements, r, variant) + (self.el.q_max - q)
            best = self.flat[n_elements].take(idx).min(axis=2).astype(np.int16)
            out = np.minimum(best + np.arange(1, C + 1, dtype=np.int16), NONE).astype(np.uint8)
            out[best >= NONE] = NONE
        if len(self._row_cache) > ROW_CACHE:
            self._row_cache.clear()
        self._row_cache[key] = out
        return out


def charge_window(rules: CompositionRules, el: _ElementTables, n_elements: int) -> int:
    """Largest |charge| a prefix of ``n_elements`` elements can have and still be completed to zero:
    each element brings at most ``max_state · max_per_element``, and at most ``max_elements − n``
    elements remain to cancel it."""
    return el.max_state * rules.max_per_element * max(0, min(n_elements, rules.max_elements - n_elements))


class CompositionConstraints:
    """Masks and transitions of the composition subspace for any space group.

    ``CompositionConstraints(rules)`` builds the tables of each space group's algebra on first use;
    :meth:`cached` reads them from the on-disk table cache (:mod:`discovery.gfn.tables`), building and
    storing every space group's tables once per search space where the cache has none."""

    def __init__(self, rules: CompositionRules, *, tables: TableFile | None = None) -> None:
        self.rules = rules
        self.el = _ElementTables(rules)
        self._file = tables
        self._by_key: dict[object, SpaceGroupConstraints] = {}
        self._sg_key: dict[int, object] = {}

    @classmethod
    def cached(cls, rules: CompositionRules) -> CompositionConstraints:
        """Tables from the cache (the user cache, then the files shipped in ``discovery/data``); where
        neither has this space, every table is built now (15–30 s at paper scale) and written to the
        user cache for the next process. Only budget-free spaces are cached; others build lazily."""
        if rules.max_atoms < rules.max_elements * rules.max_per_element:
            return cls(rules)
        from discovery.gfn.tables import open_tables, store_tables

        found = open_tables(rules)
        if found is not None:
            return cls(rules, tables=found)
        out = cls(rules)
        store_tables(rules, out.packed_arrays())
        return out

    @property
    def n_elements(self) -> int:
        return self.el.n

    @property
    def from_cache(self) -> bool:
        return self._file is not None

    def table_key(self, sg: int) -> object:
        """Space groups with equal keys share their tables."""
        key = self._sg_key.get(sg)
        if key is None:
            key = int(self._file.arrays["sg_key"][sg]) if self._file is not None else \
                decodable_algebra(sg, self.rules.max_per_element).key
            self._sg_key[sg] = key
        return key

    def for_space_group(self, sg: int) -> SpaceGroupConstraints:
        key = self.table_key(sg)
        tables = self._by_key.get(key)
        if tables is None:
            if self._file is not None:  # views into the packed arrays of the file
                arr = self._file.arrays
                off, end = (int(x) for x in arr["offset"][int(key) : int(key) + 2])  # type: ignore[call-overload]
                views = {name: a[:, :, off:end] for name, a in arr.items() if name.startswith(("comp", "dil"))}
                tables = SpaceGroupConstraints(self.rules, self.el, key=key, start=int(arr["start"][sg]) - off,
                                               succ=np.asarray(arr["succ"][:, off : end - 1]) - off, tables=views)
            else:
                alg = decodable_algebra(sg, self.rules.max_per_element)
                tables = SpaceGroupConstraints.build(self.rules, alg, self.el)
            self._by_key[key] = tables
        return tables

    def packed_arrays(self) -> dict[str, np.ndarray]:
        """Every space group's tables packed along one resource-state axis (:mod:`discovery.gfn.batched`):
        ``offset`` (K + 1) where each algebra's states start (its last state is its dummy), ``succ``
        (C + 1, G, S) global successor states, ``start`` (231) global start states, ``sg_key``,
        ``feasible``, and the bit tables ``comp{n}`` / ``dil{n}`` concatenated on their state axis."""
        if self._file is not None:
            return self._file.arrays
        keys: list[object] = []
        out: dict[str, np.ndarray] = {"sg_key": np.full(231, -1, dtype=np.int16), "feasible": np.zeros(231, dtype=bool),
                                      "start": np.full(231, -1, dtype=np.int64)}
        parts: dict[str, list[np.ndarray]] = {}
        offset = [0]
        for sg in range(1, 231):
            t = self.for_space_group(sg)
            if t.key not in keys:
                keys.append(t.key)
                R, off = t.R, offset[-1]
                succ = np.full((t.succ.shape[0], R + 1, t.succ.shape[2]), R, dtype=np.int64)
                succ[:, :R] = t.succ
                parts.setdefault("succ", []).append(succ + off)  # the dummy state R maps to itself
                for name, arr in t.tables.items():
                    parts.setdefault(name, []).append(arr)
                offset.append(off + R + 1)
            k = keys.index(t.key)
            out["sg_key"][sg], out["start"][sg] = k, offset[k] + t.start
            out["feasible"][sg] = self.space_group_feasible(sg)
        width = max(p.shape[2] for p in parts["succ"])
        parts["succ"] = [np.pad(p, ((0, 0), (0, 0), (0, width - p.shape[2])), mode="edge") for p in parts["succ"]]
        out.update({name: np.concatenate(ps, axis=1 if name == "succ" else 2) for name, ps in parts.items()})
        out["succ"] = out["succ"].astype(np.int32)
        out["offset"] = np.array(offset, dtype=np.int64)
        return out

    def initial(self, sg: int) -> PrefixState:
        t = self.for_space_group(sg)
        return PrefixState(-1, 0, 0, np.array([[C0, t.start, 0]], dtype=np.int64))

    def action_mask(self, sg: int, state: PrefixState) -> tuple[np.ndarray, bool]:
        """(N, C) bool mask of allowed (element, count) actions, and whether ending here is allowed."""
        t = self.for_space_group(sg)
        rules = self.rules
        budget = rules.max_atoms - state.atoms
        last_group = int(self.el.group[state.last]) if state.last >= 0 else -1
        mask = np.zeros((self.el.n, rules.max_per_element), dtype=bool)
        if len(state.triples) and state.n_elements == rules.max_elements - 1:
            mask = self._last_element_mask(t, state, budget, last_group)
        elif len(state.triples) and state.n_elements < rules.max_elements and t.budget_free:
            mask = t.completable_mask(state.n_elements, state.triples, last_group)
            mask &= (np.arange(1, rules.max_per_element + 1) <= budget)[None, :]
        elif len(state.triples) and state.n_elements < rules.max_elements:
            bound = self._upper_bound(t, state, budget, last_group)
            best = np.full(mask.shape, NONE, dtype=np.uint8)
            order = np.argsort(np.abs(state.triples[:, 2]), kind="stable")
            for ph, r, q in state.triples[order].tolist():
                np.minimum(best, t.row(state.n_elements, ph, r, q, last_group), out=best)
                mask = best <= budget
                if np.array_equal(mask, bound):
                    break
        mask[: state.last + 1] = False
        if state.n_elements == 0 and rules.min_elements <= 1:
            # a single element is SMACT-valid on its own: allowed when its count fits the Wyckoff positions
            for n in range(1, min(rules.max_per_element, rules.max_atoms) + 1):
                if t.fits_alone(n):
                    mask[:, n - 1] = True
        can_end = state.n_elements >= rules.min_elements and bool((state.triples[:, 2] == 0).any())
        can_end = can_end or state.unary_ok
        return mask, can_end

    def _upper_bound(self, t: SpaceGroupConstraints, state: PrefixState, budget: int, last_group: int) -> np.ndarray:
        """(N, C) actions no triple can allow are False: earlier elements, counts that fit no Wyckoff
        resource state or the atom budget, oxidation-state signs the phases exclude."""
        el, C = self.el, self.rules.max_per_element
        rs = np.unique(state.triples[:, 1])
        counts_ok = (t.succ[1:, rs] < t.R).any(axis=(1, 2)) & (np.arange(1, C + 1) <= budget)
        options = np.zeros(el.opt_valid.shape, dtype=bool)
        for ph in np.unique(state.triples[:, 0]).tolist():
            options |= el.option_mask(ph, last_group)
        elems: np.ndarray = np.asarray(options.any(axis=1))
        elems[: state.last + 1] = False
        return elems[:, None] & counts_ok[None, :]

    def _last_element_mask(self, t: SpaceGroupConstraints, state: PrefixState, budget: int, last_group: int) -> np.ndarray:
        """(N, C) mask when one element slot is left: the element must make the charge exactly zero."""
        el, C = self.el, self.rules.max_per_element
        mask = np.zeros((el.n, C), dtype=bool)
        for ph in np.unique(state.triples[:, 0]).tolist():
            sel = state.triples[state.triples[:, 0] == ph]
            opts = el.option_mask(ph, last_group)  # (N, O)
            num = -sel[:, 2][:, None, None]  # (T, 1, 1)
            den = np.where(opts, el.opt_sigma, 1)[None]  # (1, N, O)
            n = num // den
            ok = opts[None] & (n * den == num) & (n >= 1) & (n <= min(C, budget))
            ti, ei, oi = np.nonzero(ok)
            nn = n[ti, ei, oi]
            fits = (t.succ[nn, sel[ti, 1]] < t.R).any(axis=1)
            mask[ei[fits], nn[fits] - 1] = True
        mask[: state.last + 1] = False
        return mask

    def step(self, sg: int, state: PrefixState, element: int, count: int) -> PrefixState:
        """The state after adding ``count`` atoms of canonical element ``element``; keeps only the
        (phase, resource, charge) triples from which a valid completion exists."""
        t = self.for_space_group(sg)
        cache_key = (state.counts, element, count)
        hit = t.step_cache.get(cache_key)
        if hit is not None:
            return hit
        el, rules = self.el, self.rules
        if element <= state.last or not 1 <= count <= rules.max_per_element:
            raise ValueError(f"action (element {element}, count {count}) is not allowed from this state")
        n_after = state.n_elements + 1
        atoms = state.atoms + count
        last_group = int(el.group[state.last]) if state.last >= 0 else -1
        ph, r, q = state.triples.T
        ph = np.where((ph == C1) & (el.group[element] != last_group), C0, ph)
        cat, sig, after = el.opt_cat[element], el.opt_sigma[element], el.opt_after[element]
        allowed = el.opt_valid[element][None, :] & np.where(cat[None, :], ph[:, None] != A, ph[:, None] != C1)  # (T, O)
        succ = t.succ[count, r]  # (T, S)
        q2 = q[:, None] + count * sig[None, :]  # (T, O)
        qi = el.q_max - q2
        ok = allowed[:, :, None] & (succ < t.R)[:, None, :] & ((qi >= 0) & (qi < t.Q))[:, :, None]
        keep = ok & t.completable(n_after, element, after[None, :, None], succ[:, None, :], q2[:, :, None],
                                  rules.max_atoms - atoms)
        ti, oi, si = np.nonzero(keep)
        key = np.unique((after[oi] * (t.R + 1) + succ[ti, si]) * t.Q + (q2[ti, oi] + el.q_max))
        triples = np.stack([key // (t.Q * (t.R + 1)), (key // t.Q) % (t.R + 1), key % t.Q - el.q_max], axis=1)
        unary_ok = state.n_elements == 0 and rules.min_elements <= 1 and t.fits_alone(count)
        if not len(triples) and not unary_ok:
            raise ValueError(f"action (element {element}, count {count}) leads to a dead end")
        out = PrefixState(element, n_after, atoms, triples, unary_ok, (*state.counts, (element, count)))
        if len(t.step_cache) > ROW_CACHE:
            t.step_cache.clear()
        t.step_cache[cache_key] = out
        return out

    def space_group_feasible(self, sg: int) -> bool:
        if self._file is not None:
            return bool(self._file.arrays["feasible"][sg])
        mask, can_end = self.action_mask(sg, self.initial(sg))
        return bool(mask.any()) or can_end
