"""``stitchc eval``: metrics and costs of one model or one offspring on a data split."""

from __future__ import annotations

import json

import click

from stitchc.cli._capture import trust_pickle_option

__all__ = ["COMMANDS", "eval_command"]


@click.command("eval")
@click.argument("model")
@click.option("--genotype", default=None, help="With a .stitch file: the offspring to evaluate, e.g. 0101...2.")
@click.option("--data", default="digits", show_default=True, metavar="SPEC",
              help="Data source: digits, mnist:DIR, imagefolder:DIR or npz:FILE.")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True,
              help="Which split of the data to evaluate on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/validation/test split.")
@click.option("--input-shape", default=None, metavar="NxCxHxW",
              help="Input shape for a model source (taken from the file for .stitch and .onnx).")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="Run the network with PyTorch or export it to ONNX and run onnxruntime.")
@click.option("--device", default="cpu", show_default=True, help="Torch device, for example cuda.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@trust_pickle_option
def eval_command(model, genotype, data, split, seed, input_shape, backend, device, batch_size, as_json,
                 trust_pickle) -> None:
    """Evaluate MODEL: accuracy, loss, calibration error (or mIoU), MACs and parameters.

    MODEL is a supernetwork file (with --genotype), an emitted .onnx file, or any model
    source (timm:NAME,..., a .pt2 archive, a stitchc capture) with --input-shape.
    """
    from stitchc.errors import InvalidArgumentError
    from stitchc.runtime.data import DataOptions
    from stitchc.runtime.evaluate import EvalOptions, evaluate_model_file, evaluate_offspring

    data_options = DataOptions(seed=seed)
    eval_options = EvalOptions(batch_size=batch_size, device=device, backend=backend, split=split)
    if model.endswith(".stitch"):
        if genotype is None:
            raise InvalidArgumentError(f"{model} is a supernetwork file; choose an offspring with --genotype 0101...2")
        result = evaluate_offspring(model, genotype, data, data_options, eval_options)
    else:
        if genotype is not None:
            raise InvalidArgumentError("--genotype applies only to a .stitch supernetwork file")
        result = evaluate_model_file(model, data, data_options, eval_options, input_shape=input_shape,
                                     trust_pickle=trust_pickle)
    result = {"model": model, "genotype": genotype, "data": data, "split": split, **result}
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        if value is None:
            continue
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else (
            f"{value:.4f}" if isinstance(value, float) else str(value))
        click.echo(f"{key:<16} {text}")


COMMANDS = [eval_command]
