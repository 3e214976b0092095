"""Asynchronous multi-objective search over a supernetwork's genotypes.

Start with :func:`run_search` (and :func:`resume_search`) on a :class:`Problem`; the
algorithms are a GA, GOMEA, LK-GOMEA and random search, the executors run in-process, in a
local process pool or on Ray. :class:`StitchPymooProblem` in ``pymoo_problem`` exposes the
same genotypes to pymoo.
"""

from stitchc.runtime.search._archive import Archive, dominates
from stitchc.runtime.search._driver import ALGORITHMS, SearchOptions, SearchProgress, SearchResult, reevaluate_front, resume_search, run_search
from stitchc.runtime.search._executors import EXECUTOR_KINDS, ExecutorOptions
from stitchc.runtime.search._hypervolume import HypervolumeReference, default_reference, hypervolume
from stitchc.runtime.search._init import biased_population, default_stitch_probability
from stitchc.runtime.search._plots import plot_run
from stitchc.runtime.search._problem import (
    Genotype,
    Problem,
    ProblemFactory,
    changes_only_inactive,
    format_genotype,
    parse_genotype,
    validate_genotype,
)
from stitchc.runtime.search._rundir import front_records, read_archive, read_config, read_front, write_front
from stitchc.runtime.search._solution import Solution

__all__ = [
    "ALGORITHMS",
    "EXECUTOR_KINDS",
    "Archive",
    "ExecutorOptions",
    "Genotype",
    "HypervolumeReference",
    "Problem",
    "ProblemFactory",
    "SearchOptions",
    "SearchProgress",
    "SearchResult",
    "Solution",
    "biased_population",
    "changes_only_inactive",
    "default_reference",
    "default_stitch_probability",
    "dominates",
    "format_genotype",
    "front_records",
    "hypervolume",
    "parse_genotype",
    "plot_run",
    "read_archive",
    "read_config",
    "read_front",
    "reevaluate_front",
    "resume_search",
    "run_search",
    "validate_genotype",
    "write_front",
]
