"""The asynchronous steady-state driver: ``run_search`` and ``resume_search``.

The driver owns the population slots of an algorithm (see ``_algorithm.py``), the
executor, the archive and the run directory. Each slot has at most one evaluation in
flight: when its result arrives, the driver records it in ``archive.jsonl``, updates the
archive, hands it to the slot, and submits the slot's next proposal. A proposal that
differs from one of its references only at positions inactive there, or whose active
positions and values were evaluated before, gets its result at once without an evaluation.
It is recorded as skipped and still counts against the budget. A proposal whose active
positions and values are being evaluated right now waits for that result and is then
recorded as skipped ("memoized") too.

Resuming replays ``archive.jsonl`` through a fresh algorithm with the same seed. Because
the algorithm draws every random number from one generator and consumes results in the
recorded order, the replay makes exactly the proposals of the original run; the
proposals that were in flight when it stopped are then submitted again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from stitchc.errors import InvalidArgumentError, ResumeMismatchError, SearchError
from stitchc.runtime.search._algorithm import Proposal, SlotAlgorithm, SlotLoop
from stitchc.runtime.search._archive import Archive
from stitchc.runtime.search._executors import Executor, ExecutorOptions, WorkerResult, make_executor
from stitchc.runtime.search._ga import GeneticAlgorithm
from stitchc.runtime.search._gomea import Gomea, LinkageKernelGomea
from stitchc.runtime.search._hypervolume import HypervolumeReference, default_reference, hypervolume
from stitchc.runtime.search._problem import (
    Genotype,
    ProblemFactory,
    active_key,
    changes_only_inactive,
    format_genotype,
    parse_genotype,
)
from stitchc.runtime.search._random import RandomSearch
from stitchc.runtime.search._rundir import (
    ARCHIVE_FILE,
    CONFIG_FILE,
    FRONT_FILE,
    ArchiveWriter,
    front_records,
    read_archive,
    read_config,
    write_config,
    write_front,
)
from stitchc.runtime.search._scalarize import annealed_threshold
from stitchc.runtime.search._solution import Solution

__all__ = [
    "ALGORITHMS",
    "SearchOptions",
    "SearchProgress",
    "SearchResult",
    "run_search",
    "resume_search",
    "reevaluate_front",
]

logger = logging.getLogger(__name__)

ALGORITHMS: dict[str, type[SlotAlgorithm]] = {
    "ga": GeneticAlgorithm,
    "gomea": Gomea,
    "lk-gomea": LinkageKernelGomea,
    "random": RandomSearch,
}

CONFIG_FORMAT = 1

# Options that only concern one session of a run: a resumed run may change them.
SESSION_FIELDS = ("time_limit_s", "executor")


@dataclass(frozen=True)
class SearchOptions:
    """Options of a search run; all but ``time_limit_s`` and ``executor`` must match on resume."""

    algorithm: str = "ga"
    """``ga``, ``gomea``, ``lk-gomea`` or ``random``."""
    budget: int = 1000
    """Evaluations in total, skipped ones included."""
    population: int = 32
    """Population slots ``n``; each has at most one evaluation in flight."""
    seed: int = 0
    """Seed of the algorithm's generator; workers get ``seed + 1 + worker index``."""
    stitch_probability: float | None = None
    """Share of 1s per switch bit when drawing genotypes; ``None`` means ``6.18 / l``."""
    threshold_target: float = 0.5
    """Accuracy the annealing threshold reaches at half the budget; 0 turns it off."""
    min_neighbourhood: int = 5
    """LK-GOMEA's minimum neighbourhood size ``c``."""
    hypervolume_accuracy_min: float = 0.0
    """Accuracy of the hypervolume reference point."""
    hypervolume_macs_max: float | None = None
    """MACs of the hypervolume reference point; ``None`` means 1.1 times the costliest reference network."""
    time_limit_s: float | None = None
    """Stop proposing after this many seconds of this session and finish what is in flight."""
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    """Executor settings: kind, workers, GPUs per worker and timeouts."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidArgumentError(f"algorithm {self.algorithm!r} is unknown; use one of {', '.join(ALGORITHMS)}.")
        if self.budget < 1:
            raise InvalidArgumentError(f"budget={self.budget} is invalid; use 1 or more evaluations.")
        if self.population < 2:
            raise InvalidArgumentError(f"population={self.population} is invalid; use 2 or more slots.")
        if not 0.0 <= self.threshold_target <= 1.0:
            raise InvalidArgumentError(f"threshold_target={self.threshold_target} is outside [0, 1].")
        if self.min_neighbourhood < 1:
            raise InvalidArgumentError(f"min_neighbourhood={self.min_neighbourhood} is invalid; use 1 or more.")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise InvalidArgumentError(f"time_limit_s={self.time_limit_s} is invalid; use a positive number of seconds.")

    def to_json(self) -> dict:
        """Return the options as a JSON-compatible dict (the executor options nested)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SearchOptions:
        """Rebuild options from :meth:`to_json`'s output."""
        values = dict(data)
        values["executor"] = ExecutorOptions(**values.get("executor", {}))
        return cls(**values)


