"""Genotypes of a supernetwork: parsing, active switches and the canonical form.

A genotype has ``2 * m + 1`` positions for ``m`` matches: ``[a_0, b_0, ..., out]``.
Ordinary positions take 0 (the parent's own layer output) or 1 (the stitched
output); the output position takes 0 (parent A), 1 (parent B) or 2 (ensemble).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.fx

from stitchc.errors import InvalidGenotypeError
from stitchc.passes._switch import reached_nodes, switch_position

__all__ = [
    "parse_genotype",
    "format_genotype",
    "active_positions",
    "canonical_genotype",
]


def parse_genotype(value: Any, length: int) -> tuple[int, ...]:
    """Parse a genotype string such as ``"01102"`` or a sequence of integers.

    Args:
        value: A string of digits (spaces, commas and underscores are ignored) or a
            sequence of integers.
        length: The expected length ``2 * m + 1``.

    Returns:
        The genotype as a tuple of ints.

    Raises:
        InvalidGenotypeError: the length differs from ``length``, a value is not an
            integer, or a value lies outside its position's alphabet.
    """
    if isinstance(value, str):
        text = "".join(character for character in value if character not in " ,_")
        if not text.isdigit():
            raise InvalidGenotypeError(
                f"invalid genotype {value!r}: use only digits, {_alphabet_text(length)}"
            )
        genotype = tuple(int(character) for character in text)
    else:
        try:
            genotype = tuple(_as_int(item) for item in value)
        except (TypeError, ValueError) as error:
            raise InvalidGenotypeError(
                f"invalid genotype {value!r}: expected a string or a sequence of integers, {_alphabet_text(length)}"
            ) from error

    if len(genotype) != length:
        raise InvalidGenotypeError(
            f"genotype has length {len(genotype)}, expected {length}: {_alphabet_text(length)}"
        )
    for position, choice in enumerate(genotype[:-1]):
        if choice not in (0, 1):
            raise InvalidGenotypeError(
                f"genotype value {choice} at position {position} is invalid: {_alphabet_text(length)}"
            )
    if genotype[-1] not in (0, 1, 2):
        raise InvalidGenotypeError(
            f"genotype value {genotype[-1]} at the output position {length - 1} is invalid: {_alphabet_text(length)}"
        )
    return genotype


def _as_int(item: Any) -> int:
    if isinstance(item, bool) or int(item) != item:
        raise ValueError(f"{item!r} is not an integer")
    return int(item)


def _alphabet_text(length: int) -> str:
    return (f"positions 0 to {length - 2} take 0 or 1 and the output position {length - 1} "
            "takes 0 (A), 1 (B) or 2 (ensemble)")


def format_genotype(genotype: Sequence[int]) -> str:
    """Return a genotype as its digit string, e.g. ``"01102"``."""
    return "".join(str(int(choice)) for choice in genotype)


def active_positions(supernet: Any, genotype: Any) -> frozenset[int]:
    """Return the positions of the switches that the genotype's subnetwork uses.

    A switch is active when the walk back from the output, following only chosen
    switch inputs, reaches it. The output position is always active. Changing an
    inactive position leaves the subnetwork unchanged.

    Raises:
        InvalidGenotypeError: the genotype does not fit the supernetwork.
    """
    genotype = parse_genotype(genotype, supernet.genotype_length)
    gm: torch.fx.GraphModule = supernet.gm
    positions = set()
    for node in reached_nodes(gm, genotype):
        position = switch_position(gm, node)
        if position is not None:
            positions.add(position)
    return frozenset(positions)


def canonical_genotype(supernet: Any, genotype: Any) -> tuple[int, ...]:
    """Return the genotype with every inactive position set to 0.

    Two genotypes select the same subnetwork exactly when their canonical forms are
    equal, so the canonical form is a cache key for evaluations.
    """
    genotype = parse_genotype(genotype, supernet.genotype_length)
    active = active_positions(supernet, genotype)
    return tuple(choice if position in active else 0 for position, choice in enumerate(genotype))
