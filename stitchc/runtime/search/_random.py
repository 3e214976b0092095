"""Random search, the baseline: every slot draws from the same biased distribution as initialization.

Genotypes are drawn in blocks of ``n`` with the exact per-position proportions of
:func:`biased_population`, and slots take them in turn from the current block.
"""

from __future__ import annotations

from stitchc.runtime.search._algorithm import Proposal, SlotAlgorithm, SlotLoop
from stitchc.runtime.search._init import biased_population

__all__ = ["RandomSearch"]


class RandomSearch(SlotAlgorithm):
    """Draws genotypes independently of all results; keeps only the archive."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._block: list[tuple[int, ...]] = []

    def slot_loop(self, slot: int) -> SlotLoop:
        while True:
            if not self._block:
                self._block = biased_population(self.size, self.alphabet_sizes, self.rng, self.stitch_probability)
            yield Proposal(self._block.pop())