@dataclass(frozen=True)
class SearchProgress:
    """A snapshot passed to the progress callback after every recorded evaluation."""

    evaluations: int
    skipped: int
    failed: int
    budget: int
    front_size: int
    hypervolume: float
    threshold: float


@dataclass(frozen=True)
class SearchResult:
    """What a finished (or stopped) search session leaves.

    ``front`` contains the non-dominated successful records of the whole run (as written to
    ``front.csv``), not only the annealing archive, so points purged by the threshold can
    still appear. ``stop_reason`` is ``"budget"``, ``"time limit"`` or ``"converged"``
    (every slot stopped because its neighbourhood converged).
    """

    run_dir: Path
    evaluations: int
    skipped: int
    failed: int
    front: list[dict]
    hypervolume: float
    stop_reason: str


@dataclass
class _Pending:
    """A proposal waiting for its evaluation, or, with ``leader`` set, for another in-flight proposal's."""

    slot: int
    proposal: Proposal
    active: frozenset[int]
    submitted_at: float | None = None
    leader: int | None = None


class _SearchRun:
    """One session of a run: replays the archive (when resuming), then searches live."""

    def __init__(
        self,
        problem_factory: ProblemFactory,
        options: SearchOptions,
        run_dir: Path,
        reference: HypervolumeReference,
        replay: list[dict],
        progress: Callable[[SearchProgress], None] | None,
    ) -> None:
        self.problem = problem_factory()
        self.factory = problem_factory
        self.options = options
        self.run_dir = run_dir
        self.reference = reference
        self.progress = progress
        self.output_position = self.problem.genotype_length - 1

        self.archive = Archive()
        self.algorithm = _make_algorithm(options, tuple(self.problem.alphabet_sizes), self.archive)
        self.slots: list[SlotLoop | None] = [None] * options.population
        self.initial_waiting = set(range(options.population))

        self.memo: dict[tuple, Solution] = {}
        self.pending: dict[int, _Pending] = {}
        # Memoization key -> ticket of the evaluation in flight for it; later proposals with
        # the same key wait for that result instead of evaluating the subnetwork again.
        self.in_flight_keys: dict[tuple, int] = {}
        self.next_ticket = 0
        self.evaluations = 0
        self.skipped = 0
        self.failed = 0
        self.hypervolume = 0.0

        self.replay = deque(replay)
        self.live = not self.replay
        self.writer: ArchiveWriter | None = None
        self.executor: Executor | None = None
        self.started_at = time.monotonic()
        self.time_over = False

    # The main loop.

    def run(self) -> str:
        self.writer = ArchiveWriter(self.run_dir)
        self.executor = make_executor(self.factory, self.options.seed + 1, self.options.executor, local_problem=self.problem)
        try:
            for slot, genotype in enumerate(self.algorithm.initial_genotypes()):
                self._request(slot, Proposal(genotype))
            while self.pending:
                if not self.live:
                    self._replay_next()
                else:
                    self._wait_live()
        finally:
            self.executor.close()
            self.writer.close()

        if self.evaluations >= self.options.budget:
            return "budget"
        return "time limit" if self.time_over else "converged"

    def _replay_next(self) -> None:
        record = self.replay.popleft()
        ticket = next((t for t, item in self.pending.items() if item.slot == record["slot"] and item.leader is None), None)
        if ticket is None or format_genotype(self.pending[ticket].proposal.genotype) != record["genotype"]:
            raise ResumeMismatchError(
                f"{ARCHIVE_FILE} record {record['index']} (slot {record['slot']}) does not match the replayed "
                "search; the run was made by another stitchc version or the archive was edited, so start a new run."
            )
        item = self.pending[ticket]
        solution = Solution(item.proposal.genotype, record["objectives"], item.active, record["error"])
        self._go_live_if_replayed()
        self._complete(ticket, solution, record=record)

    def _wait_live(self) -> None:
        limit = self.options.time_limit_s
        if limit is not None and time.monotonic() - self.started_at >= limit and not self.time_over:
            logger.info("time limit of %s s reached; finishing %d evaluations in flight", limit, len(self.pending))
            self.time_over = True
        results = self.executor.wait(self.options.executor.wait_timeout_s)
        if not results:
            self._fail_timed_out()
            return
        for ticket, result in results:
            item = self.pending.get(ticket)
            if item is None:
                continue  # abandoned after its timeout
            solution = Solution(item.proposal.genotype, result.objectives, item.active, result.error)
            self._complete(ticket, solution, result=result, submitted_at=item.submitted_at)

    def _fail_timed_out(self) -> None:
        timeout = self.options.executor.evaluation_timeout_s
        if timeout is None:
            return
        now = time.time()
        for ticket, item in list(self.pending.items()):
            if ticket in self.pending and item.submitted_at is not None and now - item.submitted_at > timeout:
                logger.warning("evaluation %d of slot %d timed out after %s s", ticket, item.slot, timeout)
                self.executor.abandon(ticket)
                result = WorkerResult(None, f"timed out after {timeout} s", item.submitted_at, now, "")
                solution = Solution(item.proposal.genotype, None, item.active, result.error)
                self._complete(ticket, solution, result=result, submitted_at=item.submitted_at)

    def _complete(self, ticket: int, solution: Solution, **details) -> None:
        """Integrate the result of ``ticket``, then resolve the proposals that waited for it."""
        item = self.pending.pop(ticket)
        key = active_key(item.proposal.genotype, item.active)
        if self.in_flight_keys.get(key) == ticket:
            del self.in_flight_keys[key]
        followers = sorted(t for t, other in self.pending.items() if other.leader == ticket)
        self._integrate(item.slot, solution, **details)

        for follower in followers:
            waiting = self.pending.pop(follower)
            if solution.failed:
                # No result to share: evaluate it after all.
                self._request(waiting.slot, waiting.proposal)
                continue
            shared = Solution(waiting.proposal.genotype, solution.objectives, waiting.active)
            self._integrate(waiting.slot, shared, skip_reason="memoized")

    # Proposals, skipping and submission.

    def _budget_left(self) -> bool:
        return not self.time_over and self.evaluations + len(self.pending) < self.options.budget

    def _request(self, slot: int, proposal: Proposal | None) -> None:
        """Resolve or submit ``proposal`` and, while proposals resolve at once, the slot's next ones."""
        while proposal is not None:
            if not self._budget_left():
                return
            active = frozenset(self.problem.active_positions(proposal.genotype)) | {self.output_position}
            resolved = self._resolve_without_evaluation(proposal, active)
            if resolved is None:
                self._submit(slot, proposal, active)
                return
            solution, reason = resolved
            proposal = self._integrate(slot, solution, skip_reason=reason, continue_slot=False)

    def _resolve_without_evaluation(self, proposal: Proposal, active: frozenset[int]):
        for reference in proposal.references:
            if not reference.failed and changes_only_inactive(reference.genotype, reference.active, proposal.genotype):
                return Solution(proposal.genotype, reference.objectives, reference.active), "inactive"
        known = self.memo.get(active_key(proposal.genotype, active))
        if known is not None:
            return Solution(proposal.genotype, known.objectives, active), "memoized"
        return None

    def _submit(self, slot: int, proposal: Proposal, active: frozenset[int]) -> None:
        ticket = self.next_ticket
        self.next_ticket += 1
        key = active_key(proposal.genotype, active)
        leader = self.in_flight_keys.get(key)
        self.pending[ticket] = _Pending(slot, proposal, active, leader=leader)
        if leader is not None:
            return
        self.in_flight_keys[key] = ticket
        if self.live:
            self.pending[ticket].submitted_at = time.time()
            self.executor.submit(ticket, proposal.genotype)

    def _go_live_if_replayed(self) -> None:
        if self.live or self.replay:
            return
        self.live = True
        logger.info("replayed the archive; resubmitting %d evaluations that were in flight", len(self.pending))
        for ticket in sorted(self.pending):
            if self.pending[ticket].leader is not None:
                continue
            self.pending[ticket].submitted_at = time.time()
            self.executor.submit(ticket, self.pending[ticket].proposal.genotype)

    # Recording and integrating results.

    def _integrate(
        self,
        slot: int,
        solution: Solution,
        skip_reason: str | None = None,
        record: dict | None = None,
        result: WorkerResult | None = None,
        submitted_at: float | None = None,
        continue_slot: bool = True,
    ) -> Proposal | None:
        """Record ``solution``, update the archive, and hand it to its slot.

        Returns the slot's next proposal when ``continue_slot`` is false (the caller
        resolves it); otherwise requests it here and returns ``None``.
        """
        self._record(slot, solution, skip_reason, record, result, submitted_at)

        if slot in self.initial_waiting:
            self.algorithm.set_initial(slot, solution)
            self.initial_waiting.discard(slot)
            if not self.initial_waiting:
                self._start_slots()
            return None

        try:
            proposal = self.slots[slot].send(solution)
        except StopIteration:
            self.slots[slot] = None
            logger.debug("slot %d stopped: its neighbourhood converged", slot)
            return None
        if continue_slot:
            self._request(slot, proposal)
            return None
        return proposal

    def _start_slots(self) -> None:
        for slot in range(self.options.population):
            self.slots[slot] = self.algorithm.slot_loop(slot)
        for slot in range(self.options.population):
            try:
                proposal = next(self.slots[slot])
            except StopIteration:
                self.slots[slot] = None
                continue
            self._request(slot, proposal)

    def _record(self, slot, solution, skip_reason, record, result, submitted_at) -> None:
        index = self.evaluations
        if record is None and not self.live:
            # A skip during the replay: the archive contains it as the next record.
            record = self.replay.popleft()
            if record["slot"] != slot or record["genotype"] != format_genotype(solution.genotype) or not record["skipped"]:
                raise ResumeMismatchError(
                    f"{ARCHIVE_FILE} record {record['index']} does not match the replayed search (expected a skip "
                    f"of slot {slot}); start a new run."
                )
            self._go_live_if_replayed()
        elif record is None:
            record = self._make_record(index, slot, solution, skip_reason, result, submitted_at)
            self.writer.append(record)

        self.evaluations += 1
        self.skipped += bool(record["skipped"])
        self.failed += solution.failed and not record["skipped"]
        if not solution.failed and not record["skipped"]:
            self.memo[active_key(solution.genotype, solution.active)] = solution

        threshold = annealed_threshold(self.evaluations, self.options.budget, self.options.threshold_target)
        changed = self.archive.set_threshold(threshold) > 0
        changed = self.archive.add(solution) or changed
        if changed:
            self.hypervolume = hypervolume(((m.accuracy, m.macs) for m in self.archive), self.reference)
        if self.progress is not None:
            self.progress(
                SearchProgress(
                    self.evaluations, self.skipped, self.failed, self.options.budget, len(self.archive), self.hypervolume, threshold
                )
            )

    def _make_record(self, index, slot, solution, skip_reason, result, submitted_at) -> dict:
        now = time.time()
        started = result.started_at if result is not None else now
        finished = result.finished_at if result is not None else now
        return {
            "index": index,
            "slot": slot,
            "genotype": format_genotype(solution.genotype),
            "objectives": solution.objectives,
            "active": sorted(solution.active),
            "skipped": skip_reason is not None,
            "skip_reason": skip_reason,
            "error": solution.error,
            "submitted_at": submitted_at if submitted_at is not None else now,
            "started_at": started,
            "finished_at": finished,
            "duration_s": finished - started,
            "worker": result.worker if result is not None else None,
        }


