"""The matching problem in indexed form: validation, reachability and decomposition.

Nodes of A and of B are numbered separately (the two graphs may share node names).
Only nodes that appear in some candidate matter to the solvers, because a cycle in the
merged graph always runs from one matched node to the next through a path of A or of B.
The solvers therefore work on the reachability order among candidate nodes, not on the
edges themselves. Sets of nodes are Python ints used as bitsets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Hashable, Iterable, Mapping, Sequence

import networkx as nx

from stitchc.errors import CyclicGraphError, InvalidArgumentError, MatchingError

__all__ = ["Problem", "Component", "build_problem", "split_components"]

#: Weights that are not all integers are scaled by this factor and rounded, because
#: CP-SAT needs integer objective coefficients.
WEIGHT_SCALE = 1_000_000


@dataclasses.dataclass(frozen=True)
class Component:
    """An independent part of the matching problem.

    A cycle in the merged graph only passes through matched nodes of one component, so
    each component can be solved alone and the union of the per-component matchings
    is acyclic. Node indices are local: ``a_nodes[i]`` is the global index (in A's
    topological order) of local A node ``i``; likewise for B.

    Attributes:
        a_nodes: Global A indices of the candidate nodes, in A's topological order.
        b_nodes: Global B indices of the candidate nodes, in B's topological order.
        candidates: ``(local_a, local_b, weight, global_candidate_index)`` tuples.
        a_preds: Per local A node, the bitset of local A nodes that reach it in A.
        b_preds: Per local B node, the bitset of local B nodes that reach it in B.
        a_class: Per local A node, the class index (a connected component of the
            candidate graph); ``b_class`` likewise.
        num_classes: Number of classes in this component.
    """

    a_nodes: tuple[int, ...]
    b_nodes: tuple[int, ...]
    candidates: tuple[tuple[int, int, int, int], ...]
    a_preds: tuple[int, ...]
    b_preds: tuple[int, ...]
    a_class: tuple[int, ...]
    b_class: tuple[int, ...]
    num_classes: int

    @property
    def a_succs(self) -> tuple[int, ...]:
        """Per local A node, the bitset of local A nodes it reaches."""
        return _invert(self.a_preds)

    @property
    def b_succs(self) -> tuple[int, ...]:
        """Per local B node, the bitset of local B nodes it reaches."""
        return _invert(self.b_preds)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A validated matching problem with nodes numbered in topological order.

    Attributes:
        a_names: Node names of A in topological order; ``b_names`` likewise.
        candidates: ``(a_index, b_index)`` per candidate, in the caller's order.
        weights: Integer weight per candidate (scaled by ``weight_scale``).
        weight_scale: 1 when the caller's weights were integers, else ``WEIGHT_SCALE``.
        a_desc: Per A node, the bitset of A nodes reachable from it (itself excluded);
            ``b_desc`` likewise.
    """

    a_names: tuple[Hashable, ...]
    b_names: tuple[Hashable, ...]
    candidates: tuple[tuple[int, int], ...]
    weights: tuple[int, ...]
    weight_scale: int
    a_desc: tuple[int, ...]
    b_desc: tuple[int, ...]


def _invert(preds: Sequence[int]) -> tuple[int, ...]:
    succs = [0] * len(preds)
    for v, mask in enumerate(preds):
        while mask:
            low = mask & -mask
            succs[low.bit_length() - 1] |= 1 << v
            mask ^= low
    return tuple(succs)


def _topological_names(graph: nx.DiGraph, label: str) -> list[Hashable]:
    if not isinstance(graph, nx.DiGraph):
        raise InvalidArgumentError(
            f"graph {label} is a {type(graph).__name__}, expected a networkx.DiGraph; "
            "convert it with networkx.DiGraph(graph)"
        )
    try:
        return list(nx.topological_sort(graph))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(graph)
        path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
        raise CyclicGraphError(
            f"graph {label} already contains the cycle {path}; matching needs two acyclic graphs"
        ) from None


