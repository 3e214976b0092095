"""Scaling benchmark: capture, matching and evaluation time as same-family parents grow.

The pairs are timm resnet18 x resnet34, resnet34 x resnet50, resnet50 x resnet101 and
resnet101 x resnet152. At 224 it measures each parent's capture time, the candidate count,
the matching time and the peak Python memory. At 64 it compares the cached evaluation time
with a plain forward, on random weights and random images, because the times do not depend
on the values. Plots are written as PNGs beside the fragment.

    python -m benchmarks scaling [--fast]
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from benchmarks._common import Context, markdown_table, median_seconds, write_fragment  # noqa: E402
from benchmarks.bench_eval import draw_genotypes  # noqa: E402
from stitchc import capture_source  # noqa: E402
from stitchc.ir import total_macs  # noqa: E402
from stitchc.passes.build import insert_stitches  # noqa: E402
from stitchc.passes.candidates import find_candidates, to_digraph  # noqa: E402
from stitchc.passes.matching import MatchingOptions, solve_matching  # noqa: E402
from stitchc.passes.prune import prune_to_genotype  # noqa: E402
from stitchc.runtime.evaluate import EvalOptions, SubnetEvaluator, evaluate_module  # noqa: E402

__all__ = ["NAME", "TITLE", "SERIES", "FAST_SERIES", "run"]

NAME = "scaling"
TITLE = "Scaling with parent depth"

SERIES = ["timm:resnet18", "timm:resnet34", "timm:resnet50", "timm:resnet101", "timm:resnet152"]
FAST_SERIES = ["timm:resnet10t,num_classes=10", "timm:resnet14t,num_classes=10"]


def _match(gm_a, gm_b, repeats: int) -> dict:
    candidates = find_candidates(gm_a, gm_b)
    graph_a, graph_b = to_digraph(gm_a), to_digraph(gm_b)
    options = MatchingOptions(solver="cpsat", time_limit=120.0)
    result = solve_matching(graph_a, graph_b, candidates, options=options)
    seconds = median_seconds(lambda: solve_matching(graph_a, graph_b, candidates, options=options), repeats, warmup=0)
    # tracemalloc slows Python allocations, so the memory is measured in its own solve.
    tracemalloc.start()
    solve_matching(graph_a, graph_b, candidates, options=options)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    by_pair = {(candidate.a, candidate.b): candidate for candidate in candidates}
    return {"candidates": len(candidates), "matches": len(result.pairs), "match_s": seconds,
            "match_peak_mib": peak / 2**20, "pairs": [by_pair[tuple(pair)] for pair in result.pairs]}


def _evaluate(gm_a, gm_b, pairs, samples: int, genotype_count: int) -> dict:
    supernet = insert_stitches(gm_a, gm_b, pairs)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, *supernet.input_shape[1:], generator=generator)
    with torch.no_grad():
        classes = gm_a(images[:1]).shape[-1]
    labels = torch.randint(0, classes, (samples,), generator=generator)
    dataset = TensorDataset(images, labels)
    evaluator = SubnetEvaluator(supernet, dataset, "classification", classes, EvalOptions(batch_size=32))
    started = time.perf_counter()
    evaluator.evaluate((0,) * (supernet.genotype_length - 1) + (0,))
    cache_fill = time.perf_counter() - started
    cached, plain = [], []
    for genotype in draw_genotypes(supernet.genotype_length, genotype_count):
        started = time.perf_counter()
        if evaluator.evaluate(genotype)["memoized"]:
            continue
        cached.append(time.perf_counter() - started)
        gm = prune_to_genotype(supernet, genotype)
        started = time.perf_counter()
        evaluate_module(gm, dataset, "classification", classes, batch_size=32)
        plain.append(time.perf_counter() - started)
    return {"eval_cache_fill_s": cache_fill, "eval_cached_mean_s": statistics.fmean(cached),
            "eval_plain_mean_s": statistics.fmean(plain), "eval_genotypes": len(cached)}


def _plot(rows: list[dict], context: Context) -> list[str]:
    """Draw the three scaling plots and return their file names."""
    labels = [row["pair"].replace("timm:", "").replace(",num_classes=10", "") for row in rows]
    nodes = [row["layer_nodes_a"] + row["layer_nodes_b"] for row in rows]
    names = []

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(nodes, [row["match_s"] for row in rows], "o-")
    left.set(xlabel="layer nodes of both parents", ylabel="matching time (s)", title="Matching time")
    right.plot(nodes, [row["match_peak_mib"] for row in rows], "o-")
    right.set(xlabel="layer nodes of both parents", ylabel="peak Python memory (MiB)", title="Matching memory")
    for axis in (left, right):
        for x, y, label in zip(axis.lines[0].get_xdata(), axis.lines[0].get_ydata(), labels):
            axis.annotate(label, (x, y), fontsize=7)
    names.append(_save(figure, context, "scaling_matching.png"))

    figure, axis = plt.subplots(figsize=(5, 4))
    models = {}
    for row in rows:
        models[row["model_a"]] = (row["layer_nodes_a"], row["capture_a_s"])
        models[row["model_b"]] = (row["layer_nodes_b"], row["capture_b_s"])
    points = sorted(models.values())
    axis.plot([p[0] for p in points], [p[1] for p in points], "o-")
    axis.set(xlabel="layer nodes", ylabel="capture time at 224 (s)", title="Capture time")
    names.append(_save(figure, context, "scaling_capture.png"))

    figure, axis = plt.subplots(figsize=(5, 4))
    macs = [row["macs_a"] + row["macs_b"] for row in rows]
    axis.plot(macs, [row["eval_cached_mean_s"] for row in rows], "o-", label="cached + memoized evaluator")
    axis.plot(macs, [row["eval_plain_mean_s"] for row in rows], "s-", label="plain forward")
    axis.set(xlabel="MACs of both parents at the evaluation size", ylabel="seconds per genotype",
             title="Evaluation time")
    axis.legend()
    names.append(_save(figure, context, "scaling_eval.png"))
    return names


def _save(figure, context: Context, name: str) -> str:
    context.results_dir.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(context.results_dir / name, dpi=100)
    plt.close(figure)
    return name


def run(context: Context) -> None:
    """Run the series and write the ``scaling`` fragment with its plots."""
    series = FAST_SERIES if context.fast else SERIES
    shape, eval_shape = ("1x3x32x32", "1x3x32x32") if context.fast else ("1x3x224x224", "1x3x64x64")
    samples, genotype_count = (16, 2) if context.fast else (64, 6)
    repeats = context.repeats(3)

    captures = {}
    for source in series:
        result = capture_source(source, shape)
        evaluation = result if eval_shape == shape else capture_source(source, eval_shape)
        captures[source] = (result, evaluation)

    rows = []
    for source_a, source_b in zip(series, series[1:]):
        (big_a, small_a), (big_b, small_b) = captures[source_a], captures[source_b]
        matched = _match(big_a.gm, big_b.gm, repeats)
        small_pairs = _match(small_a.gm, small_b.gm, 1)["pairs"]
        row = {
            "pair": f"{source_a} x {source_b}", "model_a": source_a, "model_b": source_b,
            "layer_nodes_a": big_a.summary()["layer_nodes"], "layer_nodes_b": big_b.summary()["layer_nodes"],
            "capture_a_s": big_a.report.seconds, "capture_b_s": big_b.report.seconds,
            "macs_a": total_macs(small_a.gm), "macs_b": total_macs(small_b.gm),
            **{key: value for key, value in matched.items() if key != "pairs"},
            **_evaluate(small_a.gm, small_b.gm, small_pairs, samples, genotype_count),
        }
        rows.append(row)

    plots = _plot(rows, context)
    table = [[
        row["pair"], row["layer_nodes_a"] + row["layer_nodes_b"], f"{row['capture_a_s']:.1f} + {row['capture_b_s']:.1f}",
        row["candidates"], row["matches"], f"{row['match_s']:.3f}", f"{row['match_peak_mib']:.1f}",
        f"{row['eval_cache_fill_s']:.2f}", f"{row['eval_cached_mean_s'] * 1e3:.0f}",
        f"{row['eval_plain_mean_s'] * 1e3:.0f}", f"{row['eval_cached_mean_s'] / row['eval_plain_mean_s']:.2f}",
    ] for row in rows]
    body = "\n".join([
        f"Capture and matching at {shape}; matching time is the median of {repeats} CP-SAT solves (after the "
        "exact lattice search) and the peak is of Python allocations in one more solve (tracemalloc). "
        f"Evaluation at {eval_shape} on {samples} random images, batch 32: the activation cache is filled "
        f"once, then {genotype_count} genotypes drawn as the search draws them are evaluated by the cached "
        "evaluator and by a plain forward of the same pruned subnetwork.",
        "",
        markdown_table(["pair", "layer nodes", "capture s (A + B)", "candidates", "matches", "match s",
                        "match peak MiB", "cache fill s", "cached ms / genotype", "plain ms / genotype",
                        "cached / plain"], table),
        *[f"![{name}](plot:{name})" for name in plots],
    ])
    write_fragment(context, NAME, TITLE, body, rows)
