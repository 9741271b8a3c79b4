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

import numpy as np

from discovery.chemistry import canonical_order, element_chem
from discovery.symmetry import WyckoffAlgebra
from discovery.symmetry_decode import decodable_algebra

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
        max_state = max(max(abs(s) for s in c.oxidation_states) for c in chem)
        self.q_max = int(max_state * rules.max_per_element * max(1, rules.max_elements - 1))
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
    """Look-ahead tables for one Wyckoff algebra (shared by space groups with equal algebra)."""

    def __init__(self, rules: CompositionRules, algebra: WyckoffAlgebra, elements: _ElementTables) -> None:
        self.rules, self.alg, self.el = rules, algebra, elements
        self.R = algebra.n_states
        self.Q = 2 * elements.q_max + 1
        self.J = rules.max_elements  # a completion adds at most max_elements - 1 elements
        C = rules.max_per_element
        # successor table padded with a dummy state R whose values are INF: (C + 1, R, S)
        width = max(1, max((len(t) for n in range(1, C + 1) for t in algebra.transitions[n]), default=1))
        self.succ = np.full((C + 1, self.R, width), self.R, dtype=np.int64)
        for n in range(1, C + 1):
            for r, nxt in enumerate(algebra.transitions[n]):
                self.succ[n, r, : len(nxt)] = nxt
        S = self._suffix_tables()
        # M[k - 1][i, phase, r, q] (uint8, 255 = none): fewest atoms of a completion of a composition
        # that has k elements, using elements with canonical index ≥ i. S itself is not kept.
        M = np.stack([self._completion_min(S, k) for k in range(1, rules.max_elements + 1)])
        # pad a dummy resource state R (no completion) so that padded successors gather "none"
        self.M = np.concatenate([M, np.full(M[:, :, :, :1].shape, NONE, dtype=np.uint8)], axis=3)
        # the same, flattened per n_after with the charge axis padded by Q on both sides (3Q bins,
        # offset Q): any shifted prefix charge gathers in range, outside the table it reads "none"
        pad = np.full((*self.M.shape[:4], self.Q), NONE, dtype=np.uint8)
        self.flat = np.concatenate([pad, self.M, pad], axis=4).reshape(len(self.M), -1)
        self._plans: dict[tuple[int, int, int], np.ndarray] = {}
        self._row_cache: dict[tuple[int, int, int, int, int], np.ndarray] = {}
        # budget-free spaces (max_atoms ≥ max_elements · max_per_element, like the paper's 5 · 16 ≤ 80):
        # boolean tables dilated over oxidation states, built lazily per number of elements
        self.budget_free = rules.max_atoms >= rules.max_elements * rules.max_per_element
        self._dilated: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # CompositionConstraints.step results by (counts so far, element, count): prefix states are
        # never mutated, so trajectories that share a prefix share its state
        self.step_cache: dict[tuple[object, ...], PrefixState] = {}

    # -- dynamic programme ----------------------------------------------------------------------
    def _shift(self, x: np.ndarray, delta: int) -> np.ndarray:
        """out[..., q] = x[..., q - delta] along the last (charge) axis, INF where undefined."""
        out = np.full_like(x, INF)
        if abs(delta) >= self.Q:
            return out
        if delta >= 0:
            out[..., delta:] = x[..., : self.Q - delta]
        else:
            out[..., :delta] = x[..., -delta:]
        return out

    def _wyckoff_min(self, y: np.ndarray, n: int) -> np.ndarray:
        """y: (J, R, Q) values at successor states → (J, R, Q) min over successors of each state."""
        pad = np.concatenate([y, np.full_like(y[:, :1], INF)], axis=1)
        return np.asarray(pad[:, self.succ[n], :].min(axis=2))

    def _suffix_tables(self) -> np.ndarray:
        """S[i, phase, j, r, q]: fewest atoms of exactly ``j`` more elements with canonical index ≥ i,
        entered in ``phase``, from resource state ``r``, adding charge ``q - q_max``; INF if none."""
        el, J, R, Q = self.el, self.J, self.R, self.Q
        S = np.full((el.n + 1, 3, J, R, Q), INF, dtype=np.int16)
        S[el.n, :, 0, :, el.q_max] = 0
        for i in range(el.n - 1, -1, -1):
            nxt = S[i + 1]
            cur = nxt.copy()  # skip element i
            for n in range(1, self.rules.max_per_element + 1):
                for phase_after, states in ((C1, el.cation[i]), (A, el.anion[i])):
                    if not states:
                        continue
                    y = np.full((J, R, Q), INF, dtype=np.int16)
                    y[1:] = nxt[phase_after, :-1]
                    best = np.full_like(y, INF)
                    for s in states:
                        np.minimum(best, self._shift(y, n * s), out=best)
                    best = np.minimum(self._wyckoff_min(best, n) + np.int16(n), INF)
                    if phase_after == C1:  # a cation: allowed from C0 and C1
                        np.minimum(cur[C0], best, out=cur[C0])
                        np.minimum(cur[C1], best, out=cur[C1])
                    else:  # an anion: allowed from C0 and A (C1 of the same group fails Pauling)
                        np.minimum(cur[C0], best, out=cur[C0])
                        np.minimum(cur[A], best, out=cur[A])
            if el.new_group[i]:
                cur[C1] = cur[C0]
            S[i] = cur
        return S

    # -- queries ----------------------------------------------------------------------------------
    def _completion_min(self, S: np.ndarray, n_after: int) -> np.ndarray:
        lo = max(0, self.rules.min_elements - n_after)
        hi = self.rules.max_elements - n_after
        if hi < lo:
            return np.full(S[:, :, 0].shape, NONE, dtype=np.uint8)
        return np.minimum(S[:, :, lo : hi + 1].min(axis=2), NONE).astype(np.uint8)

    def completion_min(self, n_after: int) -> np.ndarray:
        """(N + 1, 3, R, Q) uint8 fewest atoms of a completion of a composition with ``n_after``
        elements, using elements with index ≥ i; 255 if none."""
        return self.M[n_after - 1]

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

    def dilated(self, n_elements: int) -> tuple[np.ndarray, np.ndarray]:
        """Two (C, R + 1, Q, N) bool tables (elements bit-packed into ⌈N/8⌉ bytes) for prefixes with ``n_elements`` elements: entry (n, s,
        q + q_max, e) is True when adding n atoms of element e as a cation (first table) / an anion
        (second), landing in resource state s, leaves a prefix of charge q with a valid completion."""
        out = self._dilated.get(n_elements)
        if out is None:
            el, C, Q, qm = self.el, self.rules.max_per_element, self.Q, self.el.q_max
            comp = self.M[n_elements] < NONE  # (N + 1, 3, R + 1, Q): completable, by completion-charge bin
            # by prefix-charge-after bin b' (charge q' = b' − q_max needs completion charge −q', bin 2·q_max − b')
            comp = comp[..., ::-1]
            pad = np.zeros((*comp.shape[:3], Q), dtype=bool)
            comp = np.concatenate([pad, comp, pad], axis=3)  # offset Q
            cat = np.zeros((C, self.R + 1, Q, el.n), dtype=bool)
            an = np.zeros_like(cat)
            for e in range(el.n):
                for n in range(1, C + 1):
                    for o in np.flatnonzero(el.opt_valid[e]).tolist():
                        sigma = int(el.opt_sigma[e, o])
                        start = Q + n * sigma  # prefix charge q → after-charge bin q + nσ + q_max
                        target = cat if el.opt_cat[e, o] else an
                        target[n - 1, :, :, e] |= comp[e + 1, int(el.opt_after[e, o]), :, start : start + Q]
            out = (np.packbits(cat, axis=3), np.packbits(an, axis=3))  # elements bit-packed: (C, R + 1, Q, ⌈N/8⌉)
            self._dilated[n_elements] = out
            del qm
        return out

    def completable_mask(self, n_elements: int, triples: np.ndarray, last_group: int) -> np.ndarray:
        """(N, C) bool: actions with a valid completion from any prefix triple (budget-free spaces)."""
        cat, an = self.dilated(n_elements)
        C = self.rules.max_per_element
        ph, r, q = triples.T
        cI = np.arange(C)[:, None, None]
        other_group = np.packbits(self.el.group != last_group)
        acc = np.zeros((C, cat.shape[3]), dtype=np.uint8)
        # cations after C0/C1 prefixes; anions after C0/A prefixes, or after C1 from another EN group
        for table, rows, allowed in ((cat, ph != A, None), (an, ph != C1, None), (an, ph == C1, other_group)):
            if not rows.any():
                continue
            sI = self.succ[1:, r[rows]].transpose(0, 2, 1)  # (C, S, T'); padded successors: empty state R
            got = table[cI, sI, (q[rows] + self.el.q_max)[None, None, :]]  # (C, S, T', ⌈N/8⌉)
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


