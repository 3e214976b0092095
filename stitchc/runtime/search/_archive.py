"""The elitist archive: the non-dominated solutions found so far (accuracy up, MACs down)."""

from __future__ import annotations

import logging

from stitchc.runtime.search._solution import Solution

__all__ = ["Archive", "dominates"]

logger = logging.getLogger(__name__)


def dominates(first: Solution, second: Solution) -> bool:
    """Return whether ``first`` is at least as good as ``second`` in both objectives and better in one."""
    not_worse = first.accuracy >= second.accuracy and first.macs <= second.macs
    better = first.accuracy > second.accuracy or first.macs < second.macs
    return not_worse and better


class Archive:
    """A set of mutually non-dominated, successfully evaluated solutions.

    Rules of :meth:`add`: a failed solution, one below the accuracy threshold, one whose
    objectives equal those of a member, and one that a member dominates are not added. An
    added solution evicts every member it dominates. Raising the threshold with
    :meth:`set_threshold` purges the members below it; a member exactly at the threshold
    stays, because the threshold value itself is feasible.
    """

    def __init__(self) -> None:
        self._members: list[Solution] = []
        self.threshold = 0.0

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self):
        return iter(self._members)

    @property
    def members(self) -> tuple[Solution, ...]:
        """The current members, in the order they were added."""
        return tuple(self._members)

    def add(self, solution: Solution) -> bool:
        """Add ``solution`` under the rules in the class docstring and return whether it was added."""
        if solution.failed or solution.accuracy < self.threshold:
            return False
        for member in self._members:
            same_objectives = member.accuracy == solution.accuracy and member.macs == solution.macs
            if same_objectives or dominates(member, solution):
                return False
        self._members = [member for member in self._members if not dominates(solution, member)]
        self._members.append(solution)
        return True

    def set_threshold(self, threshold: float) -> int:
        """Set the accuracy threshold, purge members below it, and return how many were purged."""
        self.threshold = threshold
        kept = [member for member in self._members if member.accuracy >= threshold]
        purged = len(self._members) - len(kept)
        if purged:
            logger.debug("threshold %.4f purged %d archive members", threshold, purged)
        self._members = kept
        return purged
