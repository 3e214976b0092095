"""Evaluation benchmark: cached and memoized evaluation against a plain forward, onnxruntime against torch.

On the real stitched pair's validation split, each of a set of distinct genotypes (drawn
as the search draws its first population) is evaluated four ways, side by side:

- ``SubnetEvaluator`` with the torch backend: parent activations cached, only the nodes
  behind the first stitch computed;
- the same call again, returned from the memo;
- a plain forward of the same pruned subnetwork over the same data (``evaluate_module``);
- ``SubnetEvaluator`` with the onnxruntime backend (an ONNX export per genotype, no caching).

    python -m benchmarks eval [--fast]
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks._common import Context, markdown_table, write_fragment
from benchmarks._pair import real_pair
from benchmarks.bench_supernet import stitches_used
from stitchc.passes.prune import prune_to_genotype
from stitchc.passes.supernet_file import load_supernet
from stitchc.runtime.data import load_data
from stitchc.runtime.evaluate import EvalOptions, SubnetEvaluator, evaluate_module
from stitchc.runtime.search import biased_population

__all__ = ["NAME", "TITLE", "describe_genotype", "draw_genotypes", "measure", "run"]

NAME = "eval"
TITLE = "Evaluation: caching, memoization and onnxruntime"


def draw_genotypes(genotype_length: int, count: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Draw ``count`` genotypes as the search's first population is drawn."""
    alphabet = (2,) * (genotype_length - 1) + (3,)
    population = biased_population(count, alphabet, np.random.default_rng(seed))
    return [tuple(int(value) for value in genotype) for genotype in population]


def describe_genotype(genotype: tuple[int, ...]) -> str:
    """Return a short form of a genotype: the switch positions set to 1 and the output switch."""
    ones = ",".join(str(position) for position, value in enumerate(genotype[:-1]) if value)
    return f"1 at {ones or 'none'}; output {genotype[-1]}"


def _timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def measure(supernet, dataset, task: str, num_classes: int, genotypes, onnx_count: int) -> dict:
    """Evaluate each genotype every way and return per-genotype rows and the one-off cache fill time."""
    evaluator = SubnetEvaluator(supernet, dataset, task, num_classes, EvalOptions())
    ort_evaluator = SubnetEvaluator(supernet, dataset, task, num_classes, EvalOptions(backend="onnxruntime"))
    # The first call fills the activation cache; it is timed apart from the per-genotype figures.
    first = (0,) * (supernet.genotype_length - 1) + (0,)
    _, cache_fill = _timed(lambda: evaluator.evaluate(first))

    rows = []
    for index, genotype in enumerate(genotypes):
        cached, cached_s = _timed(lambda: evaluator.evaluate(genotype))
        if cached["memoized"]:
            # Two drawn genotypes select the same network; the plain forward comparison needs a fresh one.
            continue
        _, memo_s = _timed(lambda: evaluator.evaluate(genotype))
        gm = prune_to_genotype(supernet, genotype)
        plain, plain_s = _timed(lambda: evaluate_module(gm, dataset, task, num_classes))
        row = {
            "genotype": "".join(map(str, genotype)), "short": describe_genotype(genotype), "stitches_used": stitches_used(gm), "macs": cached["macs"],
            "cached_s": cached_s, "memoized_s": memo_s, "plain_s": plain_s,
            "accuracy_cached": cached["accuracy"], "accuracy_plain": plain["accuracy"],
        }
        if index < onnx_count:
            ort, ort_s = _timed(lambda: ort_evaluator.evaluate(genotype))
            row.update(onnxruntime_s=ort_s, accuracy_onnxruntime=ort["accuracy"])
        rows.append(row)
    return {"cache_fill_s": cache_fill, "samples": len(dataset), "rows": rows}


def run(context: Context) -> None:
    """Measure evaluation on the real pair and write the ``eval`` fragment."""
    pair = real_pair(context)
    supernet = load_supernet(pair.supernet_path)
    splits = load_data(pair.data, supernet.input_shape, pair.data_options)
    count, onnx_count = (3, 1) if context.fast else (24, 6)
    genotypes = draw_genotypes(supernet.genotype_length, count)
    result = measure(supernet, splits.val, splits.task, splits.num_classes, genotypes, onnx_count)
    rows = result["rows"]

    cached_mean = statistics.fmean(row["cached_s"] for row in rows)
    plain_mean = statistics.fmean(row["plain_s"] for row in rows)
    memo_mean = statistics.fmean(row["memoized_s"] for row in rows)
    with_ort = [row for row in rows if "onnxruntime_s" in row]
    ort_mean = statistics.fmean(row["onnxruntime_s"] for row in with_ort) if with_ort else float("nan")
    plain_ort_mean = statistics.fmean(row["plain_s"] for row in with_ort) if with_ort else float("nan")
    accuracy_gap = max(abs(row["accuracy_cached"] - row["accuracy_plain"]) for row in rows)
    summary = {
        "genotypes": len(rows), "cache_fill_s": result["cache_fill_s"], "cached_mean_s": cached_mean,
        "plain_mean_s": plain_mean, "cached_over_plain": cached_mean / plain_mean, "memoized_mean_s": memo_mean,
        "onnxruntime_genotypes": len(with_ort), "onnxruntime_mean_s": ort_mean,
        "plain_mean_s_same_genotypes": plain_ort_mean, "onnxruntime_over_plain": ort_mean / plain_ort_mean,
        "max_accuracy_gap_cached_vs_plain": accuracy_gap,
    }

    table = [[
        row.get("short", row["genotype"]), row["stitches_used"], f"{row['macs'] / 1e6:.2f}", f"{row['cached_s'] * 1e3:.1f}",
        f"{row['memoized_s'] * 1e6:.0f}", f"{row['plain_s'] * 1e3:.1f}", f"{row['cached_s'] / row['plain_s']:.2f}",
        f"{row['onnxruntime_s'] * 1e3:.1f}" if "onnxruntime_s" in row else None,
        f"{row['accuracy_cached']:.4f}",
    ] for row in rows]
    body = "\n".join([
        f"Real pair: {pair.description}. Evaluation set: the validation split ({result['samples']} samples), "
        "batch 256, CPU. Each genotype is evaluated once per way, in the order of the table, after the "
        f"activation cache was filled once ({result['cache_fill_s']:.2f} s, not counted in any row). "
        "Genotypes that select the same network as an earlier one are left out.",
        "",
        markdown_table(["genotypes", "cached mean ms", "plain forward mean ms",
                        "cached / plain (target <= 0.5)", "memoized mean µs",
                        "onnxruntime mean ms (first genotypes)", "plain mean ms (same genotypes)",
                        "onnxruntime / plain", "max accuracy difference, cached vs plain"],
                       [[len(rows), f"{cached_mean * 1e3:.1f}", f"{plain_mean * 1e3:.1f}",
                         f"{summary['cached_over_plain']:.2f}", f"{memo_mean * 1e6:.0f}",
                         f"{ort_mean * 1e3:.1f} ({len(with_ort)})", f"{plain_ort_mean * 1e3:.1f}",
                         f"{summary['onnxruntime_over_plain']:.2f}", f"{accuracy_gap:.2g}"]]),
        "The onnxruntime backend exports every genotype to ONNX before running it, so its time is mostly the "
        "export; skip rates per algorithm are in the real-pair search section.",
        "",
        markdown_table(["genotype", "stitches used", "MMACs", "cached ms", "memoized µs", "plain forward ms",
                        "cached / plain", "onnxruntime ms", "accuracy"], table),
    ])
    write_fragment(context, NAME, TITLE, body, {"summary": summary, **result})
