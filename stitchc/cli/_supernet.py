"""``stitchc build``, ``train``, ``emit``, ``show`` and ``cost``: the supernetwork commands."""

from __future__ import annotations

import json

import click

from stitchc.capture import parse_input_shape
from stitchc.cli._capture import input_shape_option, trust_pickle_option
from stitchc.errors import InvalidArgumentError
from stitchc.sources import capture_source

__all__ = ["COMMANDS", "build_command", "train_command", "emit_command", "show_command", "cost_command"]


@click.command("build")
@click.argument("model_a")
@click.argument("model_b")
@input_shape_option
@click.option("--matching", type=click.Path(exists=True, dir_okay=False),
              help="Matching file from stitchc match; without it the matching is solved here.")
@click.option("--ensemble", type=click.Choice(["logits", "probabilities"]), default="logits", show_default=True,
              help="What the output switch's choice 2 averages.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the stitches' initial weights.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Supernetwork file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@trust_pickle_option
def build_command(model_a, model_b, input_shape, matching, ensemble, seed, output, as_json, trust_pickle) -> None:
    """Join MODEL_A and MODEL_B with stitches and switches into a supernetwork file."""
    from stitchc.passes.build import BuildOptions, insert_stitches
    from stitchc.passes.supernet_file import save_supernet

    shape = parse_input_shape(input_shape)
    gm_a = capture_source(model_a, shape, trust_pickle=trust_pickle).gm
    gm_b = capture_source(model_b, shape, trust_pickle=trust_pickle).gm
    pairs = _load_or_solve_matching(matching, gm_a, gm_b)
    supernet = insert_stitches(gm_a, gm_b, pairs, BuildOptions(ensemble=ensemble, seed=seed))
    save_supernet(output, supernet)
    summary = {"output": output, "matches": len(supernet.matches), "genotype_length": supernet.genotype_length,
               "stitch_params": sum(p.numel() for s in supernet.stitches().values() for p in s.parameters())}
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"supernetwork with {summary['matches']} matches (genotype length {summary['genotype_length']}, "
               f"{summary['stitch_params']:,} stitch parameters) written to {output}")


def _load_or_solve_matching(path, gm_a, gm_b):
    if path:
        from stitchc.passes._matching_file import load_matching

        return list(load_matching(path).pairs)
    from stitchc.passes.candidates import find_candidates, to_digraph
    from stitchc.passes.matching import solve_matching

    candidates = find_candidates(gm_a, gm_b)
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    by_pair = {(candidate.a, candidate.b): candidate for candidate in candidates}
    return [by_pair[tuple(pair)] for pair in result.pairs]


@click.command("train")
@click.argument("supernet_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", default="digits", show_default=True, metavar="SPEC",
              help="Training data: digits, mnist:DIR, imagefolder:DIR or npz:FILE.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Training samples in total; without it, --epochs passes over the training split.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--init", type=click.Choice(["default", "lstsq"]), default="default", show_default=True,
              help="lstsq: initialize each stitch by ridge least squares before training.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffling.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the trained supernetwork (default: overwrite SUPERNET_FILE).")
@click.option("--json", "as_json", is_flag=True, help="Print the training report as JSON.")
def train_command(supernet_file, data, samples, epochs, init, lr, batch_size, seed, output, as_json) -> None:
    """Train every stitch of SUPERNET_FILE at once, with both parents frozen."""
    from tqdm import tqdm

    from stitchc.passes.supernet_file import load_supernet, save_supernet
    from stitchc.runtime.data import load_data
    from stitchc.runtime.train import TrainOptions, train_stitches

    supernet = load_supernet(supernet_file)
    splits = load_data(data, supernet.input_shape)
    options = TrainOptions(lr=lr, batch_size=batch_size, samples=samples, epochs=epochs, seed=seed, init=init)
    bar = tqdm(desc="training stitches", unit="step", disable=as_json)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4g}")

    report = train_stitches(supernet, splits.train, options, progress=progress)
    bar.close()
    save_supernet(output or supernet_file, supernet, extra={"train_report": report.to_json()})
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    before = sum(report.mse_before.values()) / len(report.mse_before)
    after = sum(report.mse_after.values()) / len(report.mse_after)
    click.echo(f"{report.steps} steps on {report.samples} samples in {report.seconds:.1f} s; mean normalized "
               f"MSE {before:.4f} -> {after:.4f}; written to {output or supernet_file}")


@click.command("emit")
@click.argument("supernet_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--genotype", required=True, help="Switch settings, e.g. 0101...2 (length 2*matches+1).")
@click.option("-o", "--output", required=True,
              help="Output: NAME.pt2 (safe default), NAME.pt (pickled), NAME.onnx or a folder DIR/.")
@click.option("--no-verify", is_flag=True, help="Skip loading the file back and comparing outputs (not for .onnx).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
def emit_command(supernet_file, genotype, output, no_verify, as_json) -> None:
    """Write the subnetwork that GENOTYPE selects from SUPERNET_FILE as a standalone model."""
    from stitchc.passes.genotype import active_positions, canonical_genotype, format_genotype
    from stitchc.passes.prune import prune_to_genotype
    from stitchc.passes.supernet_file import load_supernet
    from stitchc.runtime.emit import emit_model

    supernet = load_supernet(supernet_file)
    subnetwork = prune_to_genotype(supernet, genotype)
    result = emit_model(subnetwork, output, verify=not no_verify)
    result["active_switches"] = sorted(active_positions(supernet, genotype))
    result["canonical_genotype"] = format_genotype(canonical_genotype(supernet, genotype))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['format']} written to {result['path']}")
    click.echo(f"  MACs             {result['macs']:,}")
    click.echo(f"  parameters       {result['params']:,}")
    click.echo(f"  active switches  {len(result['active_switches'])} of {supernet.genotype_length}: "
               f"{result['active_switches']}")
    if "max_abs_diff" in result:
        click.echo(f"  verified         max abs diff {result['max_abs_diff']:.3g} at batch sizes "
                   f"{result['batch_sizes']}")


@click.command("show")
@click.argument("supernet_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--genotype", default=None, help="Highlight the subnetwork this genotype selects.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Picture to write: .dot always works, .svg needs Graphviz's dot program.")
def show_command(supernet_file, genotype, output) -> None:
    """Draw SUPERNET_FILE: both parents side by side, stitches and switches marked."""
    from stitchc.passes.supernet_file import load_supernet
    from stitchc.runtime.picture import write_picture

    supernet = load_supernet(supernet_file)
    written = write_picture(supernet, output, genotype)
    click.echo(f"{written} picture written to {output}")


@click.command("cost")
@click.argument("model_file", type=click.Path(exists=True))
@click.option("--input-shape", default=None, metavar="NxCxHxW",
              help="Input shape; defaults to the one stored with an emitted model (batch 1 for other ONNX files).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@trust_pickle_option
def cost_command(model_file, input_shape, as_json, trust_pickle) -> None:
    """Count the MACs and parameters of an emitted .pt2, .pt, folder or any .onnx model."""
    from stitchc.runtime.emit import count_emitted

    shape = parse_input_shape(input_shape) if input_shape else None
    try:
        result = count_emitted(model_file, shape, trust_pickle=trust_pickle)
    except FileNotFoundError as error:
        raise InvalidArgumentError(f"{model_file!r} is missing a file it needs: {error}") from error
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{model_file} ({result['format']}) at input shape {result['input_shape']}")
    click.echo(f"  MACs        {result['macs']:,}")
    click.echo(f"  parameters  {result['params']:,}")


COMMANDS = [build_command, train_command, emit_command, show_command, cost_command]
