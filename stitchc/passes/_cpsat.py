"""The CP-SAT model of one matching component, built apart from solving it.

Variables (local indices of the component):

* ``x[k]``: bool, candidate k is chosen.
* ``rank_a[i]``, ``rank_b[j]``: int, a position in a topological order of the merged
  graph. Such ranks exist exactly when the merged graph is acyclic.

Constraints, each family in plain words:

1. rank(u) + 1 <= rank(v) whenever u reaches v in A (only immediate predecessors are
   posted, the rest follows); likewise in B.
2. x[k] implies rank_a[a] == rank_b[b] for candidate k = (a, b).
3. At most one chosen candidate per node.
4. Valid inequalities: two candidates (a1, b1), (a2, b2) with a1 before a2 in A and b2
   before b1 in B form a 2-cycle, so at most one of them is chosen. Their number is
   quadratic in the candidates, so at most ``CONFLICT_CAP`` of them are posted.
5. Symmetry breaking: when two nodes of one graph have the same predecessors, the same
   successors and the same weighted partners, the later one is matched only if the
   earlier one is.
6. The objective is at most the component's upper bound.

Rank domains are narrowed by reachability: a node with d placed predecessors has a rank of
at least d, and one with h successors has a rank of at most (the maximum rank) - h.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from stitchc.errors import MatchingError
from stitchc.passes._match_bounds import covering_relation, merged_ranks
from stitchc.passes._match_problem import Component

__all__ = ["CpSatModel", "CpSatOutcome", "build_model", "solve_model", "write_model"]

logger = logging.getLogger(__name__)

#: Maximum number of 2-cycle inequalities posted per component.
CONFLICT_CAP = 200_000


@dataclasses.dataclass
class CpSatModel:
    """A built model and the handles needed to read a solution from it."""

    model: object
    x: list
    rank_a: list
    rank_b: list
    conflicts: int


@dataclasses.dataclass(frozen=True)
class CpSatOutcome:
    """Result of solving one component with CP-SAT.

    Attributes:
        value: Weight of the best matching found (the hint's weight if CP-SAT found none).
        pairs: Its ``(local_a, local_b)`` pairs.
        bound: Best proven upper bound of this component.
        proven: True when CP-SAT proved optimality.
        status: CP-SAT's status name.
    """

    value: int
    pairs: list[tuple[int, int]]
    bound: int
    proven: bool
    status: str


def build_model(component: Component, upper_bound: int, hint: list[tuple[int, int]] | None) -> CpSatModel:
    """Build the CP-SAT model of ``component``; see the module docstring for its parts."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    n_a, n_b = len(component.a_nodes), len(component.b_nodes)
    max_rank = n_a + n_b - 1
    a_succs, b_succs = component.a_succs, component.b_succs

    # Ranks with domains narrowed by the number of predecessors and successors.
    rank_a = [
        model.NewIntVar(component.a_preds[i].bit_count(), max_rank - a_succs[i].bit_count(), f"rank_a{i}")
        for i in range(n_a)
    ]
    rank_b = [
        model.NewIntVar(component.b_preds[j].bit_count(), max_rank - b_succs[j].bit_count(), f"rank_b{j}")
        for j in range(n_b)
    ]

    # 1. Precedence along immediate predecessors.
    for ranks, preds in ((rank_a, component.a_preds), (rank_b, component.b_preds)):
        for v, before in enumerate(covering_relation(preds)):
            for u in before:
                model.Add(ranks[u] + 1 <= ranks[v])

    # 2. and 3. Chosen candidates share a rank; one choice per node.
    x = [model.NewBoolVar(f"x{k}") for k in range(len(component.candidates))]
    by_a: list[list] = [[] for _ in range(n_a)]
    by_b: list[list] = [[] for _ in range(n_b)]
    for k, (a, b, _, _) in enumerate(component.candidates):
        model.Add(rank_a[a] == rank_b[b]).OnlyEnforceIf(x[k])
        by_a[a].append(x[k])
        by_b[b].append(x[k])
    for group in by_a + by_b:
        if len(group) > 1:
            model.AddAtMostOne(group)

    conflicts = _add_conflicts(model, component, x, a_succs)
    _add_symmetry_breaking(model, component, by_a, by_b)

    # 6. Objective, capped by the upper bound.
    objective = sum(w * x[k] for k, (_, _, w, _) in enumerate(component.candidates))
    model.Add(objective <= upper_bound)
    model.Maximize(objective)

    if hint is not None:
        _add_hint(model, component, hint, x, rank_a, rank_b)
    return CpSatModel(model, x, rank_a, rank_b, conflicts)


def _add_conflicts(model, component: Component, x: list, a_succs: tuple[int, ...]) -> int:
    """Post 4.: pairs of candidates whose orders in A and B contradict each other."""
    b_preds = component.b_preds
    by_a_node: dict[int, list[tuple[int, int]]] = {}
    for k, (a, b, _, _) in enumerate(component.candidates):
        by_a_node.setdefault(a, []).append((b, k))

    count = 0
    for k1, (a1, b1, _, _) in enumerate(component.candidates):
        later_a = a_succs[a1]
        earlier_b = b_preds[b1]
        if not later_a or not earlier_b:
            continue
        for a2 in range(later_a.bit_length()):
            if not later_a >> a2 & 1:
                continue
            for b2, k2 in by_a_node.get(a2, ()):
                if earlier_b >> b2 & 1:
                    model.AddBoolOr([x[k1].Not(), x[k2].Not()])
                    count += 1
                    if count >= CONFLICT_CAP:
                        return count
    return count


def _add_symmetry_breaking(model, component: Component, by_a: list[list], by_b: list[list]) -> None:
    """Post 5.: order interchangeable nodes of the same graph."""
    partners_a: list[list] = [[] for _ in component.a_nodes]
    partners_b: list[list] = [[] for _ in component.b_nodes]
    for a, b, w, _ in component.candidates:
        partners_a[a].append((b, w))
        partners_b[b].append((a, w))
    sides = (
        (component.a_preds, component.a_succs, partners_a, by_a),
        (component.b_preds, component.b_succs, partners_b, by_b),
    )
    for preds, succs, partners, chosen in sides:
        groups: dict[tuple, list[int]] = {}
        for v in range(len(preds)):
            signature = (preds[v], succs[v], tuple(sorted(partners[v])))
            groups.setdefault(signature, []).append(v)
        for members in groups.values():
            for earlier, later in zip(members, members[1:]):
                model.Add(sum(chosen[later]) <= sum(chosen[earlier]))


def _add_hint(model, component: Component, hint, x, rank_a, rank_b) -> None:
    ranks = merged_ranks(component, hint)
    if ranks is None:
        raise MatchingError("the matching hint contains a cycle; this is a bug in stitchc's hint")
    chosen = set(hint)
    for k, (a, b, _, _) in enumerate(component.candidates):
        model.AddHint(x[k], (a, b) in chosen)
    for var, value in zip(rank_a, ranks[0]):
        model.AddHint(var, value)
    for var, value in zip(rank_b, ranks[1]):
        model.AddHint(var, value)


def write_model(built: CpSatModel, path: Path) -> None:
    """Write the model as a text protocol buffer (``.pbtxt``) or binary (any other suffix)."""
    if not built.model.ExportToFile(str(path)):
        raise MatchingError(f"could not write the CP-SAT model to {path}; check that the folder exists")


def solve_model(
    built: CpSatModel,
    component: Component,
    *,
    upper_bound: int,
    hint_value: int,
    hint: list[tuple[int, int]],
    deadline: float | None,
    workers: int,
    seed: int,
) -> CpSatOutcome:
    """Solve a built model and map every CP-SAT status to an outcome.

    Raises:
        MatchingError: CP-SAT reports the model invalid or infeasible (the empty matching
            is always feasible, so either is a bug).
    """
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    if deadline is not None:
        solver.parameters.max_time_in_seconds = max(0.01, deadline - time.monotonic())
    status = solver.Solve(built.model)
    name = solver.StatusName(status)
    logger.debug("CP-SAT status %s, objective %s, bound %s", name, solver.ObjectiveValue(), solver.BestObjectiveBound())

    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        pairs = [(a, b) for k, (a, b, _, _) in enumerate(component.candidates) if solver.Value(built.x[k])]
        value = sum(w for k, (_, _, w, _) in enumerate(component.candidates) if solver.Value(built.x[k]))
        bound = min(upper_bound, int(solver.BestObjectiveBound() + 1e-6))
        if value < hint_value:
            pairs, value = hint, hint_value
        proven = status == cp_model.OPTIMAL or value >= bound
        return CpSatOutcome(value, pairs, max(bound, value), proven, name)
    if status == cp_model.UNKNOWN:
        # Time ran out before CP-SAT reported a solution, so the hint is returned.
        return CpSatOutcome(hint_value, hint, upper_bound, hint_value >= upper_bound, name)
    if status == cp_model.MODEL_INVALID:
        raise MatchingError(f"CP-SAT rejected the matching model as invalid: {built.model.Validate()}")
    raise MatchingError(f"CP-SAT reported the matching model {name}, but the empty matching is always feasible")
