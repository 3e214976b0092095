"""Upper bounds, the dynamic-programming hint and rank assignment for one component.

All functions work on a :class:`~stitchc.passes._match_problem.Component` with local
node indices and integer weights.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import networkx as nx
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from stitchc.passes._match_problem import Component

__all__ = ["upper_bound", "order_hint", "covering_relation", "merged_ranks", "linear_extensions"]


def upper_bound(component: Component) -> int:
    """Return the weight of a maximum bipartite matching of the candidates.

    Acyclicity is ignored, so this bounds the optimum from above. Classes are
    independent, so each class's matching is computed alone: for shape-based stitch
    kinds (complete bipartite classes) and unit weights it is the sum over classes of
    the smaller node count.
    """
    total = 0
    for c in range(component.num_classes):
        rows = [i for i, k in enumerate(component.a_class) if k == c]
        cols = [j for j, k in enumerate(component.b_class) if k == c]
        row_of = {i: r for r, i in enumerate(rows)}
        col_of = {j: r for r, j in enumerate(cols)}
        matrix = np.zeros((len(rows), len(cols)), dtype=np.int64)
        for a, b, weight, _ in component.candidates:
            if component.a_class[a] == c:
                matrix[row_of[a], col_of[b]] = max(matrix[row_of[a], col_of[b]], weight)
        if matrix.max() == 1:
            matched = maximum_bipartite_matching(csr_matrix(matrix), perm_type="column")
            total += int((matched >= 0).sum())
        else:
            r, k = linear_sum_assignment(matrix, maximize=True)
            total += int(matrix[r, k].sum())
    return total


def covering_relation(preds: Sequence[int]) -> list[list[int]]:
    """Return, per node, its immediate predecessors (the transitive reduction)."""
    covers = []
    for mask in preds:
        implied = 0
        rest = mask
        while rest:
            low = rest & -rest
            implied |= preds[low.bit_length() - 1]
            rest ^= low
        direct = mask & ~implied
        covers.append([i for i in range(direct.bit_length()) if direct >> i & 1])
    return covers


def linear_extensions(preds: Sequence[int]) -> list[list[int]]:
    """Return two linear extensions of a poset: lowest index first, and depth first.

    The first follows the given topological numbering. The second always continues
    from the most recently placed node's branch, so parallel branches are visited one
    after the other; the two differ on diamonds such as a residual block with a
    downsample branch.
    """
    n = len(preds)
    covers = covering_relation(preds)
    succs: list[list[int]] = [[] for _ in range(n)]
    for v, before in enumerate(covers):
        for u in before:
            succs[u].append(v)

    orders = []
    for depth_first in (False, True):
        waiting = [len(c) for c in covers]
        ready = [(-v if depth_first else v) for v in range(n) if waiting[v] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            v = abs(heapq.heappop(ready))
            order.append(v)
            for s in succs[v]:
                waiting[s] -= 1
                if waiting[s] == 0:
                    heapq.heappush(ready, -s if depth_first else s)
        orders.append(order)
    return orders


def _weight_matrix(component: Component) -> np.ndarray:
    matrix = np.zeros((len(component.a_nodes), len(component.b_nodes)), dtype=np.int64)
    for a, b, weight, _ in component.candidates:
        matrix[a, b] = max(matrix[a, b], weight)
    return matrix


def _common_subsequence(matrix: np.ndarray, order_a: list[int], order_b: list[int]) -> tuple[int, list[tuple[int, int]]]:
    """Return a maximum-weight common subsequence of two orders, earliest matches first."""
    # Suffix table: best[i, j] is the best weight on order_a[i:] and order_b[j:]. It is
    # filled one row at a time; the left-to-right dependency within a row is a running
    # maximum, which numpy computes in one call.
    w = matrix[np.ix_(order_a, order_b)]
    n, m = w.shape
    best = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(n - 1, -1, -1):
        below = best[i + 1]
        take = np.where(w[i] > 0, w[i] + below[1:], 0)
        row = np.maximum(below[:m], take)
        best[i, :m] = np.maximum.accumulate(row[::-1])[::-1]

    # Walk forward and match as soon as matching keeps the optimum.
    pairs = []
    i = j = 0
    while i < n and j < m:
        if w[i, j] > 0 and best[i, j] == w[i, j] + best[i + 1, j + 1]:
            pairs.append((order_a[i], order_b[j]))
            i += 1
            j += 1
        elif best[i, j] == best[i + 1, j]:
            i += 1
        else:
            j += 1
    return int(best[0, 0]), pairs


def order_hint(component: Component) -> tuple[int, list[tuple[int, int]]]:
    """Return a good feasible matching: the best common subsequence over linear extensions.

    Matching a common subsequence of one topological order of A and one of B never
    makes a cycle, because both orders merge into one order of the merged graph. Two
    extensions per graph are tried and the best of the four subsequences is kept.
    """
    matrix = _weight_matrix(component)
    best_value, best_pairs = -1, []
    for order_a in linear_extensions(component.a_preds):
        for order_b in linear_extensions(component.b_preds):
            value, pairs = _common_subsequence(matrix, order_a, order_b)
            if value > best_value:
                best_value, best_pairs = value, pairs
    return best_value, best_pairs


def merged_ranks(component: Component, pairs: list[tuple[int, int]]) -> tuple[list[int], list[int]] | None:
    """Return ranks of A and B nodes consistent with a matching, or None if it has a cycle.

    Ranks are positions in one topological order of the merged graph, so rank(u) <
    rank(v) along every order relation, matched nodes share a rank, and a node has a
    rank of at least its number of predecessors.
    """
    partner = {a: b for a, b in pairs}
    merged = nx.DiGraph()

    def key_a(a: int):
        return ("B", partner[a]) if a in partner else ("A", a)

    merged.add_nodes_from(key_a(a) for a in range(len(component.a_nodes)))
    merged.add_nodes_from(("B", b) for b in range(len(component.b_nodes)))
    for v, before in enumerate(covering_relation(component.a_preds)):
        merged.add_edges_from((key_a(u), key_a(v)) for u in before)
    for v, before in enumerate(covering_relation(component.b_preds)):
        merged.add_edges_from((("B", u), ("B", v)) for u in before)
    try:
        order = list(nx.lexicographical_topological_sort(merged))
    except nx.NetworkXUnfeasible:
        return None
    rank = {node: r for r, node in enumerate(order)}
    ranks_a = [rank[key_a(a)] for a in range(len(component.a_nodes))]
    ranks_b = [rank[("B", b)] for b in range(len(component.b_nodes))]
    return ranks_a, ranks_b
