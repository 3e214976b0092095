"""The evaluated solution that the algorithms, the archive and the run directory share."""

from __future__ import annotations

from dataclasses import dataclass

from stitchc.runtime.search._problem import Genotype

__all__ = ["Solution"]


@dataclass(frozen=True)
class Solution:
    """A genotype with the outcome of its evaluation.

    Attributes:
        genotype: the switch values.
        objectives: the dict that :meth:`Problem.evaluate` returned, or ``None`` when the
            evaluation failed.
        active: the positions whose switches the selected subnetwork uses (always including
            the output switch). A failed evaluation keeps the active set that the problem
            reported for its genotype.
        error: the failure message, or ``None`` when the evaluation succeeded.
    """

    genotype: Genotype
    objectives: dict | None
    active: frozenset[int]
    error: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the evaluation failed, so the solution has no objectives."""
        return self.objectives is None

    @property
    def accuracy(self) -> float:
        """Validation accuracy in [0, 1]; minus infinity for a failed evaluation."""
        return float("-inf") if self.objectives is None else float(self.objectives["accuracy"])

    @property
    def macs(self) -> float:
        """Multiply-adds of the subnetwork; plus infinity for a failed evaluation."""
        return float("inf") if self.objectives is None else float(self.objectives["macs"])
