"""Exact branch and bound over the lattice of merged topological prefixes.

A matching keeps the merged graph acyclic exactly when the merged graph has a
topological order. Such an order is built by repeatedly placing a minimal remaining
node of A alone, a minimal remaining node of B alone, or a minimal node of each as a
matched pair. A search state is therefore a pair of downsets (the A nodes and the B
nodes already placed), and the best weight still obtainable from a state does not
depend on how the state was reached. The search is depth first with

* a transposition table keyed by the state that stores the best weight reached so far,
  so a state reached again with no more weight is cut;
* a per-class bound (the smaller of the remaining weight on the A side and on the B side);
* forced moves: a minimal node with no remaining partner is placed unmatched at once,
  and two minimal nodes that are each other's only remaining partner are matched.

It needs only the standard library, is exact when it finishes, and stops early at a
time limit or a limit on stored states. The number of states grows with the width of
the graphs (about n for a chain, more for parallel branches).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from stitchc.passes._match_problem import Component

__all__ = ["LatticeResult", "search_lattice"]

logger = logging.getLogger(__name__)

_CHECK_EVERY = 2048


@dataclasses.dataclass(frozen=True)
class LatticeResult:
    """Outcome of one lattice search.

    Attributes:
        value: Weight of the best matching found.
        pairs: Its ``(local_a, local_b)`` pairs.
        proven: True when the search finished, so ``value`` is optimal.
        states: Number of states stored in the transposition table.
        stop_reason: ``"finished"``, ``"time_limit"`` or ``"state_limit"``.
    """

    value: int
    pairs: list[tuple[int, int]]
    proven: bool
    states: int
    stop_reason: str


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class _Lattice:
    """Static data of one component, arranged for fast state transitions."""

    def __init__(self, component: Component):
        n_a, n_b = len(component.a_nodes), len(component.b_nodes)
        self.n_a, self.n_b = n_a, n_b
        self.num_classes = component.num_classes
        self.a_preds, self.b_preds = component.a_preds, component.b_preds
        self.a_class, self.b_class = component.a_class, component.b_class

        # Immediate successors: a node can join the frontier only after one of them is placed.
        self.a_next = self._immediate_successors(component.a_preds)
        self.b_next = self._immediate_successors(component.b_preds)

        # Partners as bitsets, the weight of each pair and each node's best weight.
        self.a_partners = [0] * n_a
        self.b_partners = [0] * n_b
        self.weight: dict[tuple[int, int], int] = {}
        self.a_best = [0] * n_a
        self.b_best = [0] * n_b
        for a, b, w, _ in component.candidates:
            if w > self.weight.get((a, b), 0):
                self.weight[(a, b)] = w
            self.a_partners[a] |= 1 << b
            self.b_partners[b] |= 1 << a
            self.a_best[a] = max(self.a_best[a], w)
            self.b_best[b] = max(self.b_best[b], w)

    @staticmethod
    def _immediate_successors(preds) -> list[list[int]]:
        succs: list[list[int]] = [[] for _ in preds]
        for v, mask in enumerate(preds):
            implied = 0
            for u in _bits(mask):
                implied |= preds[u]
            for u in _bits(mask & ~implied):
                succs[u].append(v)
        return succs

    def initial_frontier(self, preds) -> int:
        return sum(1 << v for v, mask in enumerate(preds) if mask == 0)

    def place(self, done: int, frontier: int, v: int, preds, succs) -> tuple[int, int]:
        """Place node v: return the new downset and frontier."""
        done |= 1 << v
        frontier &= ~(1 << v)
        for s in succs[v]:
            if preds[s] & ~done == 0:
                frontier |= 1 << s
        return done, frontier


def search_lattice(
    component: Component,
    incumbent: tuple[int, list[tuple[int, int]]],
    *,
    deadline: float | None,
    state_limit: int | None,
) -> LatticeResult:
    """Search for a matching heavier than ``incumbent``, proving optimality when the search finishes.

    Args:
        component: The subproblem.
        incumbent: ``(value, pairs)`` of a known feasible matching (may be ``(0, [])``).
        deadline: ``time.monotonic()`` value at which to stop, or None for no limit.
        state_limit: Maximum number of stored states, or None for no limit.
    """
    lattice = _Lattice(component)
    best_value, best_pairs = incumbent
    n_b = lattice.n_b
    table: dict[int, int] = {}

    rem_a = [0] * lattice.num_classes
    rem_b = [0] * lattice.num_classes
    for a in range(lattice.n_a):
        rem_a[lattice.a_class[a]] += lattice.a_best[a]
    for b in range(lattice.n_b):
        rem_b[lattice.b_class[b]] += lattice.b_best[b]

    # A frame is (done_a, done_b, frontier_a, frontier_b, rem_a, rem_b, weight, chain);
    # chain is a linked list ((a, b), parent_chain) of the matched pairs so far.
    start = (0, 0, lattice.initial_frontier(lattice.a_preds), lattice.initial_frontier(lattice.b_preds),
             tuple(rem_a), tuple(rem_b), 0, None)
    stack = [start]
    expanded = 0
    stop_reason = "finished"

    while stack:
        expanded += 1
        if expanded % _CHECK_EVERY == 0:
            if deadline is not None and time.monotonic() > deadline:
                stop_reason = "time_limit"
                break
            if state_limit is not None and len(table) > state_limit:
                stop_reason = "state_limit"
                break

        frame = _apply_forced_moves(lattice, stack.pop())
        done_a, done_b, front_a, front_b, ra, rb, g, chain = frame

        bound = sum(min(x, y) for x, y in zip(ra, rb))
        if g + bound <= best_value:
            continue
        if bound == 0:
            best_value, best_pairs = g, _unwind(chain)
            continue
        key = (done_a << n_b) | done_b
        if table.get(key, -1) >= g:
            continue
        table[key] = g

        stack.extend(reversed(list(_children(lattice, frame))))

    proven = stop_reason == "finished"
    logger.debug("lattice search: %d states, %d expansions, stopped: %s", len(table), expanded, stop_reason)
    return LatticeResult(best_value, best_pairs, proven, len(table), stop_reason)


def _unwind(chain) -> list[tuple[int, int]]:
    pairs = []
    while chain is not None:
        pair, chain = chain
        pairs.append(pair)
    pairs.reverse()
    return pairs


def _skip_a(lattice: _Lattice, frame, a: int):
    done_a, done_b, front_a, front_b, ra, rb, g, chain = frame
    done_a, front_a = lattice.place(done_a, front_a, a, lattice.a_preds, lattice.a_next)
    ra = list(ra)
    ra[lattice.a_class[a]] -= lattice.a_best[a]
    return done_a, done_b, front_a, front_b, tuple(ra), rb, g, chain


def _skip_b(lattice: _Lattice, frame, b: int):
    done_a, done_b, front_a, front_b, ra, rb, g, chain = frame
    done_b, front_b = lattice.place(done_b, front_b, b, lattice.b_preds, lattice.b_next)
    rb = list(rb)
    rb[lattice.b_class[b]] -= lattice.b_best[b]
    return done_a, done_b, front_a, front_b, ra, tuple(rb), g, chain


def _match(lattice: _Lattice, frame, a: int, b: int):
    frame = _skip_b(lattice, _skip_a(lattice, frame, a), b)
    done_a, done_b, front_a, front_b, ra, rb, g, chain = frame
    return done_a, done_b, front_a, front_b, ra, rb, g + lattice.weight[(a, b)], ((a, b), chain)


def _apply_forced_moves(lattice: _Lattice, frame):
    """Place dead frontier nodes unmatched and match mutually exclusive partners."""
    changed = True
    while changed:
        changed = False
        done_a, done_b, front_a, front_b = frame[:4]
        for a in _bits(front_a):
            partners = lattice.a_partners[a] & ~done_b
            if partners == 0:
                frame = _skip_a(lattice, frame, a)
                changed = True
            elif partners & (partners - 1) == 0 and partners & front_b:
                b = partners.bit_length() - 1
                if lattice.b_partners[b] & ~done_a == 1 << a:
                    frame = _match(lattice, frame, a, b)
                    changed = True
            if changed:
                break
        if changed:
            continue
        for b in _bits(front_b):
            if lattice.b_partners[b] & ~done_a == 0:
                frame = _skip_b(lattice, frame, b)
                changed = True
                break
    return frame


def _children(lattice: _Lattice, frame):
    """Yield successor frames: matches (heaviest first), then single placements."""
    done_a, done_b, front_a, front_b = frame[:4]
    matches = []
    for a in _bits(front_a):
        for b in _bits(lattice.a_partners[a] & front_b):
            matches.append((-lattice.weight[(a, b)], a, b))
    matches.sort()
    for _, a, b in matches:
        yield _match(lattice, frame, a, b)
    for a in _bits(front_a):
        yield _skip_a(lattice, frame, a)
    for b in _bits(front_b):
        yield _skip_b(lattice, frame, b)
