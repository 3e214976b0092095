"""Tests of the torch-free matcher: hand cases, random DAG pairs, bad input, time limits."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stitchc.errors import CyclicGraphError, InvalidArgumentError, MatchingError
from stitchc.passes._bnb import search_lattice
from stitchc.passes._match_bounds import order_hint, upper_bound
from stitchc.passes._match_problem import build_problem, split_components
from stitchc.passes.matching import MatchingOptions, solve_matching, is_acyclic_matching

BNB = MatchingOptions(solver="bnb")
# CP-SAT alone, without the lattice search, so that it cross-checks the lattice search.
CPSAT_ONLY = MatchingOptions(solver="cpsat", lattice_states=0, workers=1)
CPSAT = MatchingOptions(solver="cpsat", workers=1)

BRANCHES = [(0, 1), (0, 2), (1, 3), (2, 4), (3, 4), (3, 5), (4, 5)]


def _solve_all(graph_a, graph_b, candidates, weights=None):
    return [
        solve_matching(graph_a, graph_b, candidates, weights=weights, options=options)
        for options in (BNB, CPSAT_ONLY, CPSAT)
    ]


def _brute_force(graph_a, graph_b, candidates, weights):
    best = 0
    for size in range(len(candidates) + 1):
        for subset in itertools.combinations(range(len(candidates)), size):
            pairs = [candidates[k] for k in subset]
            if is_acyclic_matching(graph_a, graph_b, pairs):
                best = max(best, sum(weights[k] for k in subset))
    return best


def test_identical_branching_dags_match_fully():
    graph = nx.DiGraph(BRANCHES)
    candidates = [(v, v) for v in range(6)] + [(1, 2), (2, 1), (3, 4), (4, 3)]
    for result in _solve_all(graph, graph, candidates):
        assert result.objective == 6
        assert result.status == "optimal"
        assert result.upper_bound == 6
        assert is_acyclic_matching(graph, graph, result.pairs)


def test_swapped_parallel_branches_are_allowed():
    graph = nx.DiGraph(BRANCHES)
    swapped = [(0, 0), (1, 2), (2, 1), (3, 3), (4, 4), (5, 5)]
    # Matching 1 with 2 (and 2 with 1) swaps the branches but keeps 3 -> 4 consistent,
    # because 1 and 2 are parallel in both graphs.
    assert is_acyclic_matching(graph, graph, swapped)
    for result in _solve_all(graph, graph, swapped):
        assert result.objective == 6
        assert set(result.pairs) == set(swapped)


def test_crossed_pair_forms_cycle():
    graph = nx.DiGraph(BRANCHES)
    candidates = [(0, 0), (1, 3), (3, 1)]
    # 1 precedes 3 in both graphs, so taking (1, 3) and (3, 1) merges 1~3' and 3~1',
    # giving 1 -> 3 -> 1 in the merged graph.
    assert not is_acyclic_matching(graph, graph, [(1, 3), (3, 1)])
    for result in _solve_all(graph, graph, candidates):
        assert result.objective == 2
        assert result.status == "optimal"
        assert (0, 0) in result.pairs
        assert is_acyclic_matching(graph, graph, result.pairs)


def test_parallel_chains_may_cross():
    graph = nx.DiGraph([(0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 5)])
    candidates = [(0, 0), (1, 4), (2, 2), (3, 3), (4, 1), (5, 5)]
    for result in _solve_all(graph, graph, candidates):
        assert result.objective == 6
        assert result.status == "optimal"
        assert is_acyclic_matching(graph, graph, result.pairs)


def test_longer_cycle_needs_ranks():
    # Four pairs, pairwise compatible, that still close a cycle through both graphs:
    # a0 -> a1 in A, b1 -> b2 in B, a2 -> a3 in A, b3 -> b0 in B.
    graph_a = nx.DiGraph([("a0", "a1"), ("a2", "a3")])
    graph_b = nx.DiGraph([("b1", "b2"), ("b3", "b0")])
    candidates = [("a0", "b0"), ("a1", "b1"), ("a2", "b2"), ("a3", "b3")]
    assert not is_acyclic_matching(graph_a, graph_b, candidates)
    for pair_subset in itertools.combinations(candidates, 2):
        assert is_acyclic_matching(graph_a, graph_b, pair_subset)
    for result in _solve_all(graph_a, graph_b, candidates):
        assert result.objective == 3
        assert result.status == "optimal"


def test_weights_change_the_choice():
    graph_a = nx.DiGraph([(0, 1)])
    graph_b = nx.DiGraph([("x", "y")])
    candidates = [(0, "y"), (1, "x"), (0, "x")]
    weights = {(0, "y"): 5, (1, "x"): 1, (0, "x"): 2}
    for result in _solve_all(graph_a, graph_b, candidates, weights):
        # (0, y) alone is worth 5; (0, x) with nothing else compatible besides... (1, y)
        # is no candidate, so 5 beats 2 and beats (1, x) + (0, y) which cross.
        assert result.pairs == ((0, "y"),)
        assert result.objective == 5


def test_fractional_weights_are_reported_in_caller_units():
    graph = nx.DiGraph([(0, 1)])
    result = solve_matching(graph, graph, [(0, 0), (1, 1)], weights=[0.25, 0.5], options=BNB)
    assert result.objective == pytest.approx(0.75)
    assert result.upper_bound == pytest.approx(0.75)


def _random_dag(rng: random.Random, n: int, density: float) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    for u in range(n):
        for v in range(u + 1, n):
            if rng.random() < density:
                graph.add_edge(u, v)
    return graph


def _random_instance(seed: int, n_a: int, n_b: int, density: float, ratio: float):
    rng = random.Random(seed)
    graph_a = _random_dag(rng, n_a, density)
    graph_b = _random_dag(rng, n_b, density)
    candidates = [(a, b) for a in range(n_a) for b in range(n_b) if rng.random() < ratio]
    weights = [rng.randint(1, 4) for _ in candidates]
    return graph_a, graph_b, candidates, weights


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    n_a=st.integers(1, 8),
    n_b=st.integers(1, 8),
    density=st.floats(0.0, 0.6),
    ratio=st.floats(0.1, 0.9),
    weighted=st.booleans(),
)
def test_solvers_agree_on_random_pairs(seed, n_a, n_b, density, ratio, weighted):
    graph_a, graph_b, candidates, weights = _random_instance(seed, n_a, n_b, density, ratio)
    weights = weights if weighted else None
    bnb = solve_matching(graph_a, graph_b, candidates, weights=weights, options=BNB)
    cpsat = solve_matching(graph_a, graph_b, candidates, weights=weights, options=CPSAT_ONLY)
    assert bnb.status == "optimal"
    assert cpsat.status == "optimal"
    assert bnb.objective == cpsat.objective
    assert is_acyclic_matching(graph_a, graph_b, bnb.pairs)
    assert is_acyclic_matching(graph_a, graph_b, cpsat.pairs)
    chosen_weights = dict(zip(candidates, weights)) if weighted else None
    for result in (bnb, cpsat):
        total = sum(chosen_weights[p] for p in result.pairs) if weighted else len(result.pairs)
        assert total == result.objective


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 5), density=st.floats(0.0, 0.7))
def test_lattice_matches_brute_force(seed, n, density):
    graph_a, graph_b, candidates, weights = _random_instance(seed, n, n, density, 0.5)
    if len(candidates) > 10:
        candidates, weights = candidates[:10], weights[:10]
    result = solve_matching(graph_a, graph_b, candidates, weights=weights, options=BNB)
    assert result.objective == _brute_force(graph_a, graph_b, candidates, weights)


@pytest.mark.parametrize("seed", range(20))
def test_hint_is_feasible_and_bounded(seed):
    graph_a, graph_b, candidates, weights = _random_instance(seed, 12, 12, 0.25, 0.4)
    problem = build_problem(graph_a, graph_b, candidates, weights)
    for component in split_components(problem):
        value, pairs = order_hint(component)
        bound = upper_bound(component)
        exact = search_lattice(component, (0, []), deadline=None, state_limit=None)
        assert exact.proven
        assert value <= exact.value <= bound
        names = [
            (problem.a_names[component.a_nodes[a]], problem.b_names[component.b_nodes[b]]) for a, b in pairs
        ]
        assert is_acyclic_matching(graph_a, graph_b, names)


def test_components_solved_separately_stay_acyclic():
    # Two "shapes" ordered the same way in both graphs: 0,1 (shape s) before 2,3 (shape t).
    graph_a = nx.DiGraph([(0, 1), (1, 2), (2, 3)])
    graph_b = nx.DiGraph([(0, 1), (1, 2), (2, 3)])
    candidates = [(a, b) for a in (0, 1) for b in (0, 1)] + [(a, b) for a in (2, 3) for b in (2, 3)]
    result = solve_matching(graph_a, graph_b, candidates, options=CPSAT)
    assert len(result.components) == 2
    assert result.objective == 4
    assert result.pairs == ((0, 0), (1, 1), (2, 2), (3, 3))


def test_time_limit_returns_feasible():
    # Wide random DAGs with random weights: the lattice search needs far more than 0.2 s.
    graph_a, graph_b, candidates, weights = _random_instance(0, 40, 40, 0.1, 0.2)
    options = MatchingOptions(solver="bnb", time_limit=0.2)
    result = solve_matching(graph_a, graph_b, candidates, weights=weights, options=options)
    assert result.status == "feasible"
    assert result.components[0].method == "unproven"
    assert result.objective < result.upper_bound
    assert result.gap == pytest.approx((result.upper_bound - result.objective) / result.upper_bound)
    assert is_acyclic_matching(graph_a, graph_b, result.pairs)


def test_cpsat_time_limit_returns_feasible():
    graph_a, graph_b, candidates, weights = _random_instance(0, 80, 80, 0.1, 0.2)
    options = MatchingOptions(solver="cpsat", time_limit=0.3, workers=1)
    result = solve_matching(graph_a, graph_b, candidates, weights=weights, options=options)
    assert result.status == "feasible"
    assert result.objective < result.upper_bound
    assert result.gap > 0
    assert is_acyclic_matching(graph_a, graph_b, result.pairs)


def test_cpsat_proves_what_lattice_cannot():
    graph_a, graph_b, candidates, weights = _random_instance(0, 30, 30, 0.15, 0.3)
    options = MatchingOptions(solver="cpsat", lattice_states=1000, workers=1)
    result = solve_matching(graph_a, graph_b, candidates, weights=weights, options=options)
    assert result.status == "optimal"
    assert result.components[0].method == "cpsat"
    assert result.objective == 100
    assert is_acyclic_matching(graph_a, graph_b, result.pairs)


def test_model_written_for_debugging(tmp_path):
    graph = nx.DiGraph(BRANCHES)
    path = tmp_path / "model.pbtxt"
    options = MatchingOptions(solver="cpsat", model_path=path)
    result = solve_matching(graph, graph, [(1, 3), (3, 1)], options=options)
    assert result.objective == 1
    text = path.read_text()
    assert "variables" in text
    assert 'name: "x1"' in text


def test_model_files_numbered_per_component(tmp_path):
    chain = nx.DiGraph([(0, 1), (1, 2), (2, 3)])
    candidates = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (3, 3)]
    options = MatchingOptions(solver="cpsat", model_path=tmp_path / "model.pb")
    result = solve_matching(chain, chain, candidates, options=options)
    assert len(result.components) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-0.pb", "model-1.pb", "model-2.pb"]


def test_no_candidates_gives_empty_matching():
    graph = nx.DiGraph([(0, 1)])
    result = solve_matching(graph, graph, [])
    assert result.pairs == ()
    assert result.objective == 0
    assert result.status == "optimal"
    assert "no candidates" in result.message


def test_unknown_node_is_rejected():
    graph = nx.DiGraph([(0, 1)])
    with pytest.raises(MatchingError, match="node 7, which is not in graph B"):
        solve_matching(graph, graph, [(0, 7)])


def test_cyclic_graph_is_named():
    cyclic = nx.DiGraph([("p", "q"), ("q", "r"), ("r", "p")])
    with pytest.raises(CyclicGraphError, match="graph B already contains the cycle"):
        solve_matching(nx.DiGraph([(0, 1)]), cyclic, [(0, "p")])


def test_repeated_candidate_is_rejected():
    graph = nx.DiGraph([(0, 1)])
    with pytest.raises(InvalidArgumentError, match="listed twice"):
        solve_matching(graph, graph, [(0, 0), (0, 0)])


@pytest.mark.parametrize(
    "weights, message",
    [([1.0], "1 entries for 2 candidates"), ([1, -2], "negative"), ([1, float("nan")], "not a finite number")],
)
def test_bad_weights_are_rejected(weights, message):
    graph = nx.DiGraph([(0, 1)])
    with pytest.raises(InvalidArgumentError, match=message):
        solve_matching(graph, graph, [(0, 0), (1, 1)], weights=weights)


def test_bad_options_are_rejected():
    with pytest.raises(InvalidArgumentError, match="solver 'gurobi' is unknown"):
        MatchingOptions(solver="gurobi")
    with pytest.raises(InvalidArgumentError, match="time_limit 0 is not positive"):
        MatchingOptions(time_limit=0)


def test_checker_rejects_reused_node():
    graph = nx.DiGraph([(0, 1)])
    assert not is_acyclic_matching(graph, graph, [(0, 0), (0, 1)])
    assert not is_acyclic_matching(graph, graph, [(0, 9)])
