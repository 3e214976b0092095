"""Linear CKA between layer outputs of two captured networks, as matching weights.

Linear centered kernel alignment (Kornblith et al., 2019, "Similarity of Neural Network
Representations Revisited") compares two layers through their outputs on the same
inputs. With X (n x p) and Y (n x q) the flattened outputs of n inputs, K = X X^T and
L = Y Y^T the n x n Gram matrices and H the centering matrix,

    CKA(X, Y) = <HKH, HLH>_F / (||HKH||_F * ||HLH||_F),

a value in [0, 1] that ignores orthogonal transforms and isotropic scaling of either
layer. Only the n x n centered Gram matrix of each layer is kept, so memory does not grow
with a layer's feature size.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import torch
import torch.fx

from stitchc.errors import DataError
from stitchc.ir import has_node_info, node_info

__all__ = ["centered_grams", "linear_cka", "similarity_weights"]

logger = logging.getLogger(__name__)


def _center(gram: torch.Tensor) -> torch.Tensor:
    # H K H with H = I - 11^T / n, written as row and column mean removal.
    gram = gram - gram.mean(dim=0, keepdim=True)
    return gram - gram.mean(dim=1, keepdim=True)


class _GramRecorder(torch.fx.Interpreter):
    """Runs a graph and keeps the centered Gram matrix of each wanted node's output."""

    def __init__(self, gm: torch.fx.GraphModule, wanted: set[str]):
        super().__init__(gm)
        self.wanted = wanted
        self.grams: dict[str, torch.Tensor] = {}

    def run_node(self, node: torch.fx.Node):
        output = super().run_node(node)
        name = node_info(node).name if has_node_info(node) else node.name
        if name in self.wanted and isinstance(output, torch.Tensor):
            features = output.detach().reshape(output.shape[0], -1).to(torch.float64)
            self.grams[name] = _center(features @ features.T)
        return output


def centered_grams(gm: torch.fx.GraphModule, inputs: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Return the centered n x n Gram matrix of each named node's output on ``inputs``.

    Raises:
        DataError: ``inputs`` has fewer than 2 samples, or a name is not a tensor node.
    """
    if inputs.shape[0] < 2:
        raise DataError(f"similarity needs at least 2 input samples, got {inputs.shape[0]}; pass a larger batch")
    wanted = set(names)
    recorder = _GramRecorder(gm, wanted)
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            recorder.run(inputs)
    finally:
        gm.train(was_training)
    missing = wanted - recorder.grams.keys()
    if missing:
        raise DataError(
            f"node {sorted(missing)[0]!r} produced no tensor on the similarity batch; "
            "list names with `stitchc nodes`"
        )
    return recorder.grams


def linear_cka(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    """Return linear CKA from two centered Gram matrices (0 when either layer is constant)."""
    numerator = (gram_x * gram_y).sum()
    denominator = gram_x.norm() * gram_y.norm()
    if denominator == 0:
        return 0.0
    return float((numerator / denominator).clamp(0.0, 1.0))


def similarity_weights(
    gm_a: torch.fx.GraphModule,
    gm_b: torch.fx.GraphModule,
    candidates: Sequence,
    inputs: torch.Tensor,
) -> list[float]:
    """Return the linear CKA of each candidate's two layers on ``inputs``, in candidate order.

    Args:
        gm_a, gm_b: Captured graphs (nodes carry stitchc metadata).
        candidates: Objects with ``.a`` and ``.b`` node names.
        inputs: One batch ``[n, ...]`` of real inputs accepted by both graphs.

    Raises:
        DataError: fewer than 2 inputs, or a candidate names a node without a tensor output.
    """
    grams_a = centered_grams(gm_a, inputs, {c.a for c in candidates})
    grams_b = centered_grams(gm_b, inputs, {c.b for c in candidates})
    weights = [linear_cka(grams_a[c.a], grams_b[c.b]) for c in candidates]
    logger.info("similarity weights for %d candidates on %d inputs", len(weights), inputs.shape[0])
    return weights
