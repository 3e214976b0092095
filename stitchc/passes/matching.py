"""Exact acyclic matching of two directed acyclic graphs.

Given two DAGs A and B and candidate pairs (a in A, b in B), the matcher chooses the
candidates of maximum total weight such that each node is used at most once. Merging
every chosen pair into one node must leave the merged graph acyclic. This module is independent of torch:
it works on ``networkx.DiGraph`` objects whose nodes are any hashable names.

The solve runs in this order:

1. Split the problem into independent components (a cycle of the merged graph never
   leaves one strongly connected component of the graph of candidate classes).
2. Per component, compute an upper bound (a maximum bipartite matching) and a hint
   (a maximum-weight common subsequence of topological orders of A and B). When the
   two meet, the hint is optimal.
3. Otherwise run the exact lattice branch and bound (``bnb``), or, for ``cpsat``, the
   same search with a cap on stored states and then the CP-SAT rank model seeded with
   the best matching found.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import networkx as nx

from stitchc.errors import InvalidArgumentError, SolverUnavailableError
from stitchc.passes import _bnb, _cpsat
from stitchc.passes._match_bounds import order_hint, upper_bound
from stitchc.passes._match_problem import Component, build_problem, split_components

__all__ = [
    "MatchingOptions",
    "MatchingResult",
    "ComponentSummary",
    "solve_matching",
    "is_acyclic_matching",
    "ortools_available",
]

logger = logging.getLogger(__name__)

_SOLVERS = ("cpsat", "bnb", "auto")


def ortools_available() -> bool:
    """Return whether OR-Tools' CP-SAT can be imported."""
    return importlib.util.find_spec("ortools") is not None


@dataclasses.dataclass(frozen=True)
class MatchingOptions:
    """Options of :func:`solve_matching`.

    Attributes:
        solver: ``"cpsat"`` (OR-Tools CP-SAT after the exact lattice search), ``"bnb"``
            (the lattice branch and bound alone, no OR-Tools needed) or ``"auto"``
            (``cpsat`` when OR-Tools is installed, else ``bnb``).
        time_limit: Seconds for the whole solve, or None for no limit. When it runs
            out, the best matching found is returned with status ``"feasible"``.
        workers: CP-SAT worker threads; 0 lets CP-SAT use one per CPU core.
        seed: CP-SAT random seed.
        model_path: Where to write each CP-SAT model built (``.pbtxt`` for text). With
            several components, ``-K`` is added before the suffix for component K.
        lattice_states: For ``cpsat``: states the lattice search may store before the
            CP-SAT model takes over; 0 skips the lattice search. ``bnb`` has no cap.
    """

    solver: str = "auto"
    time_limit: float | None = None
    workers: int = 0
    seed: int = 0
    model_path: str | Path | None = None
    lattice_states: int = 300_000

    def __post_init__(self) -> None:
        if self.solver not in _SOLVERS:
            raise InvalidArgumentError(f"solver {self.solver!r} is unknown; use one of {', '.join(_SOLVERS)}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InvalidArgumentError(f"time_limit {self.time_limit!r} is not positive; pass seconds > 0 or None")
        if self.workers < 0:
            raise InvalidArgumentError(f"workers {self.workers!r} is negative; pass 0 (one per core) or more")
        if self.lattice_states < 0:
            raise InvalidArgumentError(f"lattice_states {self.lattice_states!r} is negative; pass 0 or more")


@dataclasses.dataclass(frozen=True)
class ComponentSummary:
    """Solve statistics of one independent component.

    Attributes:
        a_nodes: Number of candidate nodes of A in it; ``b_nodes`` likewise.
        candidates: Number of candidates in it.
        objective: Weight of its matching, in the caller's units.
        upper_bound: Proven upper bound on its optimum, in the caller's units.
        method: What found the returned matching and proved it: ``"bound"`` (the hint
            met the bipartite bound), ``"lattice"`` (the lattice search finished),
            ``"cpsat"`` or ``"unproven"`` (time ran out).
    """

    a_nodes: int
    b_nodes: int
    candidates: int
    objective: float
    upper_bound: float
    method: str


@dataclasses.dataclass(frozen=True)
class MatchingResult:
    """Outcome of :func:`solve_matching`.

    Attributes:
        pairs: Chosen ``(a, b)`` node-name pairs, in A's topological order.
        objective: Total weight of ``pairs`` (their number for unit weights).
        upper_bound: Proven upper bound on the optimum; equals ``objective`` when optimal.
        status: ``"optimal"`` (proven) or ``"feasible"`` (time ran out first).
        solver: ``"cpsat"`` or ``"bnb"``, the solver that ``options.solver`` resolved to.
        seconds: Wall-clock seconds of the solve, validation included.
        gap: ``(upper_bound - objective) / upper_bound``, 0 when optimal or when the bound is 0.
        components: One summary per independent component.
        message: Why the matching is empty, when it is; else an empty string.
    """

    pairs: tuple[tuple[Hashable, Hashable], ...]
    objective: float
    upper_bound: float
    status: str
    solver: str
    seconds: float
    gap: float
    components: tuple[ComponentSummary, ...] = ()
    message: str = ""


def _resolve_solver(name: str) -> str:
    if name == "auto":
        return "cpsat" if ortools_available() else "bnb"
    if name == "cpsat" and not ortools_available():
        raise SolverUnavailableError(
            "solver 'cpsat' needs OR-Tools, which is not installed; install ortools or use solver='bnb'"
        )
    return name


def _model_path(base: str | Path | None, index: int, count: int) -> Path | None:
    if base is None:
        return None
    path = Path(base)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}-{index}{path.suffix}")


