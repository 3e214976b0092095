"""Tchebycheff scalarization on normalized objectives, and the constraint-annealing threshold.

Both objectives are turned into minimization: ``1 - accuracy`` and ``macs``. Each is
normalized by the range it spans over the current population, and a weight vector
``(w, 1 - w)`` turns the pair into one number, ``max(w * f1, (1 - w) * f2)``.

Comparisons first look at the constraint: the violation is how far the accuracy falls
below the annealing threshold (zero at or above it). Less violation wins; equal violation,
for example two feasible solutions, falls through to the scalarized comparison. A failed
evaluation loses to every solution that did not fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stitchc.runtime.search._solution import Solution

__all__ = [
    "ObjectiveRanges",
    "tchebycheff",
    "weight_vectors",
    "compare",
    "violation",
    "annealed_threshold",
    "reassign_weights",
]


@dataclass(frozen=True)
class ObjectiveRanges:
    """Minimum and span of each minimized objective (``1 - accuracy``, ``macs``) over a population."""

    error_min: float
    error_span: float
    macs_min: float
    macs_span: float

    @classmethod
    def of(cls, population: Sequence[Solution]) -> ObjectiveRanges:
        """Measure the ranges over the population members that did not fail (unit ranges if none did)."""
        evaluated = [solution for solution in population if not solution.failed]
        if not evaluated:
            return cls(0.0, 1.0, 0.0, 1.0)
        errors = [1.0 - solution.accuracy for solution in evaluated]
        macs = [solution.macs for solution in evaluated]
        # A zero span would divide by zero; any positive span ranks the equal values alike.
        error_span = (max(errors) - min(errors)) or 1.0
        macs_span = (max(macs) - min(macs)) or 1.0
        return cls(min(errors), error_span, min(macs), macs_span)

    def normalize(self, solution: Solution) -> tuple[float, float]:
        """Return the solution's minimized objectives scaled to [0, 1] over the population."""
        error = (1.0 - solution.accuracy - self.error_min) / self.error_span
        macs = (solution.macs - self.macs_min) / self.macs_span
        return error, macs


def tchebycheff(solution: Solution, weight: float, ranges: ObjectiveRanges) -> float:
    """Return ``max(weight * error, (1 - weight) * macs)`` on normalized objectives (infinity if failed)."""
    if solution.failed:
        return math.inf
    error, macs = ranges.normalize(solution)
    return max(weight * error, (1.0 - weight) * macs)


def weight_vectors(count: int) -> list[float]:
    """Return ``count`` weights for the error objective, evenly spaced strictly inside (0, 1).

    The weight of MACs is one minus it. Keeping both weights positive means no weight
    vector ignores an objective entirely.
    """
    return [(index + 0.5) / count for index in range(count)]


def violation(solution: Solution, threshold: float) -> float:
    """Return how far the accuracy falls below ``threshold``; 0 when it is at or above it."""
    if solution.failed:
        return math.inf
    return max(0.0, threshold - solution.accuracy)


def compare(candidate: Solution, incumbent: Solution, weight: float, ranges: ObjectiveRanges, threshold: float) -> int:
    """Return -1 when ``candidate`` is better than ``incumbent``, 1 when worse, 0 when equal.

    Failed evaluations lose to any other, less constraint violation wins, and equal
    violation falls through to the Tchebycheff values under ``weight``.
    """
    if candidate.failed or incumbent.failed:
        return int(candidate.failed) - int(incumbent.failed)
    candidate_violation = violation(candidate, threshold)
    incumbent_violation = violation(incumbent, threshold)
    if candidate_violation != incumbent_violation:
        return -1 if candidate_violation < incumbent_violation else 1
    candidate_value = tchebycheff(candidate, weight, ranges)
    incumbent_value = tchebycheff(incumbent, weight, ranges)
    if candidate_value == incumbent_value:
        return 0
    return -1 if candidate_value < incumbent_value else 1


def annealed_threshold(evaluations: int, budget: int, target: float) -> float:
    """Return the accuracy threshold after ``evaluations`` of ``budget``.

    It rises linearly from 0 to ``target``, reached when half the budget is used, and stays
    there.
    """
    half = budget / 2.0
    if half <= 0:
        return target
    return target * min(1.0, evaluations / half)


def reassign_weights(
    population: Sequence[Solution], weights: Sequence[float], ranges: ObjectiveRanges, rng: np.random.Generator
) -> list[float]:
    """Return new per-slot weights: each weight, in random order, goes to the best unassigned slot.

    "Best" is the lowest Tchebycheff value under that weight among the slots that have no
    new weight yet; ties go to the lowest slot index.
    """
    new_weights: list[float | None] = [None] * len(population)
    for weight_index in rng.permutation(len(weights)):
        weight = weights[weight_index]
        unassigned = [slot for slot in range(len(population)) if new_weights[slot] is None]
        best = min(unassigned, key=lambda slot: tchebycheff(population[slot], weight, ranges))
        new_weights[best] = weight
    return [float(weight) for weight in new_weights]
