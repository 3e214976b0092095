"""Executors: where evaluations run.

An executor evaluates genotypes with problems built from a :data:`ProblemFactory`:
``submit(ticket, genotype)`` queues one evaluation, ``wait(timeout_s)`` returns the results
that finished, in completion order, as ``(ticket, WorkerResult)`` pairs (an empty list
when nothing finished in time), and ``close()`` releases the workers.

* ``local``: in the calling process, one evaluation at a time (each runs inside ``submit``).
* ``process``: a ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes; each
  process builds its problem once, in its initializer.
* ``ray``: ``workers`` Ray actors, each holding its own problem (the supernetwork and the
  evaluation data), with ``gpus_per_worker`` GPUs each (0.2 puts five actors on a GPU).
  Ray is the optional ``ray`` extra and is imported only here.

Every worker seeds ``random``, NumPy's global generator and, when the problem imported it,
torch, with ``seed + worker index``. A failed evaluation comes back as a result with its
error message, never as an exception from ``wait``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass

import numpy as np

from stitchc.errors import InvalidArgumentError, SearchError
from stitchc.runtime.search._problem import Genotype, Problem, ProblemFactory

__all__ = ["ExecutorOptions", "WorkerResult", "Executor", "make_executor", "EXECUTOR_KINDS"]

logger = logging.getLogger(__name__)

EXECUTOR_KINDS = ("local", "process", "ray")


@dataclass(frozen=True)
class ExecutorOptions:
    """Where and how evaluations run. Resuming a run may change any of these."""

    kind: str = "local"
    """``local`` (in-process), ``process`` (local process pool) or ``ray``."""
    workers: int = 1
    """Number of worker processes or Ray actors (ignored by ``local``)."""
    gpus_per_worker: float = 0.0
    """GPUs reserved per Ray actor; fractions share a GPU (Ray only)."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per Ray actor (Ray only)."""
    wait_timeout_s: float = 60.0
    """Longest single wait for a result before the driver checks its limits again, in seconds."""
    evaluation_timeout_s: float | None = None
    """Seconds after which an evaluation still running is recorded as failed; ``None`` waits forever."""
    temp_dir: str | None = None
    """Directory for Ray's session files and the workers' ``TMPDIR``; ``None`` keeps the system default."""
    ray_address: str | None = None
    """Address of a running Ray cluster; ``None`` starts a local one."""

    def __post_init__(self) -> None:
        if self.kind not in EXECUTOR_KINDS:
            raise InvalidArgumentError(f"executor {self.kind!r} is unknown; use one of {', '.join(EXECUTOR_KINDS)}.")
        if self.workers < 1:
            raise InvalidArgumentError(f"workers={self.workers} is invalid; use 1 or more.")
        if self.wait_timeout_s <= 0:
            raise InvalidArgumentError(f"wait_timeout_s={self.wait_timeout_s} is invalid; use a positive number.")


@dataclass(frozen=True)
class WorkerResult:
    """The outcome of one evaluation on a worker (times are ``time.time()`` seconds)."""

    objectives: dict | None
    error: str | None
    started_at: float
    finished_at: float
    worker: str


