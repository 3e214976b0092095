"""A synthetic search problem for the search tests and the search benchmark.

Two chain networks A and B of ``matches + 1`` layers each are matched layer by layer.
Position ``2*i`` is switch ``a_i``: with value 1, layer ``A[i+1]`` reads ``B[i]`` through a
stitch instead of ``A[i]``; position ``2*i + 1`` is ``b_i``, the mirror for ``B[i+1]``.
The last position picks the output: 0 A, 1 B, 2 the ensemble of both. Walking back from
the output along the chosen inputs gives the active switches exactly as in a supernetwork.

Accuracy is the mean quality of the layers used (0.9 for A, 0.8 for B) minus a fixed
penalty per stitch used; the ensemble averages its two paths and adds 0.02. MACs sum the
cost of each used layer once (A layers are about 2.5 times as costly as B layers) plus 1
per stitch. Layer costs and stitch penalties come from a generator seeded by ``seed``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["ChainProblem", "ChainProblemFactory", "benchmark_factory"]


class ChainProblem:
    """The synthetic :class:`stitchc.runtime.search.Problem`; see the module docstring."""

    def __init__(self, matches: int, seed: int, delay_s: float = 0.0, fail_from_stitches: int | None = None) -> None:
        self.matches = matches
        self.genotype_length = 2 * matches + 1
        self.alphabet_sizes = (2,) * (2 * matches) + (3,)
        self.identity = hashlib.sha256(f"chain:{matches}:{seed}".encode()).hexdigest()[:16]
        self.delay_s = delay_s
        self.fail_from_stitches = fail_from_stitches
        self.evaluated: list[tuple[int, ...]] = []

        rng = np.random.default_rng(seed)
        self.layer_macs = {
            "A": [int(value) for value in rng.integers(800, 1200, size=matches + 1)],
            "B": [int(value) for value in rng.integers(300, 500, size=matches + 1)],
        }
        self.quality = {"A": 0.9, "B": 0.8}
        # Penalty of the stitch into network X at match i, keyed (X, i).
        self.stitch_penalty = {
            (network, index): float(rng.uniform(0.005, 0.06)) for network in "AB" for index in range(matches)
        }

    def _walk(self, genotype, network: str):
        """Return the (layers used, stitches used, switch positions read) of the path ending in ``network``."""
        layers, stitches, positions = [], [], []
        current = network
        for layer in range(self.matches, 0, -1):
            layers.append((current, layer))
            position = 2 * (layer - 1) + (0 if current == "A" else 1)
            positions.append(position)
            if genotype[position] == 1:
                stitches.append((current, layer - 1))
                current = "B" if current == "A" else "A"
        layers.append((current, 0))
        return layers, stitches, positions

    def _paths(self, genotype):
        output = genotype[-1]
        return [self._walk(genotype, network) for network in (("A",), ("B",), ("A", "B"))[output]]

    def active_positions(self, genotype) -> frozenset[int]:
        positions = {self.genotype_length - 1}
        for _, _, read in self._paths(genotype):
            positions.update(read)
        return frozenset(positions)

    def evaluate(self, genotype) -> dict:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.evaluated.append(tuple(genotype))
        paths = self._paths(genotype)
        stitch_count = len({stitch for _, stitches, _ in paths for stitch in stitches})
        if self.fail_from_stitches is not None and stitch_count >= self.fail_from_stitches:
            raise RuntimeError(f"synthetic failure with {stitch_count} stitches")

        accuracies = []
        for layers, stitches, _ in paths:
            quality = sum(self.quality[network] for network, _ in layers) / len(layers)
            accuracies.append(quality - sum(self.stitch_penalty[stitch] for stitch in stitches))
        accuracy = sum(accuracies) / len(accuracies) + (0.02 if len(paths) == 2 else 0.0)

        used_layers = {layer for layers, _, _ in paths for layer in layers}
        macs = sum(self.layer_macs[network][index] for network, index in used_layers) + stitch_count
        return {"accuracy": round(min(1.0, max(0.0, accuracy)), 6), "macs": int(macs), "stitches": stitch_count}

    def reference_points(self) -> dict[str, dict]:
        zeros = (0,) * (self.genotype_length - 1)
        return {name: self.evaluate(zeros + (output,)) for output, name in enumerate(("A", "B", "ensemble"))}


@dataclass(frozen=True)
class ChainProblemFactory:
    """Picklable factory of :class:`ChainProblem`; ``delay_s`` and failures do not change the identity."""

    matches: int = 8
    seed: int = 0
    delay_s: float = 0.0
    fail_from_stitches: int | None = None

    def __call__(self) -> ChainProblem:
        return ChainProblem(self.matches, self.seed, self.delay_s, self.fail_from_stitches)


def benchmark_factory() -> ChainProblemFactory:
    """Return the factory of the benchmark's default problem: 40 matches, genotype length 81."""
    return ChainProblemFactory(matches=40)
