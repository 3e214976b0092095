"""Unit tests of the search's building blocks: archive, scalarization, initialization, variation, linkage."""

import math

import numpy as np
import pytest

from stitchc.errors import InvalidArgumentError
from stitchc.runtime.search import Archive, biased_population, default_stitch_probability, hypervolume
from stitchc.runtime.search import HypervolumeReference, Solution, changes_only_inactive
from stitchc.runtime.search._ga import mutate, two_point_crossover
from stitchc.runtime.search._linkage import (
    nearest_neighbours,
    neighbourhood_size,
    normalized_mutual_information,
    upgma_linkage_tree,
)
from stitchc.runtime.search._scalarize import ObjectiveRanges, annealed_threshold, compare, reassign_weights, tchebycheff


def point(accuracy, macs, genotype=(0, 0, 0)):
    return Solution(genotype, {"accuracy": accuracy, "macs": macs}, frozenset({2}))


def failed(genotype=(0, 0, 0)):
    return Solution(genotype, None, frozenset({2}), "RuntimeError: boom")


# Archive rules.


def test_archive_rejects_equal_point():
    archive = Archive()
    assert archive.add(point(0.8, 100))
    assert not archive.add(point(0.8, 100, genotype=(1, 0, 0)))
    assert len(archive) == 1


def test_archive_rejects_dominated_point():
    archive = Archive()
    archive.add(point(0.8, 100))
    assert not archive.add(point(0.7, 100))
    assert not archive.add(point(0.8, 120))
    assert not archive.add(point(0.6, 150))
    assert len(archive) == 1


def test_archive_dominating_point_evicts():
    archive = Archive()
    archive.add(point(0.8, 100))
    archive.add(point(0.9, 200))
    archive.add(point(0.5, 50))
    assert archive.add(point(0.85, 90))
    objectives = sorted((member.accuracy, member.macs) for member in archive)
    assert objectives == [(0.5, 50.0), (0.85, 90.0), (0.9, 200.0)]


def test_archive_keeps_trade_off_points():
    archive = Archive()
    assert archive.add(point(0.8, 100))
    assert archive.add(point(0.9, 200))
    assert len(archive) == 2


def test_archive_threshold_purges_and_keeps_equal():
    archive = Archive()
    for accuracy, macs in ((0.3, 10), (0.5, 20), (0.9, 40)):
        archive.add(point(accuracy, macs))
    assert archive.set_threshold(0.5) == 1
    assert sorted(member.accuracy for member in archive) == [0.5, 0.9]
    assert not archive.add(point(0.45, 5))


def test_archive_rejects_failed():
    archive = Archive()
    assert not archive.add(failed())
    assert len(archive) == 0


# Threshold comparison with slack, and the annealing schedule.


def test_compare_less_violation_wins():
    ranges = ObjectiveRanges(0.0, 1.0, 0.0, 1000.0)
    below = point(0.40, 10)
    further_below = point(0.30, 5)
    feasible = point(0.60, 900)
    assert compare(below, further_below, 0.5, ranges, threshold=0.5) == -1
    assert compare(feasible, below, 0.5, ranges, threshold=0.5) == -1
    assert compare(further_below, feasible, 0.5, ranges, threshold=0.5) == 1


def test_compare_both_feasible_falls_through():
    ranges = ObjectiveRanges(0.0, 1.0, 0.0, 1000.0)
    accurate = point(0.9, 800)  # values: max(0.5 * 0.1, 0.5 * 0.8) = 0.4
    cheap = point(0.6, 100)  # values: max(0.5 * 0.4, 0.5 * 0.1) = 0.2
    assert compare(cheap, accurate, 0.5, ranges, threshold=0.5) == -1
    assert compare(accurate, cheap, 0.5, ranges, threshold=0.5) == 1


def test_compare_threshold_value_is_feasible():
    ranges = ObjectiveRanges(0.0, 1.0, 0.0, 1000.0)
    at_threshold = point(0.5, 100)  # 0.5 * 0.5 = 0.25
    above = point(0.7, 600)  # max(0.15, 0.3) = 0.3
    # At the threshold there is no violation, so the scalarized values decide.
    assert compare(at_threshold, above, 0.5, ranges, threshold=0.5) == -1


