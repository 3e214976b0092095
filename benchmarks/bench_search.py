"""Search benchmark: GA, GOMEA, LK-GOMEA, random search and pymoo's NSGA-II at equal budget.

For each algorithm and seed, one run on the synthetic chain problem of
``tests/search_problems.py``; reports the median hypervolume of the validation front, skip
rates, and a two-sided Mann-Whitney U test of the best algorithm (by median) against each
other one, Holm-corrected. ``bench_search_real`` runs the same comparison on a real pair.

    python -m benchmarks search [--fast]
"""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pymoo.optimize import minimize
from scipy.stats import mannwhitneyu

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from benchmarks._common import Context, markdown_table, write_fragment  # noqa: E402
from stitchc.runtime.search import SearchOptions, default_reference, hypervolume, read_archive, run_search  # noqa: E402
from stitchc.runtime.search.pymoo_problem import StitchPymooProblem, nsga2_for  # noqa: E402

__all__ = ["NAME", "TITLE", "ALGORITHMS", "compare", "comparison_table", "holm", "load_factory", "run", "run_one"]

NAME = "search"
TITLE = "Search on a synthetic problem"

ALGORITHMS = ("ga", "gomea", "lk-gomea", "random", "nsga2")


def load_factory(spec: str):
    """Import ``module:attribute`` and call it with no arguments to get a problem factory."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)()


def run_one(factory, algorithm: str, budget: int, population: int, seed: int) -> dict:
    problem = factory()
    reference = default_reference(problem.reference_points())
    started = time.perf_counter()
    if algorithm == "nsga2":
        adapter = StitchPymooProblem(problem)
        result = minimize(adapter, nsga2_for(adapter, population), ("n_evals", budget), seed=seed)
        points = [(1.0 - error, macs) for error, macs in result.F]
        skipped = 1.0 - adapter.evaluations / budget
        return {"hv": hypervolume(points, reference), "skip_inactive": 0.0, "skip_all": skipped, "seconds": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as run_dir:
        options = SearchOptions(algorithm=algorithm, budget=budget, population=population, seed=seed)
        result = run_search(factory, options, run_dir)
        records = read_archive(run_dir)
    inactive = sum(record["skip_reason"] == "inactive" for record in records)
    return {
        "hv": result.hypervolume,
        "skip_inactive": inactive / len(records),
        "skip_all": result.skipped / len(records),
        "seconds": time.perf_counter() - started,
    }


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Return Holm-adjusted p-values."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (name, value) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * value))
        adjusted[name] = running
    return adjusted


def compare(factory, budget: int, population: int, seeds: int, algorithms=ALGORITHMS) -> dict:
    """Run every algorithm for every seed on ``factory`` and test the best median against the others.

    Returns ``runs`` (per algorithm, one dict per seed), ``medians``, ``best`` and ``p_values``
    (two-sided Mann-Whitney U of the best algorithm against each other one, Holm-corrected).
    """
    runs = {name: [run_one(factory, name, budget, population, seed) for seed in range(seeds)] for name in algorithms}
    medians = {name: statistics.median(run["hv"] for run in results) for name, results in runs.items()}
    best = max(medians, key=medians.get)
    raw = {
        name: mannwhitneyu([run["hv"] for run in runs[best]], [run["hv"] for run in results],
                           alternative="two-sided").pvalue
        for name, results in runs.items()
        if name != best
    }
    return {"runs": runs, "medians": medians, "best": best, "p_values": holm(raw)}


def comparison_table(comparison: dict) -> str:
    """Return the markdown table of :func:`compare`'s result."""
    rows = []
    for name, runs in comparison["runs"].items():
        hvs = [run["hv"] for run in runs]
        p_value = "best" if name == comparison["best"] else f"{comparison['p_values'][name]:.3f}"
        rows.append([
            name, f"{comparison['medians'][name]:.4f}", f"{min(hvs):.4f}", f"{max(hvs):.4f}",
            f"{statistics.median(run['skip_inactive'] for run in runs):.1%}",
            f"{statistics.median(run['skip_all'] for run in runs):.1%}",
            f"{statistics.median(run['seconds'] for run in runs):.2f}", p_value,
        ])
    return markdown_table(["algorithm", "median HV", "min HV", "max HV", "skip inactive", "skip all",
                           "seconds / run", "p vs best"], rows)


EXPLANATION = (
    "Hypervolume is of the validation front, normalized to the box from accuracy 0 to 1 and 0 to 1.1 times the "
    "ensemble's MACs. Skip rates are shares of the budget: `inactive` counts offspring whose changes touched only "
    "inactive positions of a parent, `all` adds memoized repeats (for NSGA-II, genotypes whose subnetwork the "
    "adapter had already evaluated). The p-value compares the best median with each other algorithm "
    "(two-sided Mann-Whitney U, Holm-corrected)."
)


def run(context: Context) -> None:
    """Compare the algorithms on the synthetic chain problem and write the ``search`` fragment."""
    budget, population, seeds = (60, 8, 2) if context.fast else (1000, 16, 5)
    comparison = compare(load_factory("search_problems:benchmark_factory"), budget, population, seeds)
    body = (
        f"The synthetic chain problem of `tests/search_problems.py` (no network is evaluated, so this "
        f"measures the algorithms alone): budget {budget} evaluations, population {population}, "
        f"{seeds} seeds per algorithm, in-process executor.\n\n{EXPLANATION}\n\n" + comparison_table(comparison)
    )
    write_fragment(context, NAME, TITLE, body, comparison)


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main([NAME, *sys.argv[1:]]))
