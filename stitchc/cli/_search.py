"""The ``search`` and ``front`` commands: search a supernetwork's offspring and report fronts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from click.core import ParameterSource

from stitchc.errors import InvalidArgumentError
from stitchc.runtime.search import (
    ALGORITHMS,
    EXECUTOR_KINDS,
    ExecutorOptions,
    HypervolumeReference,
    SearchOptions,
    hypervolume,
    plot_run,
    read_config,
    read_front,
    reevaluate_front,
    resume_search,
    run_search,
)
from stitchc.runtime.search._rundir import FRONT_FILE, TEST_FRONT_FILE

__all__ = ["COMMANDS", "search", "front"]

# Command-line option name -> SearchOptions field, for the options a resume compares.
_SEARCH_FIELDS = {
    "algorithm": "algorithm",
    "budget": "budget",
    "population": "population",
    "seed": "seed",
    "stitch_probability": "stitch_probability",
    "threshold": "threshold_target",
}


def _problem_factory(supernet: str, data: str, device: str, backend: str, split: str = "val"):
    # Imported here so that the CLI loads (and `front` works) without torch.
    from stitchc.runtime.evaluate import EvalOptions, SupernetProblemFactory

    return SupernetProblemFactory(supernet, data=data, eval_options=EvalOptions(device=device, backend=backend, split=split))


class _ProgressBar:
    """A tqdm bar over the budget with skipped, failed, front size and hypervolume beside it."""

    def __init__(self, budget: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=budget, unit="eval", dynamic_ncols=True)

    def __call__(self, progress) -> None:
        self._bar.n = progress.evaluations
        self._bar.set_postfix(
            skipped=progress.skipped, failed=progress.failed, front=progress.front_size, hv=f"{progress.hypervolume:.4f}", refresh=False
        )
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


@click.command("search")
@click.argument("supernet", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", default="digits", show_default=True, help="Data source: digits, mnist:DIR, imagefolder:DIR or npz:FILE.")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)), default="ga", show_default=True, help="Search algorithm.")
@click.option("--budget", type=int, default=1000, show_default=True, help="Evaluations in total, skipped ones included.")
@click.option("--population", "-n", type=int, default=32, show_default=True, help="Population slots (evaluations in flight at most).")
@click.option("--workers", "-k", type=int, default=1, show_default=True, help="Worker processes or Ray actors.")
@click.option("--executor", type=click.Choice(EXECUTOR_KINDS), default="local", show_default=True, help="Where evaluations run.")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True, help="GPUs per Ray actor (0.2 puts five on a GPU).")
@click.option("--time-limit", type=float, default=None, help="Stop proposing after this many seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the algorithm and the workers.")
@click.option("--stitch-probability", type=float, default=None, help="Share of 1s per switch bit when sampling [default: 6.18 / l].")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Accuracy the annealing threshold reaches at half the budget.")
@click.option("--device", default="cpu", show_default=True, help="Torch device of the evaluator, for example cuda.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True, help="Evaluator backend.")
@click.option("--evaluation-timeout", type=float, default=None, help="Seconds after which an evaluation is recorded as failed.")
@click.option("--temp-dir", type=click.Path(file_okay=False), default=None, help="Temporary directory for workers and Ray.")
@click.option("--ray-address", default=None, help="Address of a running Ray cluster [default: start a local one].")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None, help="New run directory.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), default=None, help="Continue the run in this directory.")
@click.pass_context
def search(ctx: click.Context, supernet, data, algorithm, budget, population, workers, executor, gpus_per_worker, time_limit,
           seed, stitch_probability, threshold, device, backend, evaluation_timeout, temp_dir, ray_address, output, resume) -> None:
    """Search the offspring of a supernetwork for accuracy / multiply-add trade-offs."""
    executor_options = ExecutorOptions(
        kind=executor, workers=workers, gpus_per_worker=gpus_per_worker, evaluation_timeout_s=evaluation_timeout,
        temp_dir=temp_dir, ray_address=ray_address,
    )
    if resume is not None:
        _resume(ctx, resume, supernet, data, device, backend, executor_options, time_limit)
        return
    if supernet is None or output is None:
        raise InvalidArgumentError("search needs a supernetwork file and -o RUN_DIR, or --resume RUN_DIR.")

    options = SearchOptions(
        algorithm=algorithm, budget=budget, population=population, seed=seed, stitch_probability=stitch_probability,
        threshold_target=threshold, time_limit_s=time_limit, executor=executor_options,
    )
    factory = _problem_factory(supernet, data, device, backend)
    bar = _ProgressBar(budget)
    try:
        result = run_search(factory, options, output, progress=bar, source={"supernet": str(Path(supernet).resolve()), "data": data})
    finally:
        bar.close()
    _print_summary(result)


def _resume(ctx, run_dir, supernet, data, device, backend, executor_options, time_limit) -> None:
    config = read_config(run_dir)
    source = config.get("source", {})
    supernet = supernet or source.get("supernet")
    if supernet is None:
        raise InvalidArgumentError(f"{run_dir} does not name its supernetwork; pass it: stitchc search NET --resume {run_dir}.")
    if ctx.get_parameter_source("data") != ParameterSource.COMMANDLINE:
        data = source.get("data", data)

    # Options typed on this command line must match the run's; the rest are taken from it.
    stored = SearchOptions.from_json(config["options"])
    given = {
        field: ctx.params[name] for name, field in _SEARCH_FIELDS.items() if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    options = dataclasses.replace(stored, **given, time_limit_s=time_limit, executor=executor_options)
    bar = _ProgressBar(stored.budget)
    try:
        result = resume_search(run_dir, _problem_factory(supernet, data, device, backend), progress=bar, options=options)
    finally:
        bar.close()
    _print_summary(result)


def _print_summary(result) -> None:
    click.echo(
        f"{result.stop_reason}: {result.evaluations} evaluations ({result.skipped} skipped, {result.failed} failed), "
        f"front of {len(result.front)}, hypervolume {result.hypervolume:.4f}; see {result.run_dir}"
    )


@click.command("front")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--test", "on_test", is_flag=True, help="Re-evaluate the front on the test split first (needs the supernetwork).")
@click.option("--device", default="cpu", show_default=True, help="Torch device for --test.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True, help="Backend for --test.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def front(run_dir, on_test, device, backend, as_json) -> None:
    """Re-plot a run's front and print it with its hypervolume."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if on_test:
        source = config.get("source", {})
        if "supernet" not in source:
            raise InvalidArgumentError(f"{run_dir} does not name its supernetwork, so --test cannot rebuild the evaluator.")
        reevaluate_front(run_dir, _problem_factory(source["supernet"], source["data"], device, backend, split="test"))

    reference = HypervolumeReference(**config["hypervolume_reference"])
    fronts = {"validation": read_front(run_dir / FRONT_FILE)}
    if (run_dir / TEST_FRONT_FILE).exists():
        fronts["test"] = read_front(run_dir / TEST_FRONT_FILE)
    plot = plot_run(run_dir)
    report = {
        name: {
            "hypervolume": hypervolume(((r["objectives"]["accuracy"], r["objectives"]["macs"]) for r in points), reference),
            "front": points,
        }
        for name, points in fronts.items()
    }

    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), "plot": str(plot), "hypervolume_reference": config["hypervolume_reference"], **report}, indent=2))
        return
    for name, entry in report.items():
        click.echo(f"{name} front: {len(entry['front'])} networks, hypervolume {entry['hypervolume']:.4f}")
        click.echo(f"  {'accuracy':>9} {'MACs':>14}  genotype")
        for record in entry["front"]:
            click.echo(f"  {record['objectives']['accuracy']:9.4f} {record['objectives']['macs']:14,.0f}  {record['genotype']}")
    click.echo(f"plot: {plot}")


COMMANDS = [search, front]
