"""Tests of emitting pruned subnetworks in every format and of counting emitted files."""

import json

import onnx
import pytest
import torch

from stitchc import capture_source
from stitchc.errors import InvalidArgumentError
from stitchc.ir import total_macs, total_params
from stitchc.passes.build import insert_stitches
from stitchc.passes.candidates import find_candidates, to_digraph
from stitchc.passes.matching import solve_matching
from stitchc.passes.onnx_costs import count_onnx
from stitchc.passes.prune import prune_to_genotype
from stitchc.runtime.emit import count_emitted, emit_format, emit_model, load_emitted

SHAPE = "1x1x16x16"


@pytest.fixture(scope="module")
def subnetwork():
    gm_a = capture_source("timm:resnet10t,num_classes=10,in_chans=1", SHAPE).gm
    gm_b = capture_source("timm:resnet18,num_classes=10,in_chans=1", SHAPE).gm
    candidates = find_candidates(gm_a, gm_b)
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    by_pair = {(c.a, c.b): c for c in candidates}
    net = insert_stitches(gm_a, gm_b, [by_pair[tuple(p)] for p in result.pairs])
    genotype = [0] * net.genotype_length
    genotype[6] = 1
    genotype[-1] = 2
    return prune_to_genotype(net, genotype)


def test_emit_format_by_path():
    assert emit_format("a/net.pt2") == "pt2"
    assert emit_format("net.onnx") == "onnx"
    assert emit_format("out/") == "folder"
    with pytest.raises(InvalidArgumentError, match="unknown output format '.txt'"):
        emit_format("net.txt")


@pytest.mark.parametrize("name", ["sub.pt2", "sub.pt", "sub_dir/", "sub.onnx"])
def test_emitted_form_reproduces_and_counts(subnetwork, tmp_path, name):
    path = tmp_path / name
    result = emit_model(subnetwork, str(path) + ("/" if name.endswith("/") else ""))
    assert result["max_abs_diff"] <= 1e-4
    assert result["batch_sizes"] == [1, 3]
    x = torch.randn(2, 1, 16, 16)
    loaded = load_emitted(path, trust_pickle=True)
    with torch.no_grad():
        expected = subnetwork(x)
    if isinstance(loaded, torch.nn.Module):
        with torch.no_grad():
            assert torch.allclose(loaded(x), expected, atol=1e-5)
    else:
        actual = loaded.run(None, {loaded.get_inputs()[0].name: x.numpy()})[0]
        assert torch.allclose(torch.from_numpy(actual), expected, atol=1e-4)
    counted = count_emitted(path, trust_pickle=True)
    assert counted["macs"] == total_macs(subnetwork)
    assert counted["params"] == total_params(subnetwork)


def test_onnx_provenance_covers_initializers(subnetwork, tmp_path):
    path = tmp_path / "sub.onnx"
    emit_model(subnetwork, path)
    model = onnx.load(str(path))
    stored = {prop.key: prop.value for prop in model.metadata_props}
    provenance = json.loads(stored["stitchc.provenance"])
    names = {initializer.name for initializer in model.graph.initializer}
    assert names == set(provenance["initializers"])
    assert set(provenance["initializers"].values()) <= {"A", "B", "stitch:6"}
    assert "stitch:6" in provenance["initializers"].values()
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param != ""


def test_onnx_count_at_other_batch(subnetwork, tmp_path):
    path = tmp_path / "sub.onnx"
    emit_model(subnetwork, path)
    # MACs scale linearly with the batch: 4 times the IR's count at batch 1.
    assert count_onnx(path, batch_size=4).macs == 4 * total_macs(subnetwork)


def test_pt_load_needs_trust(subnetwork, tmp_path):
    path = tmp_path / "sub.pt"
    emit_model(subnetwork, path, verify=False)
    with pytest.raises(InvalidArgumentError, match="trust_pickle=True"):
        load_emitted(path)
