"""End-to-end tests of the search driver on the synthetic chain problem."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from search_problems import ChainProblem, ChainProblemFactory
from stitchc.errors import ResumeMismatchError, SearchError
from stitchc.runtime.search import (
    ALGORITHMS,
    ExecutorOptions,
    Problem,
    SearchOptions,
    read_archive,
    read_config,
    resume_search,
    run_search,
)
from stitchc.runtime.search._driver import _SearchRun
from stitchc.runtime.search._algorithm import Proposal

TESTS_DIR = Path(__file__).parent
REPO_DIR = TESTS_DIR.parent


def signature(records):
    """The parts of archive records that do not depend on timing."""
    return [(r["index"], r["slot"], r["genotype"], r["objectives"], r["skipped"], r["skip_reason"], r["error"]) for r in records]


def test_chain_problem_follows_protocol():
    problem = ChainProblem(3, seed=0)
    assert isinstance(problem, Problem)
    # Output A with no stitches reads only A's switches a_2, a_1, a_0 (positions 4, 2, 0).
    assert problem.active_positions((0, 0, 0, 0, 0, 0, 0)) == frozenset({0, 2, 4, 6})
    # a_2 = 1 moves the path to B, which then reads b_1 and b_0.
    assert problem.active_positions((0, 0, 0, 0, 1, 0, 0)) == frozenset({1, 3, 4, 6})


def test_skip_inactive_change_not_evaluated(tmp_path):
    options = SearchOptions(algorithm="random", budget=10, population=2, seed=0)
    run = _SearchRun(ChainProblemFactory(matches=3), options, tmp_path, None, [], None)
    parent_genotype = (0, 0, 0, 0, 0, 0, 0)
    parent_active = run.problem.active_positions(parent_genotype)
    parent = run._resolve_without_evaluation(Proposal(parent_genotype), parent_active)
    assert parent is None  # nothing known yet: it must be evaluated

    from stitchc.runtime.search import Solution

    reference = Solution(parent_genotype, {"accuracy": 0.9, "macs": 10}, parent_active)
    inactive_change = (0, 1, 0, 1, 0, 1, 0)  # b_0, b_1, b_2 are inactive on A's path
    resolved = run._resolve_without_evaluation(Proposal(inactive_change, (reference,)), parent_active)
    assert resolved is not None
    assert resolved[1] == "inactive"
    assert resolved[0].objectives == {"accuracy": 0.9, "macs": 10}

    output_change = (0, 0, 0, 0, 0, 0, 1)
    active = run.problem.active_positions(output_change)
    assert run._resolve_without_evaluation(Proposal(output_change, (reference,)), active) is None


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_search_runs_to_budget(tmp_path, algorithm):
    result = run_search(ChainProblemFactory(matches=6), SearchOptions(algorithm=algorithm, budget=120, population=8, seed=2), tmp_path)
    records = read_archive(tmp_path)
    assert result.stop_reason == "budget"
    assert result.evaluations == 120
    assert len(records) == 120
    assert [record["index"] for record in records] == list(range(120))
    assert result.skipped == sum(record["skipped"] for record in records)
    assert 0.0 < result.hypervolume <= 1.0
    assert (tmp_path / "front.csv").exists()
    assert (tmp_path / "front.png").stat().st_size > 0
    # Every evaluated record's objectives equal a fresh evaluation of its genotype.
    problem = ChainProblem(6, seed=0)
    for record in records[:30]:
        genotype = tuple(int(c) for c in record["genotype"])
        assert problem.evaluate(genotype) == record["objectives"]
        assert record["active"] == sorted(problem.active_positions(genotype))


def test_gomea_skips_evaluations(tmp_path):
    result = run_search(ChainProblemFactory(matches=10), SearchOptions(algorithm="gomea", budget=300, population=10, seed=0), tmp_path)
    reasons = [record["skip_reason"] for record in read_archive(tmp_path)]
    assert reasons.count("inactive") > 0
    assert result.skipped == reasons.count("inactive") + reasons.count("memoized")


def test_same_seed_same_archive(tmp_path):
    options = SearchOptions(algorithm="lk-gomea", budget=150, population=8, seed=7)
    run_search(ChainProblemFactory(matches=6), options, tmp_path / "first")
    run_search(ChainProblemFactory(matches=6), options, tmp_path / "second")
    assert signature(read_archive(tmp_path / "first")) == signature(read_archive(tmp_path / "second"))


def test_other_seed_other_archive(tmp_path):
    run_search(ChainProblemFactory(matches=6), SearchOptions(budget=60, population=8, seed=1), tmp_path / "first")
    run_search(ChainProblemFactory(matches=6), SearchOptions(budget=60, population=8, seed=2), tmp_path / "second")
    assert signature(read_archive(tmp_path / "first")) != signature(read_archive(tmp_path / "second"))


def test_failed_evaluation_recorded(tmp_path):
    factory = ChainProblemFactory(matches=6, fail_from_stitches=3)
    result = run_search(factory, SearchOptions(algorithm="ga", budget=150, population=8, seed=0), tmp_path)
    failures = [record for record in read_archive(tmp_path) if record["error"] is not None]
    assert failures
    assert result.failed == len([record for record in failures if not record["skipped"]])
    for record in failures:
        assert record["objectives"] is None
        assert "synthetic failure" in record["error"]
    assert all(record["objectives"]["stitches"] < 3 for record in result.front)


def test_memoized_genotypes_not_reevaluated(tmp_path):
    # Two matches: at most 2**4 * 3 = 48 genotypes, so most of 300 proposals repeat a subnetwork.
    result = run_search(ChainProblemFactory(matches=2), SearchOptions(algorithm="ga", budget=300, population=6, seed=3), tmp_path)
    records = read_archive(tmp_path)
    evaluated = [record for record in records if not record["skipped"]]
    keys = {tuple((p, record["genotype"][p]) for p in record["active"]) for record in evaluated}
    assert sum(record["skip_reason"] == "memoized" for record in records) > 0
    # Each subnetwork is evaluated once; repeats, even of one still in flight, are skipped.
    assert len(evaluated) == len(keys)
    assert result.evaluations == 300


def test_process_executor_matches_local(tmp_path):
    options = SearchOptions(algorithm="random", budget=40, population=4, seed=5)
    process = SearchOptions(algorithm="random", budget=40, population=4, seed=5, executor=ExecutorOptions(kind="process", workers=2))
    run_search(ChainProblemFactory(matches=5), options, tmp_path / "local")
    run_search(ChainProblemFactory(matches=5), process, tmp_path / "process")
    local_records = read_archive(tmp_path / "local")
    process_records = read_archive(tmp_path / "process")
    # Random search ignores results, so both draw the same genotypes, in possibly other orders.
    assert sorted(r["genotype"] for r in local_records) == sorted(r["genotype"] for r in process_records)
    assert {r["worker"] for r in process_records if not r["skipped"]} <= {"process-0", "process-1"}


def test_run_dir_rejects_existing_run(tmp_path):
    run_search(ChainProblemFactory(matches=3), SearchOptions(budget=10, population=2), tmp_path)
    with pytest.raises(SearchError, match="already contains a run"):
        run_search(ChainProblemFactory(matches=3), SearchOptions(budget=10, population=2), tmp_path)


def test_config_records_layout_and_reference(tmp_path):
    run_search(ChainProblemFactory(matches=3), SearchOptions(budget=10, population=2, seed=9), tmp_path)
    config = read_config(tmp_path)
    problem = ChainProblem(3, seed=0)
    assert config["identity"] == problem.identity
    assert config["layout"] == {"genotype_length": 7, "alphabet_sizes": [2, 2, 2, 2, 2, 2, 3]}
    assert config["options"]["seed"] == 9
    ensemble_macs = problem.reference_points()["ensemble"]["macs"]
    assert config["hypervolume_reference"] == {"accuracy_min": 0.0, "macs_max": pytest.approx(1.1 * ensemble_macs)}


def test_resume_rejects_other_problem(tmp_path):
    run_search(ChainProblemFactory(matches=3), SearchOptions(budget=10, population=2), tmp_path)
    with pytest.raises(ResumeMismatchError, match="identity"):
        resume_search(tmp_path, ChainProblemFactory(matches=3, seed=1))
    with pytest.raises(ResumeMismatchError, match="genotype layout"):
        resume_search(tmp_path, ChainProblemFactory(matches=4))


def test_resume_rejects_other_options(tmp_path):
    run_search(ChainProblemFactory(matches=3), SearchOptions(budget=10, population=2), tmp_path)
    with pytest.raises(ResumeMismatchError, match="population was 2, now 4"):
        resume_search(tmp_path, ChainProblemFactory(matches=3), options=SearchOptions(budget=10, population=4))


def test_resume_finished_run_adds_nothing(tmp_path):
    options = SearchOptions(algorithm="ga", budget=60, population=4, seed=1)
    run_search(ChainProblemFactory(matches=4), options, tmp_path)
    before = read_archive(tmp_path)
    result = resume_search(tmp_path, ChainProblemFactory(matches=4), options=options)
    assert read_archive(tmp_path) == before
    assert result.evaluations == 60


def test_resume_after_truncated_archive_matches_full_run(tmp_path):
    options = SearchOptions(algorithm="gomea", budget=150, population=6, seed=3)
    run_search(ChainProblemFactory(matches=6), options, tmp_path / "full")
    full = read_archive(tmp_path / "full")

    # Keep the config and the first 70 records plus half a line, as a killed run would.
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    lines = (tmp_path / "full" / "archive.jsonl").read_text().splitlines(keepends=True)
    (cut / "archive.jsonl").write_text("".join(lines[:70]) + lines[70][:25])
    result = resume_search(cut, ChainProblemFactory(matches=6))

    assert result.evaluations == 150
    assert signature(read_archive(cut)) == signature(full)


def test_sigkill_then_resume_keeps_evaluations(tmp_path):
    run_dir = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from search_problems import ChainProblemFactory
        from stitchc.runtime.search import SearchOptions, run_search
        run_search(ChainProblemFactory(matches=6, delay_s=0.02),
                   SearchOptions(algorithm="ga", budget=400, population=6, seed=11), {str(run_dir)!r})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_DIR)
    archive = run_dir / "archive.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if archive.exists() and archive.read_text().count("\n") >= 40:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    before = read_archive(run_dir)
    assert 40 <= len(before) < 400
    result = resume_search(run_dir, ChainProblemFactory(matches=6))
    after = read_archive(run_dir)
    assert result.evaluations == 400
    assert len(after) == 400
    assert signature(after[: len(before)]) == signature(before)

    # The resumed run is the run that would have happened without the kill.
    run_search(ChainProblemFactory(matches=6), SearchOptions(algorithm="ga", budget=400, population=6, seed=11), tmp_path / "whole")
    assert signature(after) == signature(read_archive(tmp_path / "whole"))


@pytest.mark.ray
def test_ray_executor_smoke(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        options = SearchOptions(
            algorithm="ga", budget=30, population=4, seed=0, executor=ExecutorOptions(kind="ray", workers=2, wait_timeout_s=30)
        )
        result = run_search(ChainProblemFactory(matches=4), options, tmp_path)
        records = read_archive(tmp_path)
        assert result.evaluations == 30
        assert {r["worker"] for r in records if not r["skipped"]} <= {"ray-0", "ray-1"}
    finally:
        ray.shutdown()
