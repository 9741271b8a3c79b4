"""Composition masks and transitions for a whole batch of trajectories at once (budget-free spaces).

:class:`~discovery.gfn.constraints.CompositionConstraints` answers one prefix at a time; a rollout of
1,000 trajectories asks ~4,000 such questions, each a dozen small NumPy calls. Here the tables of all
space-group algebras are packed along one resource-state axis (:class:`PackedTables`: algebra ``k``
owns states ``[offset_k, offset_k + R_k]``, the last one its dummy "no successor" state), so the
(phase, resource state, charge) triples of every trajectory live in one pool and each rollout step
is a few vectorised gathers. Same tables, same answers as the one-state API (tested against it).

Only budget-free spaces (``max_atoms ≥ max_elements · max_per_element``) with ``min_elements ≥ 2``
take this path; others use the one-state API.
"""

from __future__ import annotations

import numpy as np

from discovery.gfn.constraints import C0, C1, A, CompositionConstraints, charge_window


class PackedTables:
    """The bit tables of every space group of a space, concatenated along the resource-state axis."""

    def __init__(self, cc: CompositionConstraints) -> None:
        rules, el = cc.rules, cc.el
        arr = cc.packed_arrays()
        self.rules, self.el = rules, el
        self.J, self.C, self.N = rules.max_elements, rules.max_per_element, el.n
        self.start = np.asarray(arr["start"], dtype=np.int64)
        self.feasible = np.asarray(arr["feasible"], dtype=bool)
        self.succ = np.asarray(arr["succ"], dtype=np.int64)  # (C + 1, G, S) global states
        self.G = self.succ.shape[1]
        self.dummy = np.zeros(self.G, dtype=bool)
        self.dummy[np.asarray(arr["offset"][1:]) - 1] = True
        # plain ndarray views of memory-mapped members: np.memmap's own indexing costs ~35 µs a call
        self.comp = {n: np.asarray(arr[f"comp{n}"]) for n in range(1, self.J + 1)}  # (N + 1, 3, G, B)
        self.dil = {n: np.asarray(arr[f"dil{n}"]) for n in range(self.J - 1)}  # (2, C, G, Qd, NB)
        # the same as (2·C·G·Qd, NB) row tables, and (G, C, S) row offsets c·G + successor of (state, count c + 1)
        self.dil_rows = {n: d.reshape(-1, d.shape[-1]) for n, d in self.dil.items()}
        self.succ_c = np.arange(self.C)[None, :, None] * self.G + self.succ[1:].transpose(1, 0, 2)
        self.window = {n: charge_window(rules, el, n) for n in range(self.J + 1)}
        n_groups = int(el.group.max()) + 2  # last group −1 (nothing chosen) at the end
        self.other_group = np.stack([np.packbits(el.group != g) for g in [*range(n_groups - 1), -1]])


