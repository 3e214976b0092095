"""``stitchc match``: capture two models, list their candidates and solve the matching."""

from __future__ import annotations

import json
import time
from collections import Counter

import click

from stitchc.capture import parse_input_shape
from stitchc.cli._capture import input_shape_option, trust_pickle_option
from stitchc.ir import has_node_info, node_info
from stitchc.passes._matching_file import matching_record, save_matching
from stitchc.passes.candidates import CandidateOptions, find_candidates, layer_node_names, to_digraph
from stitchc.passes.matching import MatchingOptions, solve_matching
from stitchc.sources import capture_source

__all__ = ["COMMANDS", "match_command", "granularity_text"]


def granularity_text(layers: str) -> str:
    """Describe what counted as a layer node, for the matching file."""
    which = "every tensor-valued node" if layers == "all" else "calls of leaf modules with parameters"
    return (
        f"layers={layers}: {which} of the stitchc torch.fx capture (leaf-module calls, with timm's "
        "fused normalization + activation layers kept whole, and tensor ops); the input, the output "
        "and the node feeding the output are excluded"
    )


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _similarity_weights(gm_a, gm_b, candidates, data: str, samples: int, input_shape):
    # Imported here so that `stitchc match` without --objective similarity loads no data code.
    from stitchc.runtime.data import DataOptions, load_data
    from stitchc.runtime.similarity import similarity_weights

    splits = load_data(data, input_shape, DataOptions(max_train=samples))
    inputs = splits.train.tensors[0][:samples]
    return similarity_weights(gm_a, gm_b, candidates, inputs)


@click.command("match")
@click.argument("model_a")
@click.argument("model_b")
@input_shape_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the matching file (JSON) here.")
@click.option("--solver", type=click.Choice(["auto", "cpsat", "bnb"]), default="auto", show_default=True,
              help="cpsat: OR-Tools CP-SAT after the exact lattice search; bnb: the lattice branch and bound alone; "
                   "auto: cpsat when OR-Tools is installed.")
@click.option("--time-limit", type=float, default=None, metavar="SECONDS",
              help="Stop the solver after this many seconds and report the best matching as feasible.")
@click.option("--objective", type=click.Choice(["count", "similarity"]), default="count", show_default=True,
              help="count: maximize the number of matches; similarity: maximize the summed linear CKA "
                   "of matched layers on --data.")
@click.option("--layers", type=click.Choice(["all", "parameterized"]), default="all", show_default=True,
              help="Which nodes may be matched: every tensor-valued node, or leaf modules with parameters.")
@click.option("--data", default="digits", show_default=True, metavar="SPEC",
              help="Inputs for --objective similarity: digits, mnist:DIR, imagefolder:DIR or npz:FILE.")
@click.option("--samples", type=click.IntRange(min=2), default=64, show_default=True,
              help="Number of inputs for --objective similarity.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="CP-SAT worker threads (0: one per CPU core).")
@click.option("--write-model", type=click.Path(dir_okay=False), default=None,
              help="Write each CP-SAT model built to this path (.pbtxt for text), for debugging.")
@click.option("--json", "as_json", is_flag=True, help="Print the matching file's JSON instead of the summary.")
@trust_pickle_option
def match_command(model_a, model_b, input_shape, output, solver, time_limit, objective, layers, data,
                  samples, workers, write_model, as_json, trust_pickle) -> None:
    """Find the layers where MODEL_A and MODEL_B can be stitched: a maximum acyclic matching.

    MODEL_A and MODEL_B are model sources such as timm:resnet50 or torchvision:resnet18.
    """
    shape = parse_input_shape(input_shape)
    started = time.monotonic()
    captured_a = capture_source(model_a, shape, trust_pickle=trust_pickle)
    captured_b = capture_source(model_b, shape, trust_pickle=trust_pickle)
    capture_seconds = time.monotonic() - started

    candidate_options = CandidateOptions(layers=layers)
    candidates = find_candidates(captured_a.gm, captured_b.gm, candidate_options)
    weights = None
    if objective == "similarity" and candidates:
        weights = _similarity_weights(captured_a.gm, captured_b.gm, candidates, data, samples, shape)

    options = MatchingOptions(solver=solver, time_limit=time_limit, workers=workers, model_path=write_model)
    result = solve_matching(to_digraph(captured_a.gm), to_digraph(captured_b.gm), candidates,
                            weights=weights, options=options)
    record = matching_record(result, candidates, model_a=model_a, model_b=model_b, input_shape=shape,
                             granularity=granularity_text(layers), objective_kind=objective)
    total_seconds = time.monotonic() - started
    if output:
        save_matching(output, record)

    if as_json:
        click.echo(json.dumps(record.to_json()))
        return
    _print_summary(captured_a.gm, captured_b.gm, candidate_options, record, result, capture_seconds, total_seconds)
    if output:
        click.echo(f"written to {output}")


def _group_key(shape) -> str:
    """Return the shape with the feature axis shown as ``*``: the stitch kinds ignore it."""
    dims = [str(d) for d in shape]
    feature_axis = {2: 1, 3: 2, 4: 1}.get(len(dims))
    if feature_axis is not None:
        dims[feature_axis] = "*"
    return "x".join(dims)


def _print_summary(gm_a, gm_b, candidate_options, record, result, capture_seconds, total_seconds) -> None:
    nodes_a = Counter(_group_key(s) for s in _layer_shapes(gm_a, candidate_options))
    nodes_b = Counter(_group_key(s) for s in _layer_shapes(gm_b, candidate_options))
    matched = Counter(_group_key(pair.shape_a) for pair in record.pairs)
    click.echo(f"{record.model_a} x {record.model_b} at {_shape_text(record.input_shape)}")
    click.echo(f"  {'output shape':<22} {'nodes A':>8} {'nodes B':>8} {'matched':>8}")
    for key in sorted(set(nodes_a) | set(nodes_b), key=lambda k: (-k.count("x"), [-int(d) for d in k.split("x")[2:] if d != "*"], k)):
        click.echo(f"  {key:<22} {nodes_a[key]:>8} {nodes_b[key]:>8} {matched[key]:>8}")
    click.echo(f"  candidates       {record.candidates}")
    click.echo(f"  matches          {record.num_matches} (genotype length {record.genotype_length})")
    click.echo(f"  objective        {record.objective} ({record.objective_kind}), upper bound {record.upper_bound}")
    click.echo(f"  status           {record.status} ({record.solver}, gap {record.gap:.3%})")
    click.echo(f"  seconds          {result.seconds:.2f} matching, {total_seconds:.2f} in all "
               f"({capture_seconds:.2f} capture)")
    if result.message:
        click.echo(f"  note             {result.message}")


def _layer_shapes(gm, candidate_options) -> list[tuple[int, ...]]:
    names = set(layer_node_names(gm, candidate_options))
    infos = [node_info(n) for n in gm.graph.nodes if has_node_info(n)]
    return [info.shape for info in infos if info.name in names]


COMMANDS = [match_command]
