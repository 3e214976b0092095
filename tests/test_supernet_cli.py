"""Tests of stitchc build, train, emit, show and cost from the command line."""

import json

from click.testing import CliRunner

from stitchc.cli import main

A = "timm:resnet10t,num_classes=10,in_chans=1"
B = "timm:resnet18,num_classes=10,in_chans=1"


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_build_train_emit_show_cost(tmp_path):
    net = tmp_path / "net.stitch"
    built = invoke("build", A, B, "--input-shape", "1x1x16x16", "-o", str(net), "--json")
    assert built.exit_code == 0, built.output
    summary = json.loads(built.output)
    length = summary["genotype_length"]
    assert length == 2 * summary["matches"] + 1

    trained = invoke("train", str(net), "--data", "digits", "--samples", "64", "--init", "lstsq", "--json")
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.output.strip().splitlines()[-1])
    assert report["steps"] == 2

    genotype = "0" * (length - 3) + "102"
    emitted = invoke("emit", str(net), "--genotype", genotype, "-o", str(tmp_path / "sub.onnx"), "--json")
    assert emitted.exit_code == 0, emitted.output
    emit_result = json.loads(emitted.output.strip().splitlines()[-1])
    assert emit_result["max_abs_diff"] <= 1e-4
    assert length - 1 in emit_result["active_switches"]

    counted = invoke("cost", str(tmp_path / "sub.onnx"), "--json")
    assert json.loads(counted.output)["macs"] == emit_result["macs"]

    pt2 = invoke("emit", str(net), "--genotype", genotype, "-o", str(tmp_path / "sub.pt2"))
    assert pt2.exit_code == 0
    assert "MACs" in pt2.output

    shown = invoke("show", str(net), "--genotype", genotype, "-o", str(tmp_path / "net.dot"))
    assert shown.exit_code == 0
    dot = (tmp_path / "net.dot").read_text()
    assert dot.startswith("digraph supernet")
    assert "cluster_A" in dot
    assert "cluster_B" in dot
    assert "stitch:" in dot


def test_emit_rejects_bad_genotype(tmp_path):
    net = tmp_path / "net.stitch"
    invoke("build", A, B, "--input-shape", "1x1x16x16", "-o", str(net))
    result = CliRunner().invoke(main, ["emit", str(net), "--genotype", "012", "-o", str(tmp_path / "x.pt2")])
    assert result.exit_code == 2
    assert "expected" in result.output


def test_missing_supernet_file(tmp_path):
    path = tmp_path / "broken.stitch"
    path.write_bytes(b"not a file")
    result = CliRunner().invoke(main, ["show", str(path), "-o", str(tmp_path / "p.dot")])
    assert result.exit_code == 2
    assert "not a readable supernetwork file" in result.output