def _solve_component(
    component: Component,
    solver: str,
    options: MatchingOptions,
    deadline: float | None,
    model_path: Path | None,
) -> tuple[int, int, list[tuple[int, int]], str]:
    """Return ``(value, bound, local pairs, method)`` for one component."""
    bound = upper_bound(component)
    hint_value, hint = order_hint(component)
    logger.debug(
        "component %dx%d nodes, %d candidates: hint %d, bound %d",
        len(component.a_nodes), len(component.b_nodes), len(component.candidates), hint_value, bound,
    )
    if hint_value >= bound and model_path is None:
        return hint_value, bound, hint, "bound"

    if solver == "bnb" or options.lattice_states > 0:
        state_limit = None if solver == "bnb" else options.lattice_states
        lattice_deadline = deadline
        if solver == "cpsat" and deadline is not None:
            # Leave CP-SAT at least three quarters of the remaining time.
            lattice_deadline = time.monotonic() + max(0.0, deadline - time.monotonic()) / 4
        found = _bnb.search_lattice(component, (hint_value, hint), deadline=lattice_deadline, state_limit=state_limit)
        if found.proven and model_path is None:
            return found.value, found.value, found.pairs, "lattice"
        if solver == "bnb":
            return found.value, bound, found.pairs, "unproven"
        hint_value, hint = found.value, found.pairs
        logger.info(
            "lattice search stopped (%s) after %d states; handing %d matches to CP-SAT",
            found.stop_reason, found.states, found.value,
        )

    built = _cpsat.build_model(component, bound, hint)
    if model_path is not None:
        _cpsat.write_model(built, model_path)
    outcome = _cpsat.solve_model(
        built, component, upper_bound=bound, hint_value=hint_value, hint=hint,
        deadline=deadline, workers=options.workers, seed=options.seed,
    )
    return outcome.value, outcome.bound, outcome.pairs, "cpsat" if outcome.proven else "unproven"