def test_compare_equal_violation_falls_through():
    ranges = ObjectiveRanges(0.0, 1.0, 0.0, 1000.0)
    first = point(0.4, 100)
    second = point(0.4, 300)
    # Both violate by 0.1; weight 0.1: max(0.06, 0.09) = 0.09 against max(0.06, 0.27) = 0.27.
    assert compare(first, second, 0.1, ranges, threshold=0.5) == -1


def test_compare_failed_loses():
    ranges = ObjectiveRanges(0.0, 1.0, 0.0, 1.0)
    assert compare(failed(), point(0.01, 10**9), 0.5, ranges, threshold=0.5) == 1
    assert compare(point(0.01, 10**9), failed(), 0.5, ranges, threshold=0.5) == -1
    assert compare(failed(), failed(), 0.5, ranges, threshold=0.5) == 0


def test_threshold_reaches_target_at_half_budget():
    assert annealed_threshold(500, 1000, 0.5) == 0.5
    assert annealed_threshold(0, 1000, 0.5) == 0.0
    assert annealed_threshold(250, 1000, 0.5) == 0.25
    assert annealed_threshold(900, 1000, 0.5) == 0.5


def test_tchebycheff_uses_population_ranges():
    ranges = ObjectiveRanges.of([point(0.9, 200), point(0.7, 100)])
    # error 0.2 -> (0.2 - 0.1) / 0.2 = 0.5 ; macs 150 -> 0.5
    assert tchebycheff(point(0.8, 150), 0.25, ranges) == pytest.approx(0.375)
    assert tchebycheff(failed(), 0.25, ranges) == math.inf


def test_reassign_weights_gives_each_slot_one():
    population = [point(0.9, 200), point(0.7, 100), point(0.8, 150)]
    ranges = ObjectiveRanges.of(population)
    weights = reassign_weights(population, [1 / 6, 3 / 6, 5 / 6], ranges, np.random.default_rng(0))
    assert sorted(weights) == [1 / 6, 3 / 6, 5 / 6]
    # The largest error weight favours the most accurate slot, whatever the order drawn.
    assert weights[0] == 5 / 6


# Initialization.


