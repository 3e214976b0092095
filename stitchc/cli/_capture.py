"""``stitchc capture`` and ``stitchc nodes``: trace one model and describe its graph."""

from __future__ import annotations

import json
from collections import Counter

import click

from stitchc.capture import parse_input_shape
from stitchc.ir import META_KEY
from stitchc.sources import capture_source, load_model, parse_source, save_capture

__all__ = ["COMMANDS", "capture_command", "nodes_command", "trust_pickle_option", "input_shape_option"]

trust_pickle_option = click.option(
    "--trust-pickle", is_flag=True,
    help="Allow loading a pickled whole nn.Module. Unpickling runs arbitrary code: only for files you trust.",
)
input_shape_option = click.option(
    "--input-shape", required=True, metavar="NxCxHxW",
    help="Example input shape, batch first, e.g. 1x3x224x224.",
)


@click.command("capture")
@click.argument("model")
@input_shape_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write a capture file (.pt) that later commands accept as MODEL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@trust_pickle_option
def capture_command(model: str, input_shape: str, output: str | None, as_json: bool, trust_pickle: bool) -> None:
    """Trace MODEL into a torch.fx graph, check it against the original and count its costs.

    MODEL is a source such as timm:resnet50, torchvision:resnet18,num_classes=10 or a
    .pt2/.pt file.
    """
    shape = parse_input_shape(input_shape)
    result = capture_source(model, shape, trust_pickle=trust_pickle)
    summary = {"model": model, **result.summary()}
    if output:
        save_capture(output, model, load_model(parse_source(model), trust_pickle=trust_pickle), shape)
        summary["output"] = output
    if as_json:
        click.echo(json.dumps(summary))
        return
    infos = [node.meta[META_KEY] for node in result.gm.graph.nodes]
    click.echo(f"{model} at {input_shape}")
    click.echo(f"  nodes           {summary['nodes']} ("
               + ", ".join(f"{kind} {count}" for kind, count in sorted(summary["nodes_by_kind"].items())) + ")")
    click.echo(f"  layer nodes     {summary['layer_nodes']} in {summary['distinct_shapes']} distinct output shapes")
    shapes = Counter("x".join(map(str, info.shape)) for info in infos if info.is_layer)
    for shape_text, count in shapes.most_common(5):
        click.echo(f"    {shape_text:<22} {count}")
    click.echo(f"  MACs            {summary['macs']:,} ({summary['macs'] / 1e9:.3f} G)")
    click.echo(f"  parameters      {summary['params']:,}")
    click.echo(f"  parity          max abs diff {summary['parity_max_abs_diff']:.3g}")
    click.echo(f"  leaf modules    {', '.join(summary['leaf_modules']) or 'none beyond the defaults'}")
    click.echo(f"  seconds         {summary['seconds']:.2f}")
    if output:
        click.echo(f"  written to      {output}")


@click.command("nodes")
@click.argument("model")
@input_shape_option
@click.option("--all", "show_all", is_flag=True, help="List every node, not only layer nodes.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of node records.")
@trust_pickle_option
def nodes_command(model: str, input_shape: str, show_all: bool, as_json: bool, trust_pickle: bool) -> None:
    """List the layer nodes of MODEL with their output shapes and MACs."""
    result = capture_source(model, parse_input_shape(input_shape), trust_pickle=trust_pickle)
    infos = [node.meta[META_KEY] for node in result.gm.graph.nodes]
    infos = [info for info in infos if show_all or info.is_layer]
    if as_json:
        click.echo(json.dumps([info.to_json() for info in infos]))
        return
    width = max((len(info.name) for info in infos), default=10)
    for info in infos:
        shape = "x".join(map(str, info.shape)) if info.shape else "-"
        click.echo(f"{info.name:<{width}}  {info.target:<24} {shape:<20} {info.macs:>14,}")


COMMANDS = [capture_command, nodes_command]