def _make_algorithm(options: SearchOptions, alphabet_sizes: tuple[int, ...], archive: Archive) -> SlotAlgorithm:
    arguments = dict(
        alphabet_sizes=alphabet_sizes,
        population_size=options.population,
        rng=np.random.default_rng(options.seed),
        archive=archive,
        threshold=lambda: archive.threshold,
        stitch_probability=options.stitch_probability,
    )
    if options.algorithm == "lk-gomea":
        return LinkageKernelGomea(**arguments, min_neighbourhood=options.min_neighbourhood)
    return ALGORITHMS[options.algorithm](**arguments)


def _check_layout(problem) -> None:
    if problem.genotype_length < 3 or len(problem.alphabet_sizes) != problem.genotype_length:
        raise SearchError(
            f"the problem has genotype_length={problem.genotype_length} and {len(problem.alphabet_sizes)} "
            "alphabet sizes; the search needs them equal and at least 3 (one match and the output switch)."
        )


def _finish(run: _SearchRun, stop_reason: str) -> SearchResult:
    records = read_archive(run.run_dir)
    front = front_records(records)
    write_front(run.run_dir / FRONT_FILE, front)
    front_hypervolume = hypervolume(
        ((r["objectives"]["accuracy"], r["objectives"]["macs"]) for r in front), run.reference
    )
    try:
        from stitchc.runtime.search._plots import plot_run

        plot_run(run.run_dir)
    except Exception as error:  # noqa: BLE001 - a failed plot must not lose a finished run
        logger.warning("could not draw the front of %s: %s", run.run_dir, error)
    logger.info(
        "search stopped (%s) after %d evaluations, %d skipped, %d failed; front of %d, hypervolume %.4f",
        stop_reason, run.evaluations, run.skipped, run.failed, len(front), front_hypervolume,
    )
    return SearchResult(run.run_dir, run.evaluations, run.skipped, run.failed, front, front_hypervolume, stop_reason)