@pytest.mark.parametrize("count, probability, ones", [(50, 0.1, 5), (40, 0.25, 10), (30, 0.0, 0)])
def test_initializer_proportions_exact(count, probability, ones):
    alphabet = (2,) * 10 + (3,)
    population = biased_population(count, alphabet, np.random.default_rng(3), probability)
    matrix = np.array(population)
    assert matrix.shape == (count, 11)
    assert matrix[:, :10].sum(axis=0).tolist() == [ones] * 10
    counts = np.bincount(matrix[:, 10], minlength=3)
    assert sorted(counts.tolist()) == sorted([count // 3 + (i < count % 3) for i in range(3)])


def test_initializer_rounds_fractions_to_floor_or_ceiling():
    population = biased_population(20, (2,) * 30 + (3,), np.random.default_rng(1), 0.07)  # 1.4 ones per position
    ones = np.array(population)[:, :30].sum(axis=0)
    assert set(ones.tolist()) <= {1, 2}


def test_initializer_shuffles_positions_independently():
    population = np.array(biased_population(40, (2,) * 6 + (3,), np.random.default_rng(5), 0.5))
    columns = {tuple(population[:, position]) for position in range(6)}
    assert len(columns) > 1


def test_default_probability_expects_six_stitches():
    assert default_stitch_probability(309) == pytest.approx(0.02)
    assert default_stitch_probability(5) == 1.0


def test_initializer_rejects_bad_probability():
    with pytest.raises(InvalidArgumentError, match="outside"):
        biased_population(4, (2, 2, 3), np.random.default_rng(0), 1.5)


# Variation.


@pytest.mark.parametrize("seed", range(20))
def test_crossover_zeros_ones_three_runs(seed):
    zeros, ones = (0,) * 9, (1,) * 9
    first, second = two_point_crossover(zeros, ones, np.random.default_rng(seed))
    for child in (first, second):
        runs = 1 + sum(child[i] != child[i + 1] for i in range(len(child) - 1))
        assert runs == 3
    assert all(a + b == 1 for a, b in zip(first, second))


def test_mutation_changes_to_different_value():
    rng = np.random.default_rng(0)
    alphabet = (2,) * 4 + (3,)
    genotype = (0, 1, 0, 1, 2)
    changed_positions = 0
    for _ in range(2000):
        mutant = mutate(genotype, alphabet, rng)
        assert all(0 <= value < size for value, size in zip(mutant, alphabet))
        changed_positions += sum(a != b for a, b in zip(genotype, mutant))
    # Each of the 5 positions changes with probability 1/5: expected 2000 changes in total.
    assert 1800 < changed_positions < 2200


def test_skip_rule_inactive_only_change():
    reference = (0, 1, 0, 0, 1)
    active = frozenset({1, 4})
    assert changes_only_inactive(reference, active, (1, 1, 0, 1, 1))
    assert not changes_only_inactive(reference, active, (0, 0, 0, 0, 1))


def test_skip_rule_output_change_not_skipped():
    reference = (0, 1, 0, 0, 1)
    # Even if a problem forgot the output switch in the active set, it counts as active.
    assert not changes_only_inactive(reference, frozenset({1}), (0, 1, 0, 0, 2))


# Linkage learning.


def test_nmi_converged_pair_is_zero():
    genotypes = [(0, value % 2, 0) for value in range(8)]
    matrix = normalized_mutual_information(genotypes, (2, 2, 3))
    assert matrix[0, 1] == 0.0
    assert matrix[0, 2] == 0.0


def test_nmi_independent_pair_is_zero():
    genotypes = [(a, b, 0) for a in (0, 1) for b in (0, 1)] * 3
    matrix = normalized_mutual_information(genotypes, (2, 2, 3))
    assert matrix[0, 1] == pytest.approx(0.0, abs=1e-12)


def test_nmi_opposite_pair_is_one():
    genotypes = [(value, 1 - value, 0) for value in (0, 1, 1, 0, 1)]
    matrix = normalized_mutual_information(genotypes, (2, 2, 3))
    assert matrix[0, 1] == pytest.approx(1.0)
    assert matrix[1, 0] == pytest.approx(1.0)


def test_upgma_merges_most_similar_first():
    similarity = np.array(
        [
            [1.0, 0.1, 0.2, 0.0],
            [0.1, 1.0, 0.1, 0.9],
            [0.2, 0.1, 1.0, 0.3],
            [0.0, 0.9, 0.3, 1.0],
        ]
    )
    subsets = upgma_linkage_tree(similarity)
    assert subsets[:4] == [(0,), (1,), (2,), (3,)]
    assert subsets[4] == (1, 3)
    # Averages to {1, 3}: from 0 is (0.1 + 0.0) / 2, from 2 is (0.1 + 0.3) / 2 = 0.2, tied with 0-2.
    # The tie goes to the lowest indices, (0, 2).
    assert subsets[5] == (0, 2)
    assert subsets[6] == (0, 1, 2, 3)
    assert len(subsets) == 2 * 4 - 1


def test_neighbourhood_size_range():
    rng = np.random.default_rng(0)
    sizes = {neighbourhood_size(20, 5, rng) for _ in range(200)}
    assert sizes == {20, 10, 7, 5}


def test_nearest_neighbours_by_hamming():
    genotypes = [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 0, 1), (1, 1, 0, 0)]
    assert nearest_neighbours((0, 0, 0, 0), genotypes, 3, np.random.default_rng(0)) == [0, 2, 3]


# Hypervolume.


def test_hypervolume_normalized_area():
    reference = HypervolumeReference(accuracy_min=0.0, macs_max=100.0)
    # One point at accuracy 0.5 and 50 MACs dominates a quarter of the unit box.
    assert hypervolume([(0.5, 50.0)], reference) == pytest.approx(0.25)
    # Adding (0.75, 75): 0.25 + 0.25 * 0.25 = 0.3125.
    assert hypervolume([(0.5, 50.0), (0.75, 75.0)], reference) == pytest.approx(0.3125)
    assert hypervolume([(0.5, 150.0)], reference) == 0.0
