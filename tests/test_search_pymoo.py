"""Tests of the pymoo adapter on the synthetic chain problem."""

import numpy as np
from pymoo.optimize import minimize

from search_problems import ChainProblem
from stitchc.runtime.search.pymoo_problem import StitchPymooProblem, nsga2_for


def test_pymoo_objectives_match_problem():
    problem = ChainProblem(4, seed=0)
    adapter = StitchPymooProblem(problem)
    genotype = (0, 0, 1, 0, 0, 0, 0, 0, 2)
    expected = problem.evaluate(genotype)
    assert adapter.objectives(genotype) == (1.0 - expected["accuracy"], float(expected["macs"]))
    assert adapter.n_var == 9
    assert adapter.xu.tolist() == [1] * 8 + [2]


def test_pymoo_memoizes_by_active_part():
    adapter = StitchPymooProblem(ChainProblem(4, seed=0))
    adapter.objectives((0, 0, 0, 0, 0, 0, 0, 0, 0))
    adapter.objectives((0, 1, 0, 1, 0, 1, 0, 1, 0))  # only B's switches changed: same subnetwork
    assert adapter.evaluations == 1


def test_pymoo_failure_gets_worst_values():
    adapter = StitchPymooProblem(ChainProblem(4, seed=0, fail_from_stitches=1))
    assert adapter.objectives((1, 0, 0, 0, 0, 0, 0, 0, 0)) == (1.0, float("inf"))
    assert adapter.failures[0][1].startswith("RuntimeError")


def test_nsga2_runs_on_adapter():
    adapter = StitchPymooProblem(ChainProblem(5, seed=0))
    result = minimize(adapter, nsga2_for(adapter, population=12), ("n_evals", 120), seed=1)
    assert result.F.shape[1] == 2
    assert np.all(result.X == np.rint(result.X))
    assert adapter.evaluations <= 120
