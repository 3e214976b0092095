"""Tests of the ``front`` and ``search`` commands on runs of the synthetic problem."""

import json

from click.testing import CliRunner

from search_problems import ChainProblemFactory
from stitchc.cli import main
from stitchc.runtime.search import SearchOptions, reevaluate_front, run_search


def test_front_command_prints_json(tmp_path):
    result = run_search(ChainProblemFactory(matches=5), SearchOptions(budget=80, population=6, seed=0), tmp_path)
    (tmp_path / "front.png").unlink()
    output = CliRunner().invoke(main, ["front", str(tmp_path), "--json"])
    assert output.exit_code == 0, output.output
    report = json.loads(output.output)
    assert report["validation"]["hypervolume"] == result.hypervolume
    assert [r["genotype"] for r in report["validation"]["front"]] == [r["genotype"] for r in result.front]
    assert (tmp_path / "front.png").exists()


def test_front_command_shows_test_front(tmp_path):
    run_search(ChainProblemFactory(matches=5), SearchOptions(budget=80, population=6, seed=0), tmp_path)
    test_front = reevaluate_front(tmp_path, ChainProblemFactory(matches=5))
    output = CliRunner().invoke(main, ["front", str(tmp_path)])
    assert output.exit_code == 0, output.output
    assert f"test front: {len(test_front)} networks" in output.output
    assert "validation front:" in output.output


def test_front_command_missing_run(tmp_path):
    output = CliRunner().invoke(main, ["front", str(tmp_path)])
    assert output.exit_code == 2
    assert "config.json not found" in output.output


def test_search_command_needs_output(tmp_path):
    output = CliRunner().invoke(main, ["search"])
    assert output.exit_code == 2
    assert "-o RUN_DIR" in output.output
