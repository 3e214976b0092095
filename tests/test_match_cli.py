"""Tests of `stitchc match` and of the matching file it writes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stitchc.cli import main
from stitchc.errors import InvalidArgumentError
from stitchc.passes._matching_file import load_matching

MODELS = ["timm:resnet18", "timm:resnet34", "--input-shape", "1x3x32x32"]


def _run(*args: str):
    result = CliRunner().invoke(main, ["match", *args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Run `stitchc match -o` once; return the CLI result and the file path."""
    path = tmp_path_factory.mktemp("match") / "matching.json"
    return _run(*MODELS, "-o", str(path)), path


def test_match_prints_summary_and_writes_file(written):
    result, path = written
    assert result.exit_code == 0, result.output
    # At 32x32, resnet18's 84 layer nodes all find partners in resnet34.
    assert "matches          84 (genotype length 169)" in result.output
    assert "status           optimal" in result.output
    assert "1x*x8x8" in result.output

    record = load_matching(path)
    assert record.num_matches == 84
    assert record.genotype_length == 169
    assert record.status == "optimal"
    assert record.model_a == "timm:resnet18"
    assert record.input_shape == (1, 3, 32, 32)
    assert record.pairs[0].a == "conv1"
    assert record.pairs[0].kind == "conv1x1"
    assert "layers=all" in record.granularity


def test_match_json_has_stable_keys():
    result = _run(*MODELS, "--json", "--solver", "bnb", "--layers", "parameterized")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("pairs", "num_matches", "genotype_length", "status", "objective", "upper_bound",
                "solver", "seconds", "model_a", "model_b", "input_shape", "candidates", "granularity"):
        assert key in data
    assert data["solver"] == "bnb"
    assert data["num_matches"] == len(data["pairs"])
    assert set(data["pairs"][0]) == {"a", "b", "kind", "shape_a", "shape_b"}
    # resnet18 has 20 convolutions and 20 norm layers (fc feeds the output): 40.
    assert data["num_matches"] == 40
    assert "layers=parameterized" in data["granularity"]


def test_match_similarity_objective_on_digits():
    result = _run(*MODELS, "--json", "--objective", "similarity", "--samples", "16")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["objective_kind"] == "similarity"
    assert data["status"] == "optimal"
    assert 0 < data["objective"] <= data["num_matches"]


def test_match_bad_source_is_one_line_error():
    result = CliRunner().invoke(main, ["match", "timm:no_such_net", "timm:resnet18", "--input-shape", "1x3x32x32"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")


def test_load_rejects_inconsistent_file(written, tmp_path):
    data = json.loads(written[1].read_text())
    data["num_matches"] = 3
    path = tmp_path / "matching.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidArgumentError, match="lists 84 pairs but states num_matches 3"):
        load_matching(path)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_matching(tmp_path / "missing.json")
