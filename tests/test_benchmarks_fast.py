"""Test that every benchmark of the suite still runs, through the fast tier of ``python -m benchmarks``."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--fast", "--results-dir", str(results),
         "--work-dir", str(results / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    return completed, results


@pytest.mark.slow
def test_fast_tier_exits_cleanly(fast_run):
    completed, _ = fast_run
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.mark.slow
def test_fast_tier_page_has_every_section(fast_run):
    _, results = fast_run
    page = (results / "RESULTS.md").read_text()
    for name, module in BENCHMARKS.items():
        title = __import__(module, fromlist=["TITLE"]).TITLE
        assert f"## {title}\n" in page, name
        assert (results / f"{name}.md").exists(), name
        assert (results / f"{name}.json").exists(), name
    assert "Not run yet" not in page
    assert "fast tier" in page


@pytest.mark.slow
def test_fast_tier_links_existing_plots(fast_run):
    _, results = fast_run
    page = (results / "RESULTS.md").read_text()
    for name in ("scaling_matching.png", "scaling_capture.png", "scaling_eval.png"):
        assert f"]({name})" in page or f"](./{name})" in page, name
        assert (results / name).stat().st_size > 0, name
