"""The dynamic programme behind the composition look-ahead tables (:mod:`discovery.gfn.constraints`).

For one Wyckoff algebra: suffix tables S[i, phase, j, r, q] (fewest atoms of exactly ``j`` more
elements with canonical index ≥ i, from resource state ``r``, bringing charge ``q − q_max``), reduced
to the fewest atoms of a valid completion per number of elements; budget-free spaces keep them as bit
tables over the charge window that can still reach zero (``comp{n}``) plus the "dilated" tables the
masks read (``dil{n}``), see :class:`~discovery.gfn.constraints.SpaceGroupConstraints`.
"""

from __future__ import annotations

import numpy as np

from discovery.gfn.constraints import (
    C0,
    C1,
    INF,
    NONE,
    A,
    CompositionRules,
    _ElementTables,
    charge_window,
)
from discovery.symmetry import WyckoffAlgebra


class TableBuilder:
    """Builds the tables of one algebra: ``TableBuilder(rules, algebra, el).run()``."""

    def __init__(self, rules: CompositionRules, algebra: WyckoffAlgebra, elements: _ElementTables) -> None:
        C, R = rules.max_per_element, algebra.n_states
        width = max(1, max((len(t) for n in range(1, C + 1) for t in algebra.transitions[n]), default=1))
        self.succ = np.full((C + 1, R, width), R, dtype=np.int64)  # padded with the dummy state R
        for n in range(1, C + 1):
            for r, nxt in enumerate(algebra.transitions[n]):
                self.succ[n, r, : len(nxt)] = nxt
        self.rules, self.el, self.R = rules, elements, R
        self.Q = 2 * elements.q_max + 1
        self.J = rules.max_elements
        self.budget_free = rules.max_atoms >= rules.max_elements * rules.max_per_element

    def run(self) -> dict[str, np.ndarray]:
        rules, elements = self.rules, self.el
        S = self._suffix_tables()
        # M[k - 1][i, phase, r, q] (uint8, 255 = none): fewest atoms of a completion of a composition
        # that has k elements, using elements with canonical index ≥ i; padded with the dummy state R
        M = np.stack([self._completion_min(S, k) for k in range(1, rules.max_elements + 1)])
        del S
        M = np.concatenate([M, np.full(M[:, :, :, :1].shape, NONE, dtype=np.uint8)], axis=3)
        if not self.budget_free:
            return {"M": M}
        tables: dict[str, np.ndarray] = {}
        q_max = elements.q_max
        comp: dict[int, np.ndarray] = {}
        for n in range(1, self.J + 1):
            w = charge_window(rules, elements, n)
            comp[n] = M[n - 1][..., q_max - w : q_max + w + 1] < NONE  # completion charge c ↔ bin c + w
            tables[f"comp{n}"] = np.packbits(comp[n], axis=-1)
        del M
        for n in range(self.J - 1):
            tables[f"dil{n}"] = self._dilate(n, comp[n + 1])
        return tables

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

    def _completion_min(self, S: np.ndarray, n_after: int) -> np.ndarray:
        lo = max(0, self.rules.min_elements - n_after)
        hi = self.rules.max_elements - n_after
        if hi < lo:
            return np.full(S[:, :, 0].shape, NONE, dtype=np.uint8)
        return np.minimum(S[:, :, lo : hi + 1].min(axis=2), NONE).astype(np.uint8)

    def _dilate(self, n_elements: int, comp: np.ndarray) -> np.ndarray:
        """(2, C, R + 1, 2w + 1, ⌈N/8⌉) uint8, elements bit-packed: entry (kind, n − 1, s, q + w, e) is
        set when adding n atoms of element e as a cation (kind 0) / an anion (kind 1) to a prefix of
        ``n_elements`` elements and charge q, landing in resource state s, leaves a completable prefix.
        ``comp``: (N + 1, 3, R + 1, 2w₁ + 1) completable after ``n_elements + 1`` elements."""
        el, C = self.el, self.rules.max_per_element
        w, w1 = charge_window(self.rules, el, n_elements), charge_window(self.rules, el, n_elements + 1)
        step_max = el.max_state * C
        pad = w + step_max
        # by prefix-charge-after bin j (charge j − w1): the completion brings −(j − w1), bin 2·w1 − j
        after = np.pad(comp[..., ::-1], ((0, 0), (0, 0), (0, 0), (pad, pad)))
        out = np.zeros((2, C, self.R + 1, 2 * w + 1, el.n), dtype=bool)
        counts = np.arange(1, C + 1)
        for e in range(el.n):
            for o in np.flatnonzero(el.opt_valid[e]).tolist():
                sigma = int(el.opt_sigma[e, o])
                # prefix charge q (bin q + w) → after charge q + nσ, padded bin q + nσ + w1 + pad
                idx = (pad + w1 - w + counts * sigma)[:, None] + np.arange(2 * w + 1)[None, :]  # (C, 2w + 1)
                got = after[e + 1, int(el.opt_after[e, o])][:, idx]  # (R + 1, C, 2w + 1)
                out[0 if el.opt_cat[e, o] else 1, :, :, :, e] |= got.transpose(1, 0, 2)
        return np.packbits(out, axis=-1)