class CompositionConstraints:
    """Masks and transitions of the composition subspace for any space group."""

    def __init__(self, rules: CompositionRules) -> None:
        self.rules = rules
        self.el = _ElementTables(rules)
        self._by_key: dict[tuple[object, ...], SpaceGroupConstraints] = {}
        self._sg_key: dict[int, tuple[object, ...]] = {}

    @property
    def n_elements(self) -> int:
        return self.el.n

    def for_space_group(self, sg: int) -> SpaceGroupConstraints:
        key = self._sg_key.get(sg)
        if key is None:
            key = decodable_algebra(sg, self.rules.max_per_element).key
            self._sg_key[sg] = key
        tables = self._by_key.get(key)
        if tables is None:
            tables = SpaceGroupConstraints(self.rules, decodable_algebra(sg, self.rules.max_per_element), self.el)
            self._by_key[key] = tables
        return tables

    def initial(self, sg: int) -> PrefixState:
        t = self.for_space_group(sg)
        return PrefixState(-1, 0, 0, np.array([[C0, t.alg.start, 0]], dtype=np.int64))

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
                if len(t.alg.successors(t.alg.start, n)):
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
        M = t.completion_min(n_after)[element + 1]  # (3, R + 1, Q)
        vals = M[after[None, :, None], succ[:, None, :], np.clip(qi, 0, t.Q - 1)[:, :, None]]
        keep = ok & (vals <= rules.max_atoms - atoms)
        ti, oi, si = np.nonzero(keep)
        key = np.unique((after[oi] * (t.R + 1) + succ[ti, si]) * t.Q + (q2[ti, oi] + el.q_max))
        triples = np.stack([key // (t.Q * (t.R + 1)), (key // t.Q) % (t.R + 1), key % t.Q - el.q_max], axis=1)
        unary_ok = state.n_elements == 0 and rules.min_elements <= 1 and bool(t.alg.successors(t.alg.start, count))
        if not len(triples) and not unary_ok:
            raise ValueError(f"action (element {element}, count {count}) leads to a dead end")
        out = PrefixState(element, n_after, atoms, triples, unary_ok, (*state.counts, (element, count)))
        if len(t.step_cache) > ROW_CACHE:
            t.step_cache.clear()
        t.step_cache[cache_key] = out
        return out

    def space_group_feasible(self, sg: int) -> bool:
        mask, can_end = self.action_mask(sg, self.initial(sg))
        return bool(mask.any()) or can_end
