"""Cost benchmark: stitchc's MACs against ``torch.utils.flop_counter.FlopCounterMode`` / 2.

FlopCounterMode counts FLOPs of the aten ops it has formulas for (convolutions, matrix
products, attention kernels) and reports 2 FLOPs per multiply-accumulate, so half its
total is directly comparable with stitchc's MAC count. It runs twice per model: with
the default attention backend and with the math backend forced, because on CPU the
default backend is a fused kernel that FlopCounterMode may have no formula for.

    python -m benchmarks costs [--fast]
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import Context, markdown_table, write_fragment
from stitchc import capture_source
from stitchc.capture import example_input, parse_input_shape
from stitchc.errors import StitchcError
from stitchc.sources import load_model

__all__ = ["NAME", "TITLE", "MODELS", "FAST_MODELS", "measure", "render", "run"]

NAME = "costs"
TITLE = "Costs: stitchc MACs against FlopCounterMode"

#: (model source, input shape, the layer types it exercises).
MODELS = [
    ("timm:resnet50", "1x3x224x224", "dense convolutions"),
    ("timm:resnext50_32x4d", "1x3x224x224", "grouped convolutions"),
    ("timm:mobilenetv3_large_100", "1x3x224x224", "depthwise convolutions, squeeze-excite"),
    ("timm:regnety_016", "1x3x224x224", "grouped convolutions, squeeze-excite"),
    ("timm:convnext_tiny", "1x3x224x224", "depthwise 7x7 convolutions, linear layers"),
    ("timm:vit_tiny_patch16_224", "1x3x224x224", "attention through F.scaled_dot_product_attention"),
    ("timm:swin_tiny_patch4_window7_224", "1x3x224x224", "windowed attention with a mask"),
    ("torchvision:resnet18", "1x3x224x224", "dense convolutions"),
    ("torchvision:mobilenet_v3_small", "1x3x224x224", "depthwise convolutions"),
    ("torchvision:shufflenet_v2_x1_0", "1x3x224x224", "depthwise convolutions, channel shuffle"),
    ("torchvision:vit_b_16", "1x3x224x224", "attention through nn.MultiheadAttention"),
]
FAST_MODELS = [
    ("timm:resnet10t,num_classes=10", "1x3x32x32", "dense convolutions"),
    ("timm:mobilenetv3_small_050,num_classes=10", "1x3x32x32", "depthwise convolutions"),
    ("timm:vit_tiny_patch16_224,img_size=32,patch_size=8,num_classes=10", "1x3x32x32", "attention"),
]


def _flop_counter_macs(model: torch.nn.Module, x: torch.Tensor, force_math: bool) -> tuple[int, dict[str, int]]:
    """Return FlopCounterMode's total / 2 and its per-op MACs for one forward pass."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if force_math:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        counter = stack.enter_context(FlopCounterMode(display=False))
        model(x)
    per_op = {str(op): int(flops) // 2 for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops() // 2, per_op


def _explain(row: dict) -> str:
    """Say why the counts differ, from which of the two FlopCounterMode runs agree with stitchc."""
    stitchc_macs, default, math = row["stitchc_macs"], row["flop_counter_macs"], row["flop_counter_math_macs"]
    if stitchc_macs == default == math:
        return "equal"
    if stitchc_macs == math != default:
        return ("FlopCounterMode's default run misses the fused CPU attention kernel (no formula for it); "
                "with the math backend forced the counts are equal")
    difference = stitchc_macs - math
    text = f"stitchc counts {difference:+,} MACs more than the math-backend run ({difference / math:+.3%})"
    if row.get("multihead_attention_modules"):
        # Checked on a single nn.MultiheadAttention: under no_grad FlopCounterMode counts 0 MACs for it.
        return (text + f". The model's {row['multihead_attention_modules']} nn.MultiheadAttention modules take "
                "their inference fast path (torch._native_multi_head_attention) under no_grad, and "
                "FlopCounterMode has no formula for that op, so it misses their projections and attention "
                "products; stitchc counts them with its nn.MultiheadAttention formula")
    ops = ", ".join(sorted(row["flop_counter_ops_math"]))
    return f"{text}; FlopCounterMode counted only: {ops}"


def measure(source: str, shape: str) -> dict:
    """Count one model's MACs both ways."""
    input_shape = parse_input_shape(shape)
    started = time.perf_counter()
    summary = capture_source(source, input_shape).summary()
    capture_seconds = time.perf_counter() - started

    model = load_model(source).eval()
    x = example_input(input_shape)
    default, _ = _flop_counter_macs(model, x, force_math=False)
    math, per_op = _flop_counter_macs(model, x, force_math=True)
    row = {
        "model": source,
        "input": shape,
        "multihead_attention_modules": sum(isinstance(module, torch.nn.MultiheadAttention)
                                           for module in model.modules()),
        "stitchc_macs": summary["macs"],
        "flop_counter_macs": default,
        "flop_counter_math_macs": math,
        "flop_counter_ops_math": per_op,
        "flop_counted_modules": summary["flop_counted_modules"],
        "capture_seconds": capture_seconds,
    }
    row["why"] = _explain(row)
    return row


def run(context: Context) -> None:
    """Count every model of the zoo and write the ``costs`` fragment."""
    models = FAST_MODELS if context.fast else MODELS
    rows = []
    for source, shape, layers in models:
        try:
            row = measure(source, shape)
        except (StitchcError, RuntimeError) as error:
            # One failing architecture is a finding to report, not a reason to lose the others.
            row = {"model": source, "input": shape, "error": f"{type(error).__name__}: {error}"}
        row["layers"] = layers
        rows.append(row)

    write_fragment(context, NAME, TITLE, render(rows), rows)


def render(rows: list[dict]) -> str:
    """Return the fragment's body for the measured rows."""
    table_rows = []
    for row in rows:
        if "error" in row:
            table_rows.append([f"`{row['model']}`", row["layers"], None, None, None, None, f"failed: {row['error']}"])
            continue
        table_rows.append([
            f"`{row['model']}`", row["layers"], f"{row['stitchc_macs']:,}", f"{row['flop_counter_macs']:,}",
            f"{row['flop_counter_math_macs']:,}",
            f"{row['stitchc_macs'] / row['flop_counter_math_macs']:.4f}" if row["flop_counter_math_macs"] else None,
            row["why"],
        ])
    agreeing = sum(1 for row in rows if row.get("stitchc_macs") is not None
                   and row["stitchc_macs"] == row["flop_counter_math_macs"])
    body = (
        f"MACs of one forward pass at batch 1 on random weights, {agreeing} of {len(rows)} models equal. "
        f"`FlopCounterMode / 2` runs the original module with the default attention backends; `math` forces "
        "`SDPBackend.MATH` through `torch.nn.attention.sdpa_kernel`, so attention is counted as its two "
        "matrix products. Modules that stitchc counts with FlopCounterMode itself (no formula) are listed in "
        f"`{NAME}.json` as `flop_counted_modules`.\n\n"
        + markdown_table(
            ["model", "layers exercised", "stitchc MACs", "FlopCounterMode / 2", "FlopCounterMode / 2 (math)",
             "stitchc / math", "why they differ"],
            table_rows,
        )
    )
    return body