class BatchComposition:
    """Composition states of ``n`` trajectories: per-trajectory counters and one pool of triples,
    kept sorted by trajectory."""

    def __init__(self, packed: PackedTables, n: int) -> None:
        self.p = packed
        self.n_el = np.zeros(n, dtype=np.int64)
        self.last = np.full(n, -1, dtype=np.int64)
        self.row = np.zeros(0, dtype=np.int64)
        self.ph = np.zeros(0, dtype=np.int64)
        self.g = np.zeros(0, dtype=np.int64)
        self.q = np.zeros(0, dtype=np.int64)

    def start(self, rows: np.ndarray, sgs: np.ndarray) -> None:
        """Trajectories ``rows`` enter the composition stage in space groups ``sgs``."""
        self._replace(rows, rows, np.full(len(rows), C0), self.p.start[sgs], np.zeros(len(rows), dtype=np.int64))

    def finish(self, rows: np.ndarray) -> None:
        self._replace(rows, *(np.zeros(0, dtype=np.int64),) * 4)

    def _in(self, rows: np.ndarray) -> np.ndarray:
        """(pool size,) bool: pool entries that belong to trajectories ``rows`` (a lookup, not np.isin)."""
        member = np.zeros(len(self.n_el), dtype=bool)
        member[rows] = True
        return member[self.row]

    def _replace(self, rows: np.ndarray, row: np.ndarray, ph: np.ndarray, g: np.ndarray, q: np.ndarray) -> None:
        keep = ~self._in(rows)
        all_row = np.concatenate([self.row[keep], row])
        order = np.argsort(all_row, kind="stable")
        self.row = all_row[order]
        self.ph = np.concatenate([self.ph[keep], ph])[order]
        self.g = np.concatenate([self.g[keep], g])[order]
        self.q = np.concatenate([self.q[keep], q])[order]

    def _last_group(self, rows: np.ndarray) -> np.ndarray:
        last = self.last[rows]
        return np.where(last >= 0, self.p.el.group[np.maximum(last, 0)], -1)

    def masks(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(len(rows), N, C) allowed (element, count) actions and (len(rows),) "may end here" for the
        trajectories ``rows`` (sorted; every one in the composition stage)."""
        p = self.p
        out = np.zeros((len(rows), p.N, p.C), dtype=bool)
        pos = np.searchsorted(rows, self.row)  # pool entry → position in rows
        n_el = self.n_el[rows]
        lg = self._last_group(rows)
        ent_n = n_el[pos]
        for v in range(p.J - 1):
            sel = np.flatnonzero((ent_n == v) & (np.abs(self.q) <= p.window[v]))
            if len(sel):
                self._dilated_mask(out, v, sel, pos[sel], lg)
        sel = np.flatnonzero(ent_n == p.J - 1)
        if len(sel):
            self._last_mask(out, sel, pos[sel], lg)
        out &= np.arange(p.N)[None, :, None] > self.last[rows][:, None, None]
        can_end = np.zeros(len(rows), dtype=bool)
        can_end[pos[self.q == 0]] = True
        return out, can_end & (n_el >= self.p.rules.min_elements)

    def _dilated_mask(self, out: np.ndarray, v: int, sel: np.ndarray, pos: np.ndarray, lg: np.ndarray) -> None:
        p = self.p
        dil, w = p.dil_rows[v], p.window[v]
        ph, q = self.ph[sel], self.q[sel] + w
        # per entry (T, C, S) rows of dil{v} (kind 0: cation, kind 1: anion), one gather per kind
        at = p.succ_c[self.g[sel]] * (2 * w + 1) + q[:, None, None]
        got0, got1 = dil.take(at, axis=0), dil.take(at + len(dil) // 2, axis=0)  # (T, C, S, NB)
        if got0.shape[2] == 1:
            got0, got1 = got0[:, :, 0], got1[:, :, 0]
        else:
            got0, got1 = np.bitwise_or.reduce(got0, axis=2), np.bitwise_or.reduce(got1, axis=2)
        # cations after C0/C1 prefixes; anions after C0/A prefixes, or after C1 from another EN group
        keep0 = np.where(ph != A, np.uint8(255), np.uint8(0))[:, None, None]
        keep1 = np.where((ph == C1)[:, None], p.other_group[lg[pos]], np.uint8(255))[:, None, :]
        acc = (got0 & keep0) | (got1 & keep1)  # (T, C, NB), reduced per trajectory below
        starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        per_row = np.bitwise_or.reduceat(acc, starts, axis=0)  # (rows hit, C, NB)
        bits = np.unpackbits(per_row, axis=-1, count=p.N).astype(bool)  # (rows hit, C, N)
        out[pos[starts]] |= bits.transpose(0, 2, 1)

    def _last_mask(self, out: np.ndarray, sel: np.ndarray, pos: np.ndarray, lg: np.ndarray) -> None:
        """One element left: it must bring the charge exactly to zero."""
        el, p = self.p.el, self.p
        ph, g, q = self.ph[sel][:, None, None], self.g[sel], self.q[sel][:, None, None]
        lgs = lg[pos][:, None, None]
        opts = el.opt_valid[None] & np.where(ph == A, ~el.opt_cat[None], np.where(
            ph == C0, True, el.opt_cat[None] | (el.group[None, :, None] != lgs)))  # (T, N, O)
        den = np.where(opts, el.opt_sigma[None], 1)
        n = -q // den
        ok = opts & (n * den == -q) & (n >= 1) & (n <= p.C)
        ti, ei, oi = np.nonzero(ok)
        nn = n[ti, ei, oi]
        fits = ~p.dummy[p.succ[nn, g[ti]]].all(axis=1)
        out[pos[ti[fits]], ei[fits], nn[fits] - 1] = True

    def step(self, rows: np.ndarray, elements: np.ndarray, counts: np.ndarray) -> None:
        """Trajectories ``rows`` (sorted) add ``counts`` atoms of (canonical) ``elements``."""
        p, el = self.p, self.p.el
        sel = np.flatnonzero(self._in(rows))
        pos = np.searchsorted(rows, self.row[sel])
        e, c = elements[pos], counts[pos]
        lg = self._last_group(rows)[pos]
        ph = np.where((self.ph[sel] == C1) & (el.group[e] != lg), C0, self.ph[sel])
        allowed = el.opt_valid[e] & np.where(el.opt_cat[e], (ph != A)[:, None], (ph != C1)[:, None])  # (T, O)
        succ = p.succ[c, self.g[sel]]  # (T, S)
        # candidate (entry, oxidation option, successor) triples, then the completability bit of each
        ti, oi, si = np.nonzero(allowed[:, :, None] & ~p.dummy[succ][:, None, :])
        et = e[ti]
        after, s2 = el.opt_after[et, oi], succ[ti, si]
        q2 = self.q[sel][ti] + c[ti] * el.opt_sigma[et, oi]
        n_after = (self.n_el[rows] + 1)[pos][ti]
        ok = np.zeros(len(ti), dtype=bool)
        for v in np.unique(n_after).tolist():
            k = np.flatnonzero(n_after == v)
            w = p.window[v]
            b = w - q2[k]
            inside = (b >= 0) & (b <= 2 * w)
            b = np.minimum(np.maximum(b, 0), 2 * w)
            comp = p.comp[v]  # (N + 1, 3, G, NBq) as one flat array
            at = (((et[k] + 1) * 3 + after[k]) * p.G + s2[k]) * comp.shape[3] + (b >> 3)
            ok[k] = inside & ((comp.reshape(-1).take(at) >> (7 - (b & 7))) & 1).astype(bool)
        ti, after, s2, q2 = ti[ok], after[ok], s2[ok], q2[ok]
        Qs = 2 * el.q_max + 1
        key = np.unique(((self.row[sel][ti] * 3 + after) * p.G + s2) * Qs + q2 + el.q_max)
        q_new = key % Qs - el.q_max
        rest = key // Qs
        g_new = rest % p.G
        rest //= p.G
        traj = rest // 3  # sorted
        if len(traj) == 0 or 1 + int(np.count_nonzero(traj[1:] != traj[:-1])) != len(rows):
            raise ValueError("a composition action leads to a dead end")
        self._replace(rows, traj, rest % 3, g_new, q_new)
        self.n_el[rows] += 1
        self.last[rows] = elements
