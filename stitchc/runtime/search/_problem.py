"""The interface between the search and whatever evaluates a genotype.

The search never imports torch: it works against :class:`Problem`, which the
supernetwork evaluator implements (and which the tests implement with a cheap
synthetic function). Executors receive a :data:`ProblemFactory`, a picklable
zero-argument callable, so that every worker process or Ray actor builds its own
problem once and keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from stitchc.errors import InvalidGenotypeError

__all__ = [
    "Genotype",
    "Problem",
    "ProblemFactory",
    "validate_genotype",
    "changes_only_inactive",
    "active_key",
    "format_genotype",
    "parse_genotype",
]

Genotype = tuple[int, ...]
"""One value per switch: ``[a_0, b_0, a_1, b_1, ..., out]``, each in ``range(alphabet_sizes[i])``."""


@runtime_checkable
class Problem(Protocol):
    """A search space of genotypes and the evaluation of each genotype.

    Attributes:
        genotype_length: ``l = 2*m + 1`` for a supernetwork with ``m`` matches.
        alphabet_sizes: the number of values of each position: 2 for every switch bit and
            3 for the last position, the output switch (0 parent A, 1 parent B, 2 their ensemble).
        identity: a stable hash of the supernetwork and the evaluation data. A run directory
            stores it, and resuming with a problem of another identity is rejected.

    The search process itself builds one problem to read these attributes and to call
    :meth:`active_positions` and :meth:`reference_points`, so building a problem should not
    load heavy state (weights, data) until :meth:`evaluate` first needs it. Workers call
    only :meth:`evaluate`.
    """

    genotype_length: int
    alphabet_sizes: tuple[int, ...]
    identity: str

    def active_positions(self, genotype: Genotype) -> frozenset[int]:
        """Return the positions whose switches the selected subnetwork uses.

        Changing a position outside this set must leave the subnetwork unchanged. The set
        always contains ``genotype_length - 1``, the output switch.
        """
        ...

    def evaluate(self, genotype: Genotype) -> dict:
        """Evaluate the subnetwork that ``genotype`` selects on the validation data.

        Returns a JSON-serializable dict with at least ``"accuracy"`` (a float in [0, 1],
        maximized) and ``"macs"`` (an int, minimized), and optionally extras such as
        ``"loss"``, ``"ece"`` and ``"params"``. Raises any exception on failure; the search
        records the failure with its message and never turns it into a score.
        """
        ...

    def reference_points(self) -> dict[str, dict]:
        """Return the objectives of the reference networks, keyed ``"A"``, ``"B"`` and ``"ensemble"``.

        Each value has the same keys as the result of :meth:`evaluate`. Plots mark these
        points, and the default hypervolume reference point is derived from their MACs.
        """
        ...


ProblemFactory = Callable[[], Problem]
"""A picklable zero-argument callable that builds a :class:`Problem` (called once per worker)."""


def validate_genotype(genotype: Iterable[int], alphabet_sizes: tuple[int, ...]) -> Genotype:
    """Return ``genotype`` as a tuple of ints after checking its length and values.

    Raises:
        InvalidGenotypeError: the length differs from ``len(alphabet_sizes)`` or a value is
            outside its position's alphabet.
    """
    values = tuple(int(value) for value in genotype)
    if len(values) != len(alphabet_sizes):
        raise InvalidGenotypeError(
            f"genotype has length {len(values)} but the supernetwork expects {len(alphabet_sizes)}; "
            "pass one value per switch."
        )
    for position, (value, size) in enumerate(zip(values, alphabet_sizes)):
        if not 0 <= value < size:
            raise InvalidGenotypeError(
                f"genotype value {value} at position {position} is outside 0..{size - 1}; "
                "use 0 or 1 for switch bits and 0, 1 or 2 for the output switch."
            )
    return values


def changes_only_inactive(reference: Genotype, reference_active: frozenset[int], offspring: Genotype) -> bool:
    """Return whether ``offspring`` differs from ``reference`` only at positions inactive in ``reference``.

    When it does, both select the same subnetwork and the reference's objectives hold for
    the offspring. The last position (the output switch) is treated as active whatever
    ``reference_active`` says, so an output-only change is never skipped.
    """
    output = len(reference) - 1
    for position, (old, new) in enumerate(zip(reference, offspring)):
        if old != new and (position in reference_active or position == output):
            return False
    return True


def active_key(genotype: Genotype, active: frozenset[int]) -> tuple[tuple[int, int], ...]:
    """Return the memoization key of a genotype: its active positions with their values."""
    return tuple((position, genotype[position]) for position in sorted(active))


def format_genotype(genotype: Genotype) -> str:
    """Return the genotype as a string of digits, for example ``"01002"``."""
    return "".join(str(value) for value in genotype)


def parse_genotype(text: str) -> Genotype:
    """Parse a string of digits such as ``"01002"`` into a genotype tuple.

    Raises:
        InvalidGenotypeError: the text contains anything but digits.
    """
    if not text.isdigit():
        raise InvalidGenotypeError(f"genotype {text!r} is not a string of digits; write it like 01002.")
    return tuple(int(character) for character in text)
