"""Linkage learning: normalized mutual information between positions and UPGMA linkage trees.

A linkage tree is a family of subsets (FOS) of genotype positions. UPGMA starts from one
singleton per position and repeatedly merges the two clusters with the highest average
pairwise similarity; every cluster it creates is a subset of the FOS. GOMEA learns one tree
over the whole population, LK-GOMEA one per solution over its nearest neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stitchc.runtime.search._problem import Genotype

__all__ = [
    "normalized_mutual_information",
    "upgma_linkage_tree",
    "learn_linkage_tree",
    "nearest_neighbours",
    "neighbourhood_size",
]


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    """Return ``-sum(p log p)`` over the last axis, with ``0 log 0 = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    return -terms.sum(axis=-1)


def normalized_mutual_information(genotypes: Sequence[Genotype], alphabet_sizes: Sequence[int]) -> np.ndarray:
    """Return the ``l x l`` matrix of normalized mutual information between positions.

    For positions ``i != j`` the value is ``I(i; j) / H(i, j)``, the mutual information over
    the joint entropy: 0 when they are independent or either is converged (constant), 1 when
    one determines the other (for example two positions that always hold opposite bits).
    The diagonal is 1.
    """
    samples = np.asarray(genotypes, dtype=np.int64)
    count, length = samples.shape
    offsets = np.concatenate([[0], np.cumsum(alphabet_sizes)[:-1]])

    # One-hot columns: position i with value v is column offsets[i] + v, so one matrix
    # product counts every joint value pair of every pair of positions.
    one_hot = np.zeros((count, int(sum(alphabet_sizes))))
    for position in range(length):
        one_hot[np.arange(count), offsets[position] + samples[:, position]] = 1.0
    joint_all = one_hot.T @ one_hot / count

    similarity = np.eye(length)
    marginal_entropy = [_entropy(joint_all[o : o + s, o : o + s].diagonal()) for o, s in zip(offsets, alphabet_sizes)]
    for i in range(length):
        for j in range(i + 1, length):
            block = joint_all[offsets[i] : offsets[i] + alphabet_sizes[i], offsets[j] : offsets[j] + alphabet_sizes[j]]
            joint_entropy = float(_entropy(block.reshape(-1)))
            if joint_entropy <= 1e-12:
                value = 0.0  # both converged: no information to share
            else:
                mutual = float(marginal_entropy[i] + marginal_entropy[j]) - joint_entropy
                value = max(0.0, mutual) / joint_entropy
            similarity[i, j] = similarity[j, i] = value
    return similarity


def upgma_linkage_tree(similarity: np.ndarray) -> list[tuple[int, ...]]:
    """Return the subsets that UPGMA creates from a similarity matrix, leaves first, root last.

    Each step merges the pair of clusters with the highest average similarity (ties go to the
    pair with the lowest indices), and the similarity of the merged cluster to any other is
    the size-weighted mean of its parts'. The result lists the ``l`` singletons, then the
    ``l - 1`` merged clusters in merge order, each as a sorted tuple of positions.
    """
    length = similarity.shape[0]
    clusters: list[tuple[int, ...]] = [(position,) for position in range(length)]
    subsets = list(clusters)
    matrix = similarity.astype(float).copy()
    np.fill_diagonal(matrix, -np.inf)
    alive = list(range(length))

    while len(alive) > 1:
        sub = matrix[np.ix_(alive, alive)]
        flat = int(np.argmax(sub))
        first, second = alive[flat // len(alive)], alive[flat % len(alive)]
        first, second = min(first, second), max(first, second)

        size_first, size_second = len(clusters[first]), len(clusters[second])
        merged_row = (size_first * matrix[first] + size_second * matrix[second]) / (size_first + size_second)
        matrix[first, :] = merged_row
        matrix[:, first] = merged_row
        matrix[first, first] = -np.inf
        clusters[first] = tuple(sorted(clusters[first] + clusters[second]))
        alive.remove(second)
        subsets.append(clusters[first])
    return subsets


def learn_linkage_tree(
    genotypes: Sequence[Genotype], alphabet_sizes: Sequence[int], rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """Learn a linkage tree over ``genotypes``, drop its root, and return its subsets in random order.

    The root (all positions) is dropped because copying a whole donor replaces the solution
    instead of mixing it.
    """
    subsets = upgma_linkage_tree(normalized_mutual_information(genotypes, alphabet_sizes))
    if len(subsets) > 1:
        subsets = subsets[:-1]
    order = rng.permutation(len(subsets))
    return [subsets[index] for index in order]


def neighbourhood_size(population_size: int, minimum_size: int, rng: np.random.Generator) -> int:
    """Draw LK-GOMEA's neighbourhood size ``k = ceil(n / m)``, ``m`` uniform over ``1..max(1, n // c)``.

    ``c`` is ``minimum_size``. Small neighbourhoods are the more likely, but ``m = 1`` (the
    whole population) stays possible, which guards against premature convergence.
    """
    modes_max = max(1, population_size // minimum_size)
    modes = int(rng.integers(1, modes_max + 1))
    return math.ceil(population_size / modes)


def nearest_neighbours(
    center: Genotype, genotypes: Sequence[Genotype], count: int, rng: np.random.Generator
) -> list[int]:
    """Return the indices of the ``count`` genotypes nearest ``center`` by Hamming distance.

    Ties are broken at random, so equal-distance neighbours are not always the first slots.
    """
    distances = np.array([sum(a != b for a, b in zip(center, genotype)) for genotype in genotypes])
    tie_breaks = rng.random(len(genotypes))
    order = np.lexsort((tie_breaks, distances))
    return [int(index) for index in order[:count]]