def _descendants(graph: nx.DiGraph, names: Sequence[Hashable], index: Mapping[Hashable, int]) -> tuple[int, ...]:
    # Reverse topological order: every successor's set is final before it is read.
    desc = [0] * len(names)
    for v in range(len(names) - 1, -1, -1):
        mask = 0
        for succ in graph.successors(names[v]):
            s = index[succ]
            mask |= (1 << s) | desc[s]
        desc[v] = mask
    return tuple(desc)


def _candidate_pair(candidate: Any) -> tuple[Hashable, Hashable]:
    if hasattr(candidate, "a") and hasattr(candidate, "b"):
        return candidate.a, candidate.b
    try:
        a, b = candidate
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"candidate {candidate!r} is neither an (a, b) pair nor an object with .a and .b; "
            "pass pairs of node names"
        ) from None
    return a, b


def _integer_weights(raw: Sequence[float]) -> tuple[tuple[int, ...], int]:
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidArgumentError(f"weight {value!r} is not a finite number; pass finite weights")
        if value < 0:
            raise InvalidArgumentError(
                f"weight {value!r} is negative; a candidate worth less than nothing is never "
                "chosen, so drop it from the candidates instead"
            )
    if all(float(value).is_integer() for value in raw):
        return tuple(int(value) for value in raw), 1
    return tuple(round(value * WEIGHT_SCALE) for value in raw), WEIGHT_SCALE


def build_problem(
    graph_a: nx.DiGraph,
    graph_b: nx.DiGraph,
    candidates: Iterable[Any],
    weights: Mapping[tuple[Hashable, Hashable], float] | Sequence[float] | None,
) -> Problem:
    """Validate the inputs of the matcher and number their nodes.

    Raises:
        InvalidArgumentError: a graph is not a DiGraph, a candidate is malformed or
            repeated, or a weight is missing, negative or not finite.
        CyclicGraphError: a graph contains a cycle (one is named).
        MatchingError: a candidate names a node that is not in its graph.
    """
    a_names = _topological_names(graph_a, "A")
    b_names = _topological_names(graph_b, "B")
    a_index = {name: i for i, name in enumerate(a_names)}
    b_index = {name: i for i, name in enumerate(b_names)}

    pairs: list[tuple[Hashable, Hashable]] = [_candidate_pair(c) for c in candidates]
    indexed: list[tuple[int, int]] = []
    seen: set[tuple[Hashable, Hashable]] = set()
    for a, b in pairs:
        if a not in a_index:
            raise MatchingError(f"candidate ({a!r}, {b!r}) names node {a!r}, which is not in graph A")
        if b not in b_index:
            raise MatchingError(f"candidate ({a!r}, {b!r}) names node {b!r}, which is not in graph B")
        if (a, b) in seen:
            raise InvalidArgumentError(f"candidate ({a!r}, {b!r}) is listed twice; list each pair once")
        seen.add((a, b))
        indexed.append((a_index[a], b_index[b]))

    if weights is None:
        raw: Sequence[float] = [1] * len(pairs)
    elif isinstance(weights, Mapping):
        missing = [pair for pair in pairs if pair not in weights]
        if missing:
            raise InvalidArgumentError(
                f"weights has no entry for candidate {missing[0]!r}; give every candidate a weight"
            )
        raw = [weights[pair] for pair in pairs]
    else:
        raw = list(weights)
        if len(raw) != len(pairs):
            raise InvalidArgumentError(
                f"weights has {len(raw)} entries for {len(pairs)} candidates; pass one weight per candidate"
            )
    int_weights, scale = _integer_weights(raw)

    return Problem(
        a_names=tuple(a_names),
        b_names=tuple(b_names),
        candidates=tuple(indexed),
        weights=int_weights,
        weight_scale=scale,
        a_desc=_descendants(graph_a, a_names, a_index),
        b_desc=_descendants(graph_b, b_names, b_index),
    )


