"""Initialization biased toward the parents.

A genotype of all zeros (output aside) is one of the parents, and every stitch a
subnetwork uses tends to cost accuracy. So each switch bit is 1 with a small probability
``p``, by default ``6.18 / l``: an expected 6.18 stitches whatever the genotype length
(0.02 of the 309 positions for which the method's authors tuned it). The output switch is
uniform over A, B and the ensemble.

Proportions are exact per position: of ``count`` genotypes, position ``i`` gets exactly
``round(p * count)`` ones when ``p * count`` is an integer, and otherwise the floor or the
ceiling of it (the ceiling with probability equal to the fractional part). The values of
each position are then shuffled independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stitchc.errors import InvalidArgumentError
from stitchc.runtime.search._problem import Genotype

__all__ = ["EXPECTED_STITCHES", "default_stitch_probability", "biased_population"]

EXPECTED_STITCHES = 6.18
"""Expected number of switch bits set to 1 in a genotype drawn with the default probability."""


def default_stitch_probability(genotype_length: int) -> float:
    """Return ``min(1, 6.18 / genotype_length)``, the default probability of a switch bit being 1."""
    return min(1.0, EXPECTED_STITCHES / genotype_length)


def _exact_counts(count: int, shares: Sequence[float], rng: np.random.Generator) -> list[int]:
    """Split ``count`` into integer parts proportional to ``shares``, rounding fractions at random.

    Each part is the floor or the ceiling of ``share * count``, and the parts sum to ``count``.
    """
    ideal = [share * count for share in shares]
    parts = [math.floor(value) for value in ideal]
    missing = count - sum(parts)
    fractions = np.array([value - part for value, part in zip(ideal, parts)])
    if missing > 0:
        # Pick which parts round up, with probability proportional to their fractions.
        chosen = rng.choice(len(parts), size=missing, replace=False, p=fractions / fractions.sum())
        for index in chosen:
            parts[index] += 1
    return parts


def biased_population(
    count: int, alphabet_sizes: Sequence[int], rng: np.random.Generator, stitch_probability: float | None = None
) -> list[Genotype]:
    """Draw ``count`` genotypes with exact per-position proportions.

    Args:
        count: number of genotypes.
        alphabet_sizes: values per position; positions with 2 values are switch bits, any
            other position (the output switch) is drawn uniformly over its values.
        rng: the generator that every random choice uses.
        stitch_probability: the share of 1s per switch bit; ``None`` means ``6.18 / l``.

    Raises:
        InvalidArgumentError: ``stitch_probability`` is outside [0, 1] or ``count`` is negative.
    """
    if count < 0:
        raise InvalidArgumentError(f"cannot draw {count} genotypes; pass a count of 0 or more.")
    probability = default_stitch_probability(len(alphabet_sizes)) if stitch_probability is None else stitch_probability
    if not 0.0 <= probability <= 1.0:
        raise InvalidArgumentError(f"stitch probability {probability} is outside [0, 1]; pass a value such as 0.02.")

    columns = []
    for size in alphabet_sizes:
        shares = [1.0 - probability, probability] if size == 2 else [1.0 / size] * size
        counts = _exact_counts(count, shares, rng)
        column = np.repeat(np.arange(size), counts)
        rng.shuffle(column)
        columns.append(column)
    if count == 0:
        return []
    matrix = np.stack(columns, axis=1)
    return [tuple(int(value) for value in row) for row in matrix]
