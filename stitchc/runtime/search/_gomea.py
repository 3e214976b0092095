"""GOMEA and LK-GOMEA, asynchronous, with Tchebycheff scalarizations.

Each slot applies gene-pool optimal mixing (GOM) to its solution over and over. One GOM
application walks the subsets of a linkage tree (root removed, random order); for each
subset it copies a random donor's values there and, when that changes the genotype,
evaluates the result and keeps it unless it is strictly worse under the slot's weight.
After more than ``1 + floor(log10(n))`` applications in a row without a strict
improvement, forced improvement copies subsets from random archive members instead and
keeps only a strict improvement (stopping at the first); if none comes, the slot takes a
random archive member. Weights are reassigned after every ``n`` GOM applications.

GOMEA learns one linkage tree over the whole population, relearned after every ``n`` GOM
applications. LK-GOMEA learns a tree per GOM application over the slot's ``k`` nearest
neighbours (Hamming distance), with ``k`` drawn by :func:`neighbourhood_size`, and takes
donors from those neighbours.

A slot whose GOM application and forced improvement propose nothing (every donor equals
it: its neighbourhood has converged) stops.
"""

from __future__ import annotations

import math

from stitchc.runtime.search._algorithm import Proposal, SlotAlgorithm, SlotLoop
from stitchc.runtime.search._linkage import learn_linkage_tree, nearest_neighbours, neighbourhood_size


__all__ = ["Gomea", "LinkageKernelGomea"]


class Gomea(SlotAlgorithm):
    """GOMEA with one population-wide UPGMA linkage tree."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.no_improvement_limit = 1 + int(math.floor(math.log10(self.size)))
        self._linkage_tree: list[tuple[int, ...]] | None = None

    def _linkage_for(self, slot: int) -> tuple[list[tuple[int, ...]], list[int]]:
        """Return the linkage subsets in random order and the slots donors come from."""
        if self._linkage_tree is None:
            genotypes = [solution.genotype for solution in self.evaluated_population()]
            self._linkage_tree = learn_linkage_tree(genotypes, self.alphabet_sizes, self.rng)
        order = self.rng.permutation(len(self._linkage_tree))
        subsets = [self._linkage_tree[index] for index in order]
        return subsets, [index for index in range(self.size) if index != slot]

    def _after_application(self) -> None:
        self.completed += 1
        if self.completed % self.size == 0:
            self.reassign_weights()
            self._linkage_tree = None

    def slot_loop(self, slot: int) -> SlotLoop:
        stretch = 0
        while True:
            subsets, donors = self._linkage_for(slot)
            improved, proposed = yield from self._mix(slot, subsets, donors)
            stretch = 0 if improved else stretch + 1

            if stretch > self.no_improvement_limit:
                forced_improved, forced_proposed = yield from self._force_improvement(slot, subsets)
                proposed = proposed or forced_proposed
                if not forced_improved and len(self.archive):
                    members = self.archive.members
                    self.population[slot] = members[int(self.rng.integers(len(members)))]
                stretch = 0

            self._after_application()
            if not proposed:
                return

    def _mix(self, slot: int, subsets: list[tuple[int, ...]], donors: list[int]):
        """Run one GOM application on ``slot``; return (strictly improved, proposed anything)."""
        improved = proposed = False
        for subset in subsets:
            if not donors:
                break
            donor = self.population[donors[int(self.rng.integers(len(donors)))]]
            current = self.population[slot]
            candidate_genotype = _copy_subset(current.genotype, donor.genotype, subset)
            if candidate_genotype == current.genotype:
                continue

            proposed = True
            candidate = yield Proposal(candidate_genotype, references=(current,))
            outcome = self.compare_in_slot(candidate, self.population[slot], slot)
            if outcome <= 0:
                self.population[slot] = candidate
            improved = improved or outcome < 0
        return improved, proposed

    def _force_improvement(self, slot: int, subsets: list[tuple[int, ...]]):
        """Copy subsets from random archive members; keep the first strict improvement."""
        members = self.archive.members
        proposed = False
        for subset in subsets:
            if not members:
                break
            donor = members[int(self.rng.integers(len(members)))]
            current = self.population[slot]
            candidate_genotype = _copy_subset(current.genotype, donor.genotype, subset)
            if candidate_genotype == current.genotype:
                continue

            proposed = True
            candidate = yield Proposal(candidate_genotype, references=(current,))
            if self.compare_in_slot(candidate, self.population[slot], slot) < 0:
                self.population[slot] = candidate
                return True, proposed
        return False, proposed


class LinkageKernelGomea(Gomea):
    """LK-GOMEA: a linkage tree per GOM application, learned over the slot's nearest neighbours."""

    def __init__(self, *args, min_neighbourhood: int = 5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.min_neighbourhood = min_neighbourhood

    def _linkage_for(self, slot: int) -> tuple[list[tuple[int, ...]], list[int]]:
        count = neighbourhood_size(self.size, self.min_neighbourhood, self.rng)
        genotypes = [solution.genotype for solution in self.population]
        neighbours = nearest_neighbours(self.population[slot].genotype, genotypes, count, self.rng)
        subsets = learn_linkage_tree([genotypes[index] for index in neighbours], self.alphabet_sizes, self.rng)
        return subsets, [index for index in neighbours if index != slot]

    def _after_application(self) -> None:
        self.completed += 1
        if self.completed % self.size == 0:
            self.reassign_weights()


def _copy_subset(receiver: tuple[int, ...], donor: tuple[int, ...], subset: tuple[int, ...]) -> tuple[int, ...]:
    """Return ``receiver`` with the values of ``donor`` at the positions in ``subset``."""
    values = list(receiver)
    for position in subset:
        values[position] = donor[position]
    return tuple(values)