def _version() -> str:
    try:
        return metadata.version("stitchc")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_search(
    problem_factory: ProblemFactory,
    options: SearchOptions,
    run_dir: str | Path,
    progress: Callable[[SearchProgress], None] | None = None,
    source: dict | None = None,
) -> SearchResult:
    """Search the problem's genotypes and write the run to ``run_dir``.

    Args:
        problem_factory: picklable zero-argument callable that builds the :class:`Problem`;
            called once here and once per worker.
        options: the algorithm, budget, population, seed and executor.
        run_dir: a new or empty directory; it receives ``config.json``, ``archive.jsonl``,
            ``front.csv`` and ``front.png``.
        progress: called with a :class:`SearchProgress` after every recorded evaluation.
        source: JSON-compatible description of where the problem came from (the CLI stores
            the supernetwork path and data source), kept in ``config.json``.

    Raises:
        SearchError: ``run_dir`` already contains a run, or the problem's layout is unusable.
    """
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).exists() or (run_dir / ARCHIVE_FILE).exists():
        raise SearchError(f"{run_dir} already contains a run; continue it with --resume {run_dir} or choose another -o.")
    run_dir.mkdir(parents=True, exist_ok=True)

    problem = problem_factory()
    _check_layout(problem)
    reference_points = problem.reference_points()
    if options.hypervolume_macs_max is None:
        reference = default_reference(reference_points, options.hypervolume_accuracy_min)
    else:
        reference = HypervolumeReference(options.hypervolume_accuracy_min, options.hypervolume_macs_max)
    config = {
        "format": CONFIG_FORMAT,
        "stitchc_version": _version(),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "identity": problem.identity,
        "layout": {"genotype_length": problem.genotype_length, "alphabet_sizes": list(problem.alphabet_sizes)},
        "options": options.to_json(),
        "seeds": {"algorithm": options.seed, "first_worker": options.seed + 1},
        "hypervolume_reference": dataclasses.asdict(reference),
        "reference_points": reference_points,
        "source": source or {},
    }
    write_config(run_dir, config)
    logger.info("starting a %s search of %d evaluations in %s", options.algorithm, options.budget, run_dir)

    run = _SearchRun(problem_factory, options, run_dir, reference, [], progress)
    return _finish(run, run.run())