def _seed_worker(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _evaluate(problem: Problem, genotype: Genotype, worker: str) -> WorkerResult:
    started = time.time()
    try:
        objectives = dict(problem.evaluate(genotype))
        for key in ("accuracy", "macs"):
            if key not in objectives:
                raise KeyError(f"evaluate() returned no {key!r}")
    except Exception as error:  # noqa: BLE001 - any failure of user code is recorded, not raised
        message = f"{type(error).__name__}: {error}"
        logger.warning("evaluation of %s failed on %s: %s", genotype, worker, message)
        logger.debug("%s", traceback.format_exc())
        return WorkerResult(None, message, started, time.time(), worker)
    return WorkerResult(objectives, None, started, time.time(), worker)


class Executor:
    """Base of the executors; see the module docstring for the contract."""

    workers = 1

    def submit(self, ticket: int, genotype: Genotype) -> None:
        raise NotImplementedError

    def wait(self, timeout_s: float) -> list[tuple[int, WorkerResult]]:
        raise NotImplementedError

    def abandon(self, ticket: int) -> None:
        """Stop waiting for ``ticket`` (after its timeout); its late result is dropped."""

    def close(self) -> None:
        """Release the workers."""


class _LocalExecutor(Executor):
    """Evaluates each genotype inside ``submit`` and hands the results out on ``wait``."""

    def __init__(self, problem: Problem, seed: int) -> None:
        _seed_worker(seed)
        self._problem = problem
        self._done: deque[tuple[int, WorkerResult]] = deque()

    def submit(self, ticket: int, genotype: Genotype) -> None:
        self._done.append((ticket, _evaluate(self._problem, genotype, "local")))

    def wait(self, timeout_s: float) -> list[tuple[int, WorkerResult]]:
        results = list(self._done)
        self._done.clear()
        return results


# State of a process-pool worker: its problem and its name, set by the initializer.
_worker_problem: Problem | None = None
_worker_name = ""


def _initialize_process(problem_factory: ProblemFactory, seed: int, counter, temp_dir: str | None) -> None:
    global _worker_problem, _worker_name
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if temp_dir is not None:
        os.environ["TMPDIR"] = temp_dir
        tempfile.tempdir = temp_dir
    _seed_worker(seed + index)
    _worker_name = f"process-{index}"
    _worker_problem = problem_factory()


def _evaluate_in_process(genotype: Genotype) -> WorkerResult:
    return _evaluate(_worker_problem, genotype, _worker_name)


class _ProcessExecutor(Executor):
    """A local process pool; each process builds its problem once."""

    def __init__(self, problem_factory: ProblemFactory, seed: int, options: ExecutorOptions) -> None:
        # Spawn, not fork: a child forked from a process that has already run torch
        # can deadlock on locks held by torch's thread pools (seen as idle workers).
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        self.workers = options.workers
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=options.workers,
            mp_context=context,
            initializer=_initialize_process,
            initargs=(problem_factory, seed, counter, options.temp_dir),
        )
        self._futures: dict[concurrent.futures.Future, int] = {}

    def submit(self, ticket: int, genotype: Genotype) -> None:
        try:
            future = self._pool.submit(_evaluate_in_process, genotype)
        except concurrent.futures.BrokenExecutor as error:
            raise SearchError(f"the process pool is broken ({error}); see the workers' errors above and resume the run.") from error
        self._futures[future] = ticket

    def wait(self, timeout_s: float) -> list[tuple[int, WorkerResult]]:
        if not self._futures:
            return []
        done, _ = concurrent.futures.wait(self._futures, timeout=timeout_s, return_when=concurrent.futures.FIRST_COMPLETED)
        results = []
        for future in sorted(done, key=self._futures.get):
            ticket = self._futures.pop(future)
            try:
                results.append((ticket, future.result()))
            except Exception as error:  # noqa: BLE001 - a dead worker fails its evaluation
                now = time.time()
                results.append((ticket, WorkerResult(None, f"{type(error).__name__}: {error}", now, now, "process")))
        return results

    def abandon(self, ticket: int) -> None:
        # NOTE: a running process cannot be interrupted; it finishes and its result is dropped.
        for future, owner in list(self._futures.items()):
            if owner == ticket:
                future.cancel()
                del self._futures[future]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _RayExecutor(Executor):
    """Ray actors that each hold a problem; genotypes queue until an actor is idle."""

    def __init__(self, problem_factory: ProblemFactory, seed: int, options: ExecutorOptions) -> None:
        try:
            import ray
        except ImportError as error:
            raise SearchError("the ray executor needs Ray; install stitchc[ray] or use --executor process.") from error
        self._ray = ray
        self._timeout_s = options.wait_timeout_s
        if not ray.is_initialized():
            init_options = {"address": options.ray_address, "ignore_reinit_error": True}
            if options.temp_dir is not None:
                init_options["_temp_dir"] = options.temp_dir
            ray.init(**init_options)

        self._actor_class = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker)(_RayWorker)
        self._factory = problem_factory
        self._seed = seed
        self.workers = options.workers
        self._actors = [self._start_actor(index) for index in range(options.workers)]
        self._idle = deque(range(options.workers))
        self._queue: deque[tuple[int, Genotype]] = deque()
        self._running: dict = {}  # object ref -> (ticket, actor index)

    def _start_actor(self, index: int):
        return self._actor_class.remote(self._factory, self._seed + index, f"ray-{index}")

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            actor = self._idle.popleft()
            ticket, genotype = self._queue.popleft()
            self._running[self._actors[actor].evaluate.remote(genotype)] = (ticket, actor)

    def submit(self, ticket: int, genotype: Genotype) -> None:
        self._queue.append((ticket, genotype))
        self._dispatch()

    def wait(self, timeout_s: float) -> list[tuple[int, WorkerResult]]:
        if not self._running:
            return []
        done, _ = self._ray.wait(list(self._running), num_returns=1, timeout=timeout_s)
        results = []
        for ref in done:
            ticket, actor = self._running.pop(ref)
            self._idle.append(actor)
            try:
                results.append((ticket, self._ray.get(ref, timeout=self._timeout_s)))
            except Exception as error:  # noqa: BLE001 - a dead actor fails its evaluation
                now = time.time()
                results.append((ticket, WorkerResult(None, f"{type(error).__name__}: {error}", now, now, f"ray-{actor}")))
        self._dispatch()
        return results

    def abandon(self, ticket: int) -> None:
        for ref, (owner, actor) in list(self._running.items()):
            if owner == ticket:
                # Ray cannot force-cancel an actor task, so the stuck actor is replaced.
                logger.warning("evaluation %d timed out on ray-%d; restarting that actor", ticket, actor)
                del self._running[ref]
                self._ray.kill(self._actors[actor])
                self._actors[actor] = self._start_actor(actor)
                self._idle.append(actor)
        self._queue = deque(item for item in self._queue if item[0] != ticket)
        self._dispatch()

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)


class _RayWorker:
    """The body of a Ray actor: builds its problem once and evaluates genotypes with it."""

    def __init__(self, problem_factory: ProblemFactory, seed: int, name: str) -> None:
        _seed_worker(seed)
        self._name = name
        self._problem = problem_factory()

    def evaluate(self, genotype: Genotype) -> WorkerResult:
        return _evaluate(self._problem, genotype, self._name)


def make_executor(
    problem_factory: ProblemFactory, seed: int, options: ExecutorOptions, local_problem: Problem | None = None
) -> Executor:
    """Start the executor that ``options.kind`` names, with workers seeded from ``seed``.

    ``local_problem``, when given, is the problem the ``local`` executor evaluates with, so
    the calling process does not build a second one.
    """
    if options.kind == "local":
        return _LocalExecutor(local_problem if local_problem is not None else problem_factory(), seed)
    if options.kind == "process":
        return _ProcessExecutor(problem_factory, seed, options)
    return _RayExecutor(problem_factory, seed, options)
