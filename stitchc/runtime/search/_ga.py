"""The asynchronous steady-state genetic algorithm.

Each slot repeatedly picks two distinct parents at random, makes one child by two-point
crossover and per-position mutation, and, once the child is evaluated, replaces one of the
two parents at random among those the child is not worse than under that parent's slot
weight (it is dropped if there is none). Weights are reassigned after every ``n``
completed evaluations, skipped ones included.
"""

from __future__ import annotations

import numpy as np

from stitchc.runtime.search._algorithm import Proposal, SlotAlgorithm, SlotLoop
from stitchc.runtime.search._problem import Genotype

__all__ = ["GeneticAlgorithm", "two_point_crossover", "mutate"]


def two_point_crossover(first: Genotype, second: Genotype, rng: np.random.Generator) -> tuple[Genotype, Genotype]:
    """Swap the segment between two distinct cut points and return both children.

    The cuts ``0 < c1 < c2 < l`` leave all three segments non-empty, so each child of an
    all-zeros and an all-ones parent has exactly three runs, and the children are
    complementary. Genotypes need at least 3 positions.
    """
    length = len(first)
    cut_first, cut_second = sorted(int(cut) for cut in rng.choice(np.arange(1, length), size=2, replace=False))
    child_first = first[:cut_first] + second[cut_first:cut_second] + first[cut_second:]
    child_second = second[:cut_first] + first[cut_first:cut_second] + second[cut_second:]
    return child_first, child_second


def mutate(genotype: Genotype, alphabet_sizes: tuple[int, ...], rng: np.random.Generator) -> Genotype:
    """Change each position with probability ``1 / l`` to a different value, drawn uniformly."""
    length = len(genotype)
    values = list(genotype)
    for position in np.flatnonzero(rng.random(length) < 1.0 / length):
        size = alphabet_sizes[position]
        shift = int(rng.integers(1, size))
        values[position] = (values[position] + shift) % size
    return tuple(values)


class GeneticAlgorithm(SlotAlgorithm):
    """Two-point crossover, 1/l mutation and Tchebycheff replacement of a random parent."""

    def slot_loop(self, slot: int) -> SlotLoop:
        while True:
            first, second = (int(index) for index in self.rng.choice(self.size, size=2, replace=False))
            parents = (self.population[first], self.population[second])
            child, _ = two_point_crossover(parents[0].genotype, parents[1].genotype, self.rng)
            child = mutate(child, self.alphabet_sizes, self.rng)

            solution = yield Proposal(child, references=parents)

            # Other slots may have replaced a parent meanwhile: compare with the current occupant.
            replaceable = [
                index
                for index in (first, second)
                if self.compare_in_slot(solution, self.population[index], index) <= 0
            ]
            if replaceable:
                self.population[replaceable[int(self.rng.integers(len(replaceable)))]] = solution

            self.completed += 1
            if self.completed % self.size == 0:
                self.reassign_weights()