def _classes(problem: Problem, used: list[int]) -> tuple[dict[int, int], dict[int, int], int]:
    """Number the connected components of the bipartite candidate graph."""
    bipartite = nx.Graph()
    for k in used:
        a, b = problem.candidates[k]
        bipartite.add_edge(("A", a), ("B", b))
    a_class: dict[int, int] = {}
    b_class: dict[int, int] = {}
    for c, nodes in enumerate(nx.connected_components(bipartite)):
        for side, v in nodes:
            (a_class if side == "A" else b_class)[v] = c
    return a_class, b_class, c + 1 if used else 0


def split_components(problem: Problem) -> list[Component]:
    """Split the problem into components that can be solved independently.

    Candidates of weight 0 are dropped (choosing one never helps). The classes are the
    connected components of the bipartite candidate graph (for shape-based stitch kinds,
    one class per output shape). The class graph has an edge c -> d when a node of
    class c reaches a node of class d in A or in B. Every cycle of the merged graph
    stays inside one strongly connected component of the class graph, so each such
    component is an independent subproblem.
    """
    used = [k for k, w in enumerate(problem.weights) if w > 0]
    if not used:
        return []
    a_class, b_class, num_classes = _classes(problem, used)

    # Class graph from reachability between candidate nodes of A and of B.
    members_a = [0] * num_classes
    members_b = [0] * num_classes
    for v, c in a_class.items():
        members_a[c] |= 1 << v
    for v, c in b_class.items():
        members_b[c] |= 1 << v
    class_graph = nx.DiGraph()
    class_graph.add_nodes_from(range(num_classes))
    for desc, members in ((problem.a_desc, members_a), (problem.b_desc, members_b)):
        for c in range(num_classes):
            reach = 0
            mask = members[c]
            while mask:
                low = mask & -mask
                reach |= desc[low.bit_length() - 1]
                mask ^= low
            for d in range(num_classes):
                if d != c and reach & members[d]:
                    class_graph.add_edge(c, d)

    components = []
    for scc in nx.strongly_connected_components(class_graph):
        components.append(_make_component(problem, used, scc, a_class, b_class))
    components.sort(key=lambda comp: (comp.a_nodes[0], comp.b_nodes[0]))
    return components


def _local_preds(desc: Sequence[int], nodes: list[int]) -> tuple[int, ...]:
    local = {v: i for i, v in enumerate(nodes)}
    nodes_mask = sum(1 << v for v in nodes)
    preds = [0] * len(nodes)
    for i, v in enumerate(nodes):
        mask = desc[v] & nodes_mask
        while mask:
            low = mask & -mask
            preds[local[low.bit_length() - 1]] |= 1 << i
            mask ^= low
    return tuple(preds)


def _make_component(
    problem: Problem, used: list[int], scc: set[int], a_class: dict[int, int], b_class: dict[int, int]
) -> Component:
    a_nodes = sorted(v for v, c in a_class.items() if c in scc)
    b_nodes = sorted(v for v, c in b_class.items() if c in scc)
    a_local = {v: i for i, v in enumerate(a_nodes)}
    b_local = {v: i for i, v in enumerate(b_nodes)}
    class_ids = {c: i for i, c in enumerate(sorted(scc))}
    candidates = tuple(
        (a_local[a], b_local[b], problem.weights[k], k)
        for k in used
        for a, b in [problem.candidates[k]]
        if a in a_local
    )
    return Component(
        a_nodes=tuple(a_nodes),
        b_nodes=tuple(b_nodes),
        candidates=candidates,
        a_preds=_local_preds(problem.a_desc, a_nodes),
        b_preds=_local_preds(problem.b_desc, b_nodes),
        a_class=tuple(class_ids[a_class[v]] for v in a_nodes),
        b_class=tuple(class_ids[b_class[v]] for v in b_nodes),
        num_classes=len(scc),
    )
