"""Hypervolume of a front against a reference point fixed per run.

Objectives are mapped to a unit box before measuring: ``1 - accuracy`` (minimized, the
reference at ``1 - accuracy_min``) and ``macs / macs_max``. A run stores its reference
point in ``config.json``, so the hypervolumes of runs with the same reference are
comparable. The value is the dominated fraction of the box ``[accuracy_min, 1] x
[0, macs_max]``, so it lies in [0, 1]. Points outside the box add nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import moocore
import numpy as np

from stitchc.errors import InvalidArgumentError

__all__ = ["HypervolumeReference", "hypervolume", "default_reference"]

DEFAULT_MACS_MARGIN = 1.1
"""The default ``macs_max`` is this factor times the MACs of the costliest reference network."""


@dataclass(frozen=True)
class HypervolumeReference:
    """The worst point counted: accuracy at or below ``accuracy_min`` or MACs at or above ``macs_max`` adds nothing."""

    accuracy_min: float
    macs_max: float

    def __post_init__(self) -> None:
        if not self.macs_max > 0:
            raise InvalidArgumentError(f"hypervolume reference MACs {self.macs_max} must be positive; pass a larger value.")
        if not 0.0 <= self.accuracy_min < 1.0:
            raise InvalidArgumentError(f"hypervolume reference accuracy {self.accuracy_min} must lie in [0, 1).")


def default_reference(reference_points: Mapping[str, Mapping], accuracy_min: float = 0.0) -> HypervolumeReference:
    """Return the reference with ``macs_max`` 1.1 times the costliest reference network's MACs."""
    costliest = max(float(point["macs"]) for point in reference_points.values())
    return HypervolumeReference(accuracy_min=accuracy_min, macs_max=DEFAULT_MACS_MARGIN * costliest)


def hypervolume(points: Iterable[tuple[float, float]], reference: HypervolumeReference) -> float:
    """Return the normalized hypervolume of ``(accuracy, macs)`` points; 0 for no point inside the box."""
    span = 1.0 - reference.accuracy_min
    scaled = [
        ((1.0 - accuracy) / span, macs / reference.macs_max)
        for accuracy, macs in points
        if accuracy > reference.accuracy_min and macs < reference.macs_max
    ]
    if not scaled:
        return 0.0
    return float(moocore.hypervolume(np.array(scaled, dtype=float), ref=[1.0, 1.0]))
