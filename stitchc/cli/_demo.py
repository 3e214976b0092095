"""``stitchc demo``: the whole pipeline on bundled handwritten digits."""

from __future__ import annotations

import click

__all__ = ["COMMANDS", "demo_command"]


@click.command("demo")
@click.option("-o", "--output", default="demo-output", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the report, pictures, emitted offspring and intermediate files.")
@click.option("--quick", is_flag=True, help="Shrink every step to seconds (same code path), for tests.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data split, training and search.")
@click.option("--algorithm", type=click.Choice(["ga", "gomea", "lk-gomea", "random"]), default="ga",
              show_default=True, help="Search algorithm.")
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="Search evaluations, skipped ones included [default: 1000, quick: 16].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Evaluation worker processes.")
def demo_command(output: str, quick: bool, seed: int, algorithm: str, budget: int | None, workers: int) -> None:
    """Recombine a ResNet and a MobileNetV3 trained on the digits, end to end.

    Trains both parents, matches and stitches them, searches their offspring, emits
    the chosen ones as ONNX and writes OUTPUT/report.md. Files of a finished pair in
    OUTPUT are reused; delete OUTPUT to start from scratch.
    """
    from tqdm import tqdm

    from stitchc.runtime.demo import DemoOptions, format_table, run_demo

    changes = {"seed": seed, "algorithm": algorithm, "workers": workers}
    if budget is not None:
        changes["budget"] = budget
    options = DemoOptions.for_quick(**changes) if quick else DemoOptions(**changes)

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step" if stage != "search" else "eval",
                                     leave=True, dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        report = run_demo(output, options, progress)
    finally:
        for bar in bars.values():
            bar.close()

    click.echo("")
    click.echo(format_table(report.rows))
    click.echo("")
    if report.dominating:
        click.echo("Offspring that dominate a reference network: " + ", ".join(report.dominating))
    else:
        click.echo("No offspring dominates a parent or the ensemble in this run.")
    click.echo(f"Report: {report.report_path}   total {report.seconds['total']:.0f} s")


COMMANDS = [demo_command]
