"""What every search algorithm shares: slots, proposals, scalarized comparison, weight reassignment.

An algorithm is written as one generator per population slot. The generator yields a
:class:`Proposal` (a genotype to evaluate, with the already evaluated solutions it was
derived from) and receives the evaluated :class:`Solution` back; then it integrates the
result and yields the next proposal. The driver decides whether a proposal needs an
evaluation at all (it skips those whose changes touch only inactive positions of a
reference, and reuses memoized results), so the algorithms never see the executor.

Because all random choices come from one generator and the driver feeds results in the
order it records them, replaying a run's archive reproduces the algorithm's state exactly;
resuming relies on this.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from stitchc.runtime.search._archive import Archive
from stitchc.runtime.search._init import biased_population
from stitchc.runtime.search._problem import Genotype
from stitchc.runtime.search._scalarize import ObjectiveRanges, compare, reassign_weights, weight_vectors
from stitchc.runtime.search._solution import Solution

__all__ = ["Proposal", "SlotAlgorithm", "SlotLoop"]


@dataclass(frozen=True)
class Proposal:
    """A genotype to evaluate, and the evaluated solutions it was made from.

    ``references`` are the parents whose active sets it inherits: if it differs from one of
    them only at positions inactive there, it selects the same subnetwork and is skipped.
    """

    genotype: Genotype
    references: tuple[Solution, ...] = ()


SlotLoop = Generator[Proposal, Solution, None]
"""A slot's loop: yields proposals, receives their evaluated solutions, returns when it stops."""


class SlotAlgorithm:
    """Base of the algorithms: a population of ``n`` slots with one Tchebycheff weight each.

    Attributes:
        population: the current solution of each slot (``None`` until its first result).
        weights: the error-objective weight of each slot's Tchebycheff scalarization.
        completed: the number of results integrated, or of GOM applications for GOMEA; the
            weights are reassigned whenever it reaches a multiple of ``n``.
    """

    def __init__(
        self,
        alphabet_sizes: tuple[int, ...],
        population_size: int,
        rng: np.random.Generator,
        archive: Archive,
        threshold: Callable[[], float],
        stitch_probability: float | None,
    ) -> None:
        self.alphabet_sizes = alphabet_sizes
        self.length = len(alphabet_sizes)
        self.size = population_size
        self.rng = rng
        self.archive = archive
        self.threshold = threshold
        self.stitch_probability = stitch_probability
        self.population: list[Solution | None] = [None] * population_size
        self.weights = weight_vectors(population_size)
        self.completed = 0

    def initial_genotypes(self) -> list[Genotype]:
        """Draw the initial population from the biased distribution."""
        return biased_population(self.size, self.alphabet_sizes, self.rng, self.stitch_probability)

    def set_initial(self, slot: int, solution: Solution) -> None:
        """Store the evaluated initial solution of ``slot``."""
        self.population[slot] = solution

    def slot_loop(self, slot: int) -> SlotLoop:
        """Return the generator that runs ``slot`` once the initial population is evaluated."""
        raise NotImplementedError

    # Helpers for subclasses.

    def evaluated_population(self) -> list[Solution]:
        """Return the slots' solutions, leaving out slots without a result yet."""
        return [solution for solution in self.population if solution is not None]

    def compare_in_slot(self, candidate: Solution, incumbent: Solution, slot: int) -> int:
        """Compare under ``slot``'s weight: -1 candidate better, 0 equal, 1 worse."""
        ranges = ObjectiveRanges.of(self.evaluated_population())
        return compare(candidate, incumbent, self.weights[slot], ranges, self.threshold())

    def reassign_weights(self) -> None:
        """Hand each weight, in random order, to the best slot that has no new weight yet."""
        population = self.evaluated_population()
        if len(population) != self.size:
            return
        ranges = ObjectiveRanges.of(population)
        self.weights = reassign_weights(population, weight_vectors(self.size), ranges, self.rng)
