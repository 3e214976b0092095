"""Search on a real stitched pair: hypervolume at equal budget, skip rates, executor utilization.

GA, GOMEA, LK-GOMEA, random search and pymoo's NSGA-II (through the pymoo adapter) each
run for several seeds on the real pair's supernetwork, evaluated on its validation split
with caching and memoization. Then one GA run with a process pool of k workers measures
the executor utilization: the workers' busy time over k times the run's span.

    python -m benchmarks search_real [--fast]
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import statistics
import tempfile
from pathlib import Path

from benchmarks._common import Context, markdown_table, write_fragment
from benchmarks._pair import real_pair
from benchmarks.bench_search import EXPLANATION, compare, comparison_table
from stitchc.runtime.evaluate import EvalOptions, SupernetProblemFactory
from stitchc.runtime.search import ExecutorOptions, SearchOptions, read_archive, run_search

__all__ = ["NAME", "TITLE", "measure_utilization", "measure_utilization_guarded", "run"]

logger = logging.getLogger(__name__)

NAME = "search_real"
TITLE = "Search on a real stitched pair"


def measure_utilization(factory, workers: int, budget: int, population: int) -> dict:
    """Run one GA search on a process pool and return the workers' busy share of the run.

    Busy time is the sum of the evaluated records' ``finished_at - started_at``; the span is
    from the first record's submission to the last record's finish. Skipped proposals are
    never sent to a worker, so they count in neither.
    """
    options = SearchOptions(algorithm="ga", budget=budget, population=population, seed=0,
                            executor=ExecutorOptions(kind="process", workers=workers))
    with tempfile.TemporaryDirectory() as run_dir:
        run_search(factory, options, run_dir)
        records = read_archive(run_dir)
    evaluated = [record for record in records if not record["skipped"]]
    busy = sum(record["finished_at"] - record["started_at"] for record in evaluated)
    span = max(record["finished_at"] for record in evaluated) - min(record["submitted_at"] for record in evaluated)
    per_worker = {}
    for record in evaluated:
        per_worker[str(record["worker"])] = per_worker.get(str(record["worker"]), 0) + 1
    return {"workers": workers, "budget": budget, "evaluated": len(evaluated), "busy_s": busy, "span_s": span,
            "utilization": busy / (workers * span), "evaluations_per_worker": per_worker}


def _utilization_worker(factory, workers: int, budget: int, population: int, queue) -> None:
    queue.put(measure_utilization(factory, workers, budget, population))


def _child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def measure_utilization_guarded(factory, workers: int, budget: int, population: int, timeout_s: float) -> dict:
    """Run :func:`measure_utilization` in a spawned process and give up after ``timeout_s`` seconds.

    Returns its result, or ``{"error": ...}`` when it did not finish in time; the process and
    its pool workers are then killed.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_utilization_worker, args=(factory, workers, budget, population, queue))
    process.start()
    try:
        return queue.get(timeout=timeout_s)
    except queue_module.Empty:
        pool_workers = _child_pids(process.pid)
        for pid in pool_workers:
            os.kill(pid, signal.SIGKILL)
        process.kill()
        logger.error("the utilization run did not finish in %.0f s; killed it and its %d pool workers",
                     timeout_s, len(pool_workers))
        return {"error": f"the GA run on a process pool of {workers} workers did not finish in {timeout_s:.0f} s"}
    finally:
        process.join(timeout=10)


def run(context: Context) -> None:
    """Compare the algorithms on the real pair, measure utilization, and write the ``search_real`` fragment."""
    pair = real_pair(context)
    # NOTE: the full run's budget and validation cap are small so that it fits in a few minutes on an
    # idle 2-core machine. Raise both on a machine of your own.
    data_options = dataclasses.replace(pair.data_options, max_val=128)
    factory = SupernetProblemFactory(str(pair.supernet_path), pair.data, data_options, EvalOptions())
    budget, population, seeds = (8, 4, 2) if context.fast else (100, 8, 5)
    comparison = compare(factory, budget, population, seeds)
    workers = 2
    utilization = measure_utilization_guarded(factory, workers, 8 if context.fast else 16, 4, timeout_s=300)
    if "error" in utilization:
        utilization_text = (
            f"Not measured: {utilization['error']}. In an earlier run on this machine the pool's workers sat in "
            "a futex wait with no CPU time used, most likely on a lock inherited through fork from the driver's "
            "threads.")
    else:
        utilization_row = [[utilization["workers"], utilization["budget"], utilization["evaluated"],
                            f"{utilization['busy_s']:.1f}", f"{utilization['span_s']:.1f}",
                            f"{utilization['utilization']:.1%}",
                            ", ".join(f"{worker}: {count}"
                                      for worker, count in sorted(utilization["evaluations_per_worker"].items()))]]
        utilization_text = markdown_table(["workers", "budget", "evaluated", "busy s", "span s", "utilization",
                                           "evaluations per worker"], utilization_row)
    skip_rows = [[name, f"{statistics.median(run['skip_inactive'] for run in runs):.1%}",
                  f"{statistics.median(run['skip_all'] for run in runs):.1%}"]
                 for name, runs in comparison["runs"].items()]
    body = "\n".join([
        f"Real pair: {pair.description}. Objectives: validation accuracy and MACs; budget {budget} evaluations "
        f"(skipped ones included), population {population}, {seeds} seeds per algorithm, in-process executor, "
        f"torch backend with caching and memoization, validation split capped at {data_options.max_val} samples.",
        "",
        EXPLANATION,
        "",
        comparison_table(comparison),
        "### Skip rates",
        "",
        "Guijt et al., \"Stitching for Neuroevolution\", report skip rates of 45 % for GOMEA and 39 % for LK-GOMEA "
        "on their pairs, and 0 % for the GA there. Medians over the seeds above:",
        "",
        markdown_table(["algorithm", "skipped: inactive changes only", "skipped: all (inactive or memoized)"],
                       skip_rows),
        "### Executor utilization",
        "",
        f"One GA run (seed 0) on a local process pool of {workers} workers, on this machine's "
        f"{os.cpu_count()} cores, which other jobs share. Utilization is the workers' busy time "
        "over workers times the span from the first submission to the last result (target >= 90 %).",
        "",
        utilization_text,
    ])
    write_fragment(context, NAME, TITLE, body, {"comparison": comparison, "utilization": utilization})