def _option_differences(stored: SearchOptions, given: SearchOptions) -> list[str]:
    differences = []
    for option in dataclasses.fields(SearchOptions):
        if option.name in SESSION_FIELDS:
            continue
        old, new = getattr(stored, option.name), getattr(given, option.name)
        if old != new:
            differences.append(f"{option.name} was {old!r}, now {new!r}")
    return differences


def resume_search(
    run_dir: str | Path,
    problem_factory: ProblemFactory,
    progress: Callable[[SearchProgress], None] | None = None,
    options: SearchOptions | None = None,
) -> SearchResult:
    """Continue a run from its ``archive.jsonl``; only evaluations that were in flight are redone.

    Args:
        run_dir: a directory written by :func:`run_search`.
        problem_factory: builds the same problem the run was made with.
        progress: as for :func:`run_search`.
        options: when given, must equal the stored options except ``time_limit_s`` and
            ``executor``, which it replaces for this session; ``None`` keeps the stored ones.

    Raises:
        SearchError: ``run_dir`` holds no readable run.
        ResumeMismatchError: the problem's identity or layout, or the options, differ from
            the stored ones (the message names each difference), or the archive does not
            replay.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    stored = SearchOptions.from_json(config["options"])
    problem = problem_factory()

    differences = []
    if problem.identity != config["identity"]:
        differences.append(f"supernetwork identity was {config['identity']!r}, now {problem.identity!r}")
    layout = {"genotype_length": problem.genotype_length, "alphabet_sizes": list(problem.alphabet_sizes)}
    if layout != config["layout"]:
        differences.append(f"genotype layout was {config['layout']}, now {layout}")
    if options is not None:
        differences += _option_differences(stored, options)
    if differences:
        raise ResumeMismatchError(
            f"cannot resume {run_dir}: {'; '.join(differences)}; resume with the original supernetwork and options."
        )

    session = stored if options is None else options
    records = read_archive(run_dir, repair=True)
    for record in records:
        parse_genotype(record["genotype"])
    reference = HypervolumeReference(**config["hypervolume_reference"])
    logger.info("resuming %s: replaying %d recorded evaluations", run_dir, len(records))
    run = _SearchRun(problem_factory, session, run_dir, reference, records, progress)
    return _finish(run, run.run())


def reevaluate_front(run_dir: str | Path, problem_factory: ProblemFactory) -> list[dict]:
    """Evaluate the run's validation front with another problem (the test split) and write ``front_test.csv``.

    The re-evaluated points are filtered to the non-dominated ones again, and the test
    problem's reference points are stored in ``config.json`` as ``test_reference_points``.
    Failed re-evaluations are logged and left out. Returns the test front records.
    """
    from stitchc.runtime.search._rundir import TEST_FRONT_FILE, read_front

    run_dir = Path(run_dir)
    problem = problem_factory()
    records = []
    for record in read_front(run_dir / FRONT_FILE):
        genotype = parse_genotype(record["genotype"])
        try:
            objectives = dict(problem.evaluate(genotype))
        except Exception as error:  # noqa: BLE001 - one failed re-evaluation must not lose the rest
            logger.warning("test evaluation of %s failed: %s", record["genotype"], error)
            continue
        records.append({"index": record["index"], "genotype": record["genotype"], "objectives": objectives})
    front = front_records(records)
    write_front(run_dir / TEST_FRONT_FILE, front)
    config = read_config(run_dir)
    config["test_reference_points"] = problem.reference_points()
    write_config(run_dir, config)
    return front
