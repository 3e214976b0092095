"""``stitchc demo --quick`` end to end: artifacts, consistent numbers, runnable ONNX files."""

import json

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner

from stitchc.cli import main
from stitchc.passes.onnx_costs import count_onnx
from stitchc.runtime.demo import choose_offspring


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["demo", "--quick", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "| parent A |" in result.output
    return output


def test_artifacts_exist(demo_dir):
    for name in ("report.md", "summary.json", "front.png", "supernet.png", "supernet.dot", "net.stitch",
                 "matching.json", "parents/a.safetensors", "parents/b.safetensors", "run/config.json",
                 "run/archive.jsonl", "run/front.csv"):
        assert (demo_dir / name).is_file(), name
    assert list((demo_dir / "offspring").glob("*.onnx"))


def test_report_numbers_are_consistent(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["rows"]}

    for row in summary["rows"]:
        assert 0.0 <= row["val_accuracy"] <= 1.0
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert 0.0 <= row["test_ece"] <= 1.0
    assert rows["ensemble of A and B"]["macs"] == rows["parent A"]["macs"] + rows["parent B"]["macs"]
    for row in summary["rows"][3:]:
        assert row["onnx"]["macs_onnx"] == row["macs"]
        assert row["onnx"]["macs_ir"] == row["macs"]
        assert count_onnx(row["onnx"]["path"]).macs == row["macs"]
    assert summary["search"]["evaluations"] == 16


def test_report_mentions_every_row(demo_dir):
    report = (demo_dir / "report.md").read_text()
    summary = json.loads((demo_dir / "summary.json").read_text())

    for row in summary["rows"]:
        assert f"| {row['name']} |" in report
    assert "## Does any offspring dominate a parent or the ensemble?" in report


def test_onnx_offspring_run(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    shape = summary["options"]["input_shape"]
    for path in (demo_dir / "offspring").glob("*.onnx"):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        (logits,) = session.run(None, {name: np.zeros((3, *shape[1:]), dtype=np.float32)})
        assert logits.shape == (3, 10)


def test_choose_offspring_rules():
    references = {"A": {"accuracy": 0.9, "macs": 100}, "B": {"accuracy": 0.8, "macs": 40},
                  "ensemble": {"accuracy": 0.92, "macs": 140}}
    front = [
        {"genotype": "0000", "objectives": {"accuracy": 0.8, "macs": 40}},   # parent B itself
        {"genotype": "1000", "objectives": {"accuracy": 0.85, "macs": 30}},  # dominates B
        {"genotype": "0100", "objectives": {"accuracy": 0.93, "macs": 90}},  # dominates A and ensemble
    ]

    chosen = dict((record["genotype"], label) for label, record in choose_offspring(front, references))

    assert "0000" not in chosen
    assert chosen["0100"] == "most accurate; dominates A; dominates ensemble"
    assert chosen["1000"] == "cheapest beating the cheaper parent; dominates B"
