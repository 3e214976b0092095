"""A pymoo ``Problem`` over a supernetwork's genotypes, so pymoo's algorithms can search it.

Objectives, both minimized as pymoo expects: ``1 - accuracy`` and MACs. Results are
memoized by the active positions and their values, so a genotype that selects an already
evaluated subnetwork costs nothing. A failed evaluation gets the worst possible values
(error 1 and infinite MACs) and is listed in :attr:`StitchPymooProblem.failures`.

Example (NSGA-II on integer genotypes)::

    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.optimize import minimize
    problem = StitchPymooProblem(factory())
    result = minimize(problem, nsga2_for(problem, population=32), ("n_evals", 1000), seed=0)
"""

from __future__ import annotations

import logging

import numpy as np
from pymoo.core.problem import ElementwiseProblem

from stitchc.runtime.search._problem import Genotype, Problem, active_key

__all__ = ["StitchPymooProblem", "nsga2_for"]

logger = logging.getLogger(__name__)


class StitchPymooProblem(ElementwiseProblem):
    """Wraps a :class:`stitchc.runtime.search.Problem` as a two-objective integer pymoo problem.

    Attributes:
        evaluations: genotypes passed to the wrapped problem's ``evaluate`` (memo hits excluded).
        failures: ``(genotype, message)`` for each failed evaluation.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        upper = np.array(problem.alphabet_sizes) - 1
        super().__init__(n_var=problem.genotype_length, n_obj=2, xl=np.zeros_like(upper), xu=upper, vtype=int)
        self._memo: dict[tuple, tuple[float, float]] = {}
        self.evaluations = 0
        self.failures: list[tuple[Genotype, str]] = []

    def objectives(self, genotype: Genotype) -> tuple[float, float]:
        """Return ``(1 - accuracy, macs)`` of ``genotype``, evaluating it only if its subnetwork is new."""
        key = active_key(genotype, frozenset(self.problem.active_positions(genotype)))
        if key not in self._memo:
            self.evaluations += 1
            try:
                result = self.problem.evaluate(genotype)
                self._memo[key] = (1.0 - float(result["accuracy"]), float(result["macs"]))
            except Exception as error:  # noqa: BLE001 - recorded as a failure, not a score
                logger.warning("evaluation of %s failed: %s", genotype, error)
                self.failures.append((genotype, f"{type(error).__name__}: {error}"))
                return 1.0, float("inf")
        return self._memo[key]

    def _evaluate(self, x, out, *args, **kwargs) -> None:
        genotype = tuple(int(value) for value in np.clip(np.rint(x), self.xl, self.xu))
        out["F"] = np.array(self.objectives(genotype))


def nsga2_for(problem: StitchPymooProblem, population: int = 32):
    """Return pymoo's NSGA-II set up for integer genotypes (rounded SBX and polynomial mutation)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    return NSGA2(
        pop_size=population,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0 / problem.n_var, eta=3.0, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
