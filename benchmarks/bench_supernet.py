"""Supernetwork benchmark: stitch training, least-squares initialization, emitting, build times.

Measured on two pairs: the real stitched pair (parents trained on digits) and
timm resnet50 x resnext50_32x4d at 112 (random weights), plus build and emit times for
timm resnet152 x efficientnet_b4 at 224.

- stitch-training step against the sum of its parts at the same batch (both parents'
  forward without gradients, plus the stitches' forward, backward and optimizer step);
- the joint step against training each stitch in its own run, each with its own parents'
  forward (the original model-stitching recipe);
- least-squares initialization against the default AdamW recipe (one epoch);
- the emitted all-zeros subnetwork's latency against parent A's;
- onnxruntime against torch eager on emitted subnetworks.

    python -m benchmarks supernet [--fast]
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks._common import Context, format_ratio, markdown_table, median_seconds, write_fragment
from benchmarks._pair import real_pair
from stitchc import capture_source
from stitchc.passes.build import BuildOptions, Supernet, insert_stitches
from stitchc.passes.candidates import find_candidates, to_digraph
from stitchc.passes.matching import solve_matching
from stitchc.passes.prune import prune_graph, prune_to_genotype
from stitchc.passes.supernet_file import load_supernet, read_supernet_file
from stitchc.runtime.data import load_data
from stitchc.runtime.emit import emit_model, load_emitted
from stitchc.runtime.search import biased_population
from stitchc.runtime.train import TrainOptions, stitch_features, train_stitches
from stitchc.sources import load_model

# The step under test is the library's own training step, so its time is the real one.
from stitchc.runtime.train import _train_step  # noqa: E402

__all__ = ["NAME", "TITLE", "run", "build_pair", "stitches_used", "measure_step", "measure_init", "measure_emitted"]

logger = logging.getLogger(__name__)

NAME = "supernet"
TITLE = "Supernetwork: stitch training and emitting"

# NOTE: this pair's step and emit comparisons run at 112, because at 224 the whole benchmark did not
# finish within 8 minutes on 2 cores; the step / parts ratio compares the same work at either size.
BIG_PAIR = ("timm:resnet50", "timm:resnext50_32x4d", (1, 3, 112, 112))
BUILD_PAIR = ("timm:resnet152", "timm:efficientnet_b4", (1, 3, 224, 224))
FAST_BIG_PAIR = ("timm:resnet10t,num_classes=10", "timm:resnet18,num_classes=10", (1, 3, 32, 32))


def build_pair(source_a: str, source_b: str, input_shape: tuple[int, ...]) -> tuple[Supernet, dict]:
    """Capture, match and build a supernetwork; return it with the seconds of each step."""
    seconds = {}
    started = time.perf_counter()
    gm_a = capture_source(source_a, input_shape).gm
    gm_b = capture_source(source_b, input_shape).gm
    seconds["capture"] = time.perf_counter() - started

    started = time.perf_counter()
    candidates = find_candidates(gm_a, gm_b)
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    by_pair = {(candidate.a, candidate.b): candidate for candidate in candidates}
    pairs = [by_pair[tuple(pair)] for pair in result.pairs]
    seconds["match"] = time.perf_counter() - started

    started = time.perf_counter()
    supernet = insert_stitches(gm_a, gm_b, pairs)
    seconds["build"] = time.perf_counter() - started
    return supernet, seconds


def _fresh_stitches(path: Path) -> Supernet:
    """Rebuild the supernetwork stored in ``path`` with its trained parents but untrained stitches."""
    content = read_supernet_file(path)
    shape = tuple(content["input_shape"])
    parents = [capture_source(source, shape).gm for source in content["sources"]]
    triples = [(match["a"], match["b"], match["kind"]) for match in content["matches"]]
    stored = content["options"]
    options = BuildOptions(ensemble=stored.get("ensemble", "logits"), seed=stored.get("seed", 0))
    return insert_stitches(parents[0], parents[1], triples, options)


def _parent_genotype(supernet: Supernet, output: int) -> tuple[int, ...]:
    return (0,) * (supernet.genotype_length - 1) + (output,)


def measure_step(supernet: Supernet, batch_size: int, repeats: int, separate_sample: int | None) -> dict:
    """Time one stitch-training step, its parts, and one step of each separate per-stitch run.

    ``separate_sample`` evenly spread stitches (``None`` means all) are timed in their own
    run. The m separate runs' total is their mean time times m, so it is an estimate when sampled.
    """
    supernet = copy.deepcopy(supernet)
    features_gm, slots = stitch_features(supernet)
    supernet.train(True)
    x = torch.randn(batch_size, *supernet.input_shape[1:], generator=torch.Generator().manual_seed(0))
    parameters = [parameter for slot in slots for parameter in slot.module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)

    step = median_seconds(lambda: _train_step(features_gm, slots, x, optimizer), repeats)

    gm_a = prune_graph(supernet, _parent_genotype(supernet, 0), copy_weights=False)
    gm_b = prune_graph(supernet, _parent_genotype(supernet, 1), copy_weights=False)
    with torch.no_grad():
        parent_a = median_seconds(lambda: gm_a(x), repeats)
        parent_b = median_seconds(lambda: gm_b(x), repeats)
        values = features_gm(x)

    def stitches_only() -> None:
        losses = [nn.functional.mse_loss(slot.module(values[slot.source]), values[slot.target]) for slot in slots]
        optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        optimizer.step()

    stitches = median_seconds(stitches_only, repeats)

    chosen = slots if separate_sample is None or separate_sample >= len(slots) else [
        slots[int(index)] for index in np.linspace(0, len(slots) - 1, separate_sample)]
    separate_times = []
    for slot in chosen:
        def separate_step(slot=slot) -> None:
            with torch.no_grad():
                features = features_gm(x)
            loss = nn.functional.mse_loss(slot.module(features[slot.source]), features[slot.target])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        separate_times.append(median_seconds(separate_step, repeats))
    separate_total = statistics.fmean(separate_times) * len(slots)
    parts = parent_a + parent_b + stitches
    return {
        "stitches": len(slots), "batch_size": batch_size, "step_s": step, "parent_a_s": parent_a,
        "parent_b_s": parent_b, "stitches_fwd_bwd_s": stitches, "sum_of_parts_s": parts,
        "step_over_parts": step / parts, "separate_measured": len(chosen), "separate_total_s": separate_total,
        "separate_over_step": separate_total / step,
    }


def measure_init(path: Path, data: str, data_options, fast: bool = False) -> dict:
    """Compare least-squares initialization with the default AdamW recipe on fresh stitches.

    With ``fast``, AdamW runs 2 steps instead of one epoch and MSE is measured on one batch.
    """
    supernet = _fresh_stitches(path)
    splits = load_data(data, supernet.input_shape, data_options)
    adam_options = TrainOptions(samples=64, eval_batches=1) if fast else TrainOptions()
    adam = train_stitches(copy.deepcopy(supernet), splits.train, adam_options)
    # One step is the least train_stitches takes; its MSE is read before that step.
    lstsq_options = TrainOptions(init="lstsq", samples=1, eval_batches=adam_options.eval_batches)
    lstsq = train_stitches(copy.deepcopy(supernet), splits.train, lstsq_options)
    names = sorted(adam.mse_after)
    reached = sum(lstsq.mse_after_init[name] <= adam.mse_after[name] for name in names)
    return {
        "stitches": len(names), "adam_steps": adam.steps, "adam_s": adam.seconds, "lstsq_s": lstsq.seconds,
        "lstsq_over_adam_time": lstsq.seconds / adam.seconds,
        "mse_before_mean": statistics.fmean(adam.mse_before.values()),
        "adam_mse_mean": statistics.fmean(adam.mse_after.values()),
        "lstsq_mse_mean": statistics.fmean(lstsq.mse_after_init[name] for name in names),
        "lstsq_reached": reached, "lstsq_fallbacks": list(lstsq.lstsq_fallbacks),
    }


def _ort_seconds(session, x: torch.Tensor, repeats: int) -> float:
    name = session.get_inputs()[0].name
    array = x.numpy()
    return median_seconds(lambda: session.run(None, {name: array}), repeats)


def measure_emitted(supernet: Supernet, source_a: str, genotypes: dict[str, tuple[int, ...]],
                    batch_sizes: tuple[int, ...], repeats: int) -> dict:
    """Emit each genotype as .pt2 and .onnx; time parent A, the emitted modules and onnxruntime."""
    parent_a = load_model(source_a).eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, genotype in genotypes.items():
            gm = prune_to_genotype(supernet, genotype).eval()
            pt2 = emit_model(gm, Path(folder) / f"{label}.pt2", verify=False)
            onnx = emit_model(gm, Path(folder) / f"{label}.onnx")
            exported = load_emitted(Path(folder) / f"{label}.pt2")
            session = load_emitted(Path(folder) / f"{label}.onnx")
            for batch_size in batch_sizes:
                x = torch.randn(batch_size, *supernet.input_shape[1:], generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    eager = median_seconds(lambda: gm(x), repeats)
                    emitted = median_seconds(lambda: exported(x), repeats)
                    parent = median_seconds(lambda: parent_a(x), repeats) if label == "all-zeros A" else None
                ort = _ort_seconds(session, x, repeats)
                rows.append({
                    "genotype": label, "stitches_used": stitches_used(gm),
                    "batch_size": batch_size, "macs": pt2["macs"], "emit_pt2_s": pt2["seconds"],
                    "emit_onnx_s": onnx["seconds"], "parent_a_s": parent, "torch_eager_s": eager,
                    "pt2_s": emitted, "onnxruntime_s": ort,
                    "emitted_over_parent_a": None if parent is None else emitted / parent,
                    "eager_over_onnxruntime": eager / ort,
                })
    return {"rows": rows}


def stitches_used(gm: torch.fx.GraphModule) -> int:
    """Return how many stitches a pruned subnetwork runs."""
    origins = gm.meta.get("stitchc_provenance", {}).get("nodes", {}).values()
    return len({origin for origin in origins if origin.startswith("stitch:")})


def _genotypes(supernet: Supernet, random_count: int) -> dict[str, tuple[int, ...]]:
    genotypes = {"all-zeros A": _parent_genotype(supernet, 0), "all-zeros B": _parent_genotype(supernet, 1)}
    rng = np.random.default_rng(0)
    alphabet = (2,) * (supernet.genotype_length - 1) + (2,)
    for index, genotype in enumerate(biased_population(random_count, alphabet, rng)):
        genotypes[f"random {index + 1}"] = tuple(int(value) for value in genotype)
    return genotypes


def measure_build_and_emit(source_a: str, source_b: str, input_shape: tuple[int, ...]) -> dict:
    """Capture, match, build and emit one random subnetwork of a large pair, once."""
    supernet, seconds = build_pair(source_a, source_b, input_shape)
    genotype = _genotypes(supernet, 1)["random 1"]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        gm = prune_to_genotype(supernet, genotype)
        seconds["prune"] = time.perf_counter() - started
        seconds["emit_pt2"] = emit_model(gm, Path(folder) / "sub.pt2", verify=False)["seconds"]
        seconds["emit_onnx"] = emit_model(gm, Path(folder) / "sub.onnx", verify=False)["seconds"]
    return {"pair": f"{source_a} x {source_b}", "input": "x".join(map(str, input_shape)),
            "matches": len(supernet.matches), "stitches_in_subnetwork": stitches_used(gm), **seconds}


def _step_table(steps: dict[str, dict]) -> str:
    rows = []
    for pair, row in steps.items():
        rows.append([
            pair, row["stitches"], row["batch_size"], f"{row['step_s']:.4f}", f"{row['parent_a_s']:.4f}",
            f"{row['parent_b_s']:.4f}", f"{row['stitches_fwd_bwd_s']:.4f}", f"{row['sum_of_parts_s']:.4f}",
            f"{row['step_over_parts']:.2f}", f"{row['separate_total_s']:.3f}" + (
                "" if row["separate_measured"] == row["stitches"]
                else f" (estimate from {row['separate_measured']})"),
            f"{row['separate_over_step']:.1f}",
        ])
    return markdown_table(["pair", "stitches", "batch", "step s", "parent A fwd s", "parent B fwd s",
                           "stitches fwd+bwd+step s", "sum of parts s", "step / parts (target <= 1.2)",
                           "m separate runs s", "separate / joint"], rows)


def _emit_table(emitted: dict[str, dict]) -> str:
    rows = []
    for pair, result in emitted.items():
        for row in result["rows"]:
            rows.append([
                pair, row["genotype"], row["stitches_used"], row["batch_size"], f"{row['macs'] / 1e6:.1f}",
                None if row["parent_a_s"] is None else f"{row['parent_a_s'] * 1e3:.2f}",
                f"{row['pt2_s'] * 1e3:.2f}", f"{row['torch_eager_s'] * 1e3:.2f}", f"{row['onnxruntime_s'] * 1e3:.2f}",
                None if row["emitted_over_parent_a"] is None else f"{row['emitted_over_parent_a']:.3f}",
                f"{row['eager_over_onnxruntime']:.2f}", f"{row['emit_pt2_s']:.1f}", f"{row['emit_onnx_s']:.1f}",
            ])
    return markdown_table(["pair", "subnetwork", "stitches used", "batch", "MMACs", "parent A ms", "emitted .pt2 ms",
                           "torch eager ms", "onnxruntime ms", ".pt2 / parent A (target <= 1.02)",
                           "eager / onnxruntime (target >= 1.5)", "emit .pt2 s", "emit .onnx s"], rows)


def run(context: Context) -> None:
    """Run every supernetwork measurement and write the ``supernet`` fragment."""
    repeats = context.repeats(5)
    pair = real_pair(context)
    small = load_supernet(pair.supernet_path)
    small_batch = 32 if not context.fast else 8
    big_a, big_b, big_shape = FAST_BIG_PAIR if context.fast else BIG_PAIR
    big, _ = build_pair(big_a, big_b, big_shape)
    big_label = f"{big_a} x {big_b} at {'x'.join(map(str, big_shape))}"

    steps = {
        "real pair": measure_step(small, small_batch, repeats, separate_sample=4 if context.fast else 12),
        big_label: measure_step(big, 2, 1, separate_sample=4),
    }
    init = measure_init(pair.supernet_path, pair.data, pair.data_options, context.fast)
    if context.fast:
        small_genotypes = {key: value for key, value in _genotypes(small, 1).items() if key != "all-zeros B"}
        emitted = {"real pair": measure_emitted(small, small.sources[0], small_genotypes, (1,), repeats)}
    else:
        emitted = {
            "real pair": measure_emitted(small, small.sources[0], _genotypes(small, 2), (1, small_batch), repeats),
            big_label: measure_emitted(big, big_a, {key: value for key, value in _genotypes(big, 1).items()
                                                    if key != "all-zeros B"}, (1,), 1),
        }
    build_a, build_b, build_shape = FAST_BIG_PAIR if context.fast else BUILD_PAIR
    build = measure_build_and_emit(build_a, build_b, build_shape)

    init_rows = [[init["stitches"], init["adam_steps"], f"{init['adam_s']:.2f}", f"{init['lstsq_s']:.2f}",
                  f"{init['lstsq_over_adam_time']:.1%}", f"{init['mse_before_mean']:.4f}",
                  f"{init['adam_mse_mean']:.4f}", f"{init['lstsq_mse_mean']:.4f}",
                  f"{init['lstsq_reached']} of {init['stitches']}"]]
    build_rows = [[build["pair"], build["input"], build["matches"], f"{build['capture']:.1f}", f"{build['match']:.2f}",
                   f"{build['build']:.2f}", f"{build['prune']:.2f}", build["stitches_in_subnetwork"],
                   f"{build['emit_pt2']:.1f}", f"{build['emit_onnx']:.1f}"]]
    body = "\n".join([
        f"The real pair is {pair.description}. The large pairs have random weights; their timing does not "
        "depend on the weights' values. Times are medians of "
        f"{repeats} repeats (1 for the large pair) after one untimed warm-up, on random inputs.",
        "",
        "### Stitch-training step against the sum of its parts and against separate runs",
        "",
        "`step` is one call of the library's training step: both parents' forward without gradients "
        "(a graph that returns every stitch's input and target), every stitch's forward and MSE, backward and "
        "the AdamW step. The parts are timed separately at the same batch: each parent's pruned forward, "
        "and the stitches' forward, backward and step on stored features. `m separate runs` is the cost of one "
        "step in each of m runs that train one stitch each, every run with its own forward of both parents "
        "(the original model-stitching recipe); where it says estimate, a few evenly spread stitches were timed "
        "and their mean multiplied by m.",
        "",
        _step_table(steps),
        "### Least-squares initialization against AdamW",
        "",
        "Fresh stitches on the real pair's trained parents. AdamW is the default recipe "
        "(`TrainOptions()`: one epoch, batch 32, lr 1e-3, cosine decay); least squares is "
        "`TrainOptions(init=\"lstsq\", samples=1)`, whose MSE is read right after the solve. MSE is "
        "normalized by the target's variance and averaged over stitches; both times include the same MSE "
        "measurements before and after.",
        "",
        markdown_table(["stitches", "AdamW steps", "AdamW s", "least squares s", "least squares / AdamW time "
                        "(target <= 10 %)", "MSE before", "AdamW MSE", "least-squares MSE",
                        "stitches where least squares <= AdamW"], init_rows),
        "### Emitted subnetworks: latency against parent A, onnxruntime against torch eager",
        "",
        "`all-zeros A` selects parent A unchanged; `random` genotypes are drawn as the search draws its first "
        "population. Parent A is the original module from its source; `.pt2` is the emitted "
        "`torch.export` program loaded back; torch eager is the pruned GraphModule; onnxruntime runs the "
        "emitted `.onnx` on the CPU execution provider with its default threads.",
        "",
        _emit_table(emitted),
        "### Build and emit times for the paper's first pair",
        "",
        "One run each (random weights): capture of both parents, candidate listing and exact matching, "
        "`insert_stitches`, pruning one random genotype and emitting it (without the reload check).",
        "",
        markdown_table(["pair", "input", "matches", "capture s", "match s", "build s", "prune s",
                        "stitches in subnetwork", "emit .pt2 s", "emit .onnx s"], build_rows),
    ])
    write_fragment(context, NAME, TITLE, body, {"steps": steps, "init": init, "emitted": emitted, "build": build})
