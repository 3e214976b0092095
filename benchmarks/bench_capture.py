"""Capture benchmark: capture time, nodes, layer nodes and MACs of the parents in Guijt et al., "Stitching for Neuroevolution".

    python -m benchmarks capture [--fast]
"""

from __future__ import annotations

import statistics

from benchmarks._common import Context, markdown_table, write_fragment
from stitchc import capture_source

__all__ = ["NAME", "TITLE", "MODELS", "FAST_MODELS", "run"]

NAME = "capture"
TITLE = "Capture"

#: (model source, input shape, reference MACs or None). The resnet50 reference is
#: 4.089e9 MACs at 224 (the figure most model zoos publish for it).
MODELS = [
    ("timm:resnet152", "1x3x224x224", None),
    ("timm:efficientnet_b4", "1x3x224x224", None),
    ("timm:resnet50", "1x3x224x224", 4.089e9),
    ("timm:resnext50_32x4d", "1x3x224x224", None),
    ("torchvision:deeplabv3_mobilenet_v3_large", "1x3x520x520", None),
    ("torchvision:deeplabv3_resnet50", "1x3x520x520", None),
]
FAST_MODELS = [
    ("timm:resnet10t,num_classes=10", "1x3x32x32", None),
    ("timm:mobilenetv3_small_050,num_classes=10", "1x3x32x32", None),
]


def measure(source: str, shape: str, repeats: int) -> dict:
    """Capture ``source`` ``repeats`` times and return the median time and the first capture's summary."""
    seconds = []
    summary = None
    for _ in range(repeats):
        result = capture_source(source, shape)
        seconds.append(result.report.seconds)
        summary = summary or result.summary()
    return {
        "model": source,
        "input": shape,
        "seconds": statistics.median(seconds),
        "seconds_all": seconds,
        "nodes": summary["nodes"],
        "layer_nodes": summary["layer_nodes"],
        "macs": summary["macs"],
        "params": summary["params"],
        "parity_max_abs_diff": summary["parity_max_abs_diff"],
        "flop_counted_modules": summary["flop_counted_modules"],
    }


def run(context: Context) -> None:
    """Capture every model of the list and write the ``capture`` fragment."""
    repeats = context.repeats(3)
    models = FAST_MODELS if context.fast else MODELS
    rows = []
    for source, shape, reference in models:
        row = measure(source, shape, repeats)
        row["reference_macs"] = reference
        rows.append(row)

    table_rows = []
    for row in rows:
        reference = row["reference_macs"]
        deviation = f"{(row['macs'] - reference) / reference:+.3%}" if reference else None
        table_rows.append([
            f"`{row['model']}`", row["input"], row["nodes"], row["layer_nodes"], f"{row['macs'] / 1e9:.3f}",
            f"{row['params'] / 1e6:.2f}", f"{row['seconds']:.2f}", f"{row['parity_max_abs_diff']:.1e}", deviation,
        ])
    body = (
        f"`stitchc.capture_source` on random weights, "
        + (f"median of {repeats} captures each" if repeats > 1 else
           "one capture each")
        + " (the time covers tracing, "
        "in-place rewriting, shape propagation with MAC counting and the parity check against the original "
        "module). Layer nodes are the nodes with a tensor output. MACs are multiply-accumulates of one "
        "forward pass at batch 1.\n\n"
        + markdown_table(
            ["model", "input", "nodes", "layer nodes", "GMACs", "M params", "capture s (median)",
             "parity max abs diff", "MACs vs reference"],
            table_rows,
        )
    )
    write_fragment(context, NAME, TITLE, body, rows)
