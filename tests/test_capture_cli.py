"""The capture and nodes commands, through click's runner and as the console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from stitchc.cli import main

SOURCE = "timm:resnet18,num_classes=10,in_chans=1"


def test_capture_json_keys():
    result = CliRunner().invoke(main, ["capture", SOURCE, "--input-shape", "1x1x32x32", "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for key in ("nodes", "layer_nodes", "macs", "params", "parity_max_abs_diff", "seconds", "leaf_modules"):
        assert key in summary
    assert summary["parity_max_abs_diff"] == 0.0
    assert summary["params"] == 11_175_370


def test_capture_summary_and_file(tmp_path):
    output = tmp_path / "capture.pt"
    result = CliRunner().invoke(main, ["capture", SOURCE, "--input-shape", "1x1x32x32", "-o", str(output)])

    assert result.exit_code == 0, result.output
    assert "layer nodes" in result.output
    assert "parity          max abs diff 0" in result.output
    again = CliRunner().invoke(main, ["capture", str(output), "--input-shape", "1x1x32x32", "--json"])
    assert json.loads(again.output)["macs"] == json.loads(
        CliRunner().invoke(main, ["capture", SOURCE, "--input-shape", "1x1x32x32", "--json"]).output)["macs"]


def test_nodes_lists_layer_names():
    result = CliRunner().invoke(main, ["nodes", SOURCE, "--input-shape", "1x1x32x32"])

    assert result.exit_code == 0, result.output
    first_columns = [line.split()[0] for line in result.output.splitlines()]
    assert first_columns[:2] == ["conv1", "bn1"]
    assert "layer4.1.add" in first_columns


def test_bad_input_exits_2_with_one_line():
    result = CliRunner().invoke(main, ["capture", "timm:resnet18", "--input-shape", "1x3xfoo"])

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: invalid input shape '1x3xfoo'; write the sizes joined by 'x', e.g. 1x3x224x224"
    ]


def test_console_script_runs():
    script = Path(sys.executable).parent / "stitchc"
    completed = subprocess.run(
        [str(script), "capture", SOURCE, "--input-shape", "1x1x32x32", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ},
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["layer_nodes"] == 85


def test_module_entry_point_reports_error():
    completed = subprocess.run(
        [sys.executable, "-m", "stitchc", "capture", "timm:resnet9000", "--input-shape", "1x3x32x32"],
        capture_output=True, text=True, timeout=300,
    )

    assert completed.returncode == 2
    assert "timm has no architecture 'resnet9000'" in completed.stderr
    assert "Traceback" not in completed.stderr
