"""stitchc: recombine two trained neural networks by stitching their torch.fx graphs.

The package holds the IR (capture, node metadata, costs, model sources, errors);
``stitchc.passes`` holds the graph passes and ``stitchc.runtime`` everything that runs
tensors or jobs.
"""

from stitchc.capture import CaptureOptions, CaptureReport, CaptureResult, capture, parse_input_shape
from stitchc.errors import (
    CaptureError,
    InvalidArgumentError,
    ParityError,
    StitchcError,
    UnsupportedModelError,
)
from stitchc.ir import META_KEY, NodeInfo, layer_nodes, node_info, total_macs, total_params
from stitchc.sources import capture_source, load_model, parse_source, save_capture

__all__ = [
    "CaptureOptions",
    "CaptureReport",
    "CaptureResult",
    "capture",
    "parse_input_shape",
    "capture_source",
    "load_model",
    "parse_source",
    "save_capture",
    "META_KEY",
    "NodeInfo",
    "node_info",
    "layer_nodes",
    "total_macs",
    "total_params",
    "StitchcError",
    "CaptureError",
    "ParityError",
    "InvalidArgumentError",
    "UnsupportedModelError",
]

__version__ = "0.1.0"