def solve_matching(
    graph_a: nx.DiGraph,
    graph_b: nx.DiGraph,
    candidates: Iterable[Any],
    *,
    weights: Mapping[tuple[Hashable, Hashable], float] | Sequence[float] | None = None,
    options: MatchingOptions | None = None,
) -> MatchingResult:
    """Find a maximum-weight acyclic matching between two DAGs.

    Args:
        graph_a: DAG A; its node names are what candidates refer to.
        graph_b: DAG B; it may use the same node names as A.
        candidates: ``(a, b)`` pairs, or objects with ``.a`` and ``.b`` (such as
            :class:`stitchc.passes.candidates.Candidate`). Each pair at most once.
        weights: None for weight 1 per candidate (maximize the number of matches), a
            mapping from ``(a, b)`` to a weight, or one weight per candidate in order.
            Weights must be finite and non-negative; candidates of weight 0 are never
            chosen. Non-integer weights are rounded to multiples of 1e-6.
        options: Solver options; None for the defaults.

    Returns:
        The matching. Among matchings of equal weight, matches early in A and B are
        preferred where the hint or the lattice search decides; a CP-SAT solve returns
        any optimum.

    Raises:
        InvalidArgumentError: a graph is not a ``networkx.DiGraph``, or a candidate or
            weight is malformed or repeated.
        CyclicGraphError: a graph contains a cycle (the message names one).
        MatchingError: a candidate names a node missing from its graph, or CP-SAT failed.
        SolverUnavailableError: ``solver="cpsat"`` without OR-Tools installed.

    Example:
        >>> import networkx as nx
        >>> a = nx.DiGraph([(0, 1), (1, 2)])
        >>> b = nx.DiGraph([("x", "y"), ("y", "z")])
        >>> result = solve_matching(a, b, [(0, "x"), (1, "z"), (2, "y")])
        >>> result.pairs, result.objective, result.status
        (((0, 'x'), (2, 'y')), 2, 'optimal')
    """
    started = time.monotonic()
    options = options or MatchingOptions()
    solver = _resolve_solver(options.solver)
    deadline = started + options.time_limit if options.time_limit is not None else None
    problem = build_problem(graph_a, graph_b, candidates, weights)
    components = split_components(problem)
    scale = problem.weight_scale

    chosen: list[tuple[int, int]] = []
    total_value = total_bound = 0
    summaries = []
    for index, component in enumerate(components):
        path = _model_path(options.model_path, index, len(components))
        value, bound, pairs, method = _solve_component(component, solver, options, deadline, path)
        chosen.extend((component.a_nodes[a], component.b_nodes[b]) for a, b in pairs)
        total_value += value
        total_bound += bound
        summaries.append(ComponentSummary(
            a_nodes=len(component.a_nodes), b_nodes=len(component.b_nodes),
            candidates=len(component.candidates), objective=_unscale(value, scale),
            upper_bound=_unscale(bound, scale), method=method,
        ))

    chosen.sort()
    proven = all(summary.method != "unproven" for summary in summaries)
    message = ""
    if not problem.candidates:
        message = "no candidates: no pair of nodes of A and B was offered for matching"
    elif not components:
        message = "no candidates of positive weight: every candidate has weight 0"
    result = MatchingResult(
        pairs=tuple((problem.a_names[a], problem.b_names[b]) for a, b in chosen),
        objective=_unscale(total_value, scale),
        upper_bound=_unscale(total_bound, scale),
        status="optimal" if proven else "feasible",
        solver=solver,
        seconds=time.monotonic() - started,
        gap=(total_bound - total_value) / total_bound if total_bound else 0.0,
        components=tuple(summaries),
        message=message,
    )
    logger.info(
        "matching: %s matches, objective %s, bound %s, %s, %.2f s",
        len(result.pairs), result.objective, result.upper_bound, result.status, result.seconds,
    )
    return result


def _unscale(value: int, scale: int) -> float:
    return value if scale == 1 else value / scale


def is_acyclic_matching(
    graph_a: nx.DiGraph, graph_b: nx.DiGraph, pairs: Iterable[tuple[Hashable, Hashable]]
) -> bool:
    """Return whether ``pairs`` is a valid acyclic matching of ``graph_a`` and ``graph_b``.

    Independent of the solvers: it checks that every node is used at most once and
    exists, then merges each pair into one node of the union of both graphs and checks
    with networkx whether the result is a DAG.
    """
    pairs = list(pairs)
    used_a = [a for a, _ in pairs]
    used_b = [b for _, b in pairs]
    if len(set(used_a)) != len(used_a) or len(set(used_b)) != len(used_b):
        return False
    if any(a not in graph_a for a in used_a) or any(b not in graph_b for b in used_b):
        return False

    merged_name = {("B", b): ("A", a) for a, b in pairs}
    merged = nx.DiGraph()
    merged.add_nodes_from(("A", a) for a in graph_a.nodes)
    merged.add_nodes_from(merged_name.get(("B", b), ("B", b)) for b in graph_b.nodes)
    merged.add_edges_from((("A", u), ("A", v)) for u, v in graph_a.edges)
    merged.add_edges_from(
        (merged_name.get(("B", u), ("B", u)), merged_name.get(("B", v), ("B", v))) for u, v in graph_b.edges
    )
    return nx.is_directed_acyclic_graph(merged)
