"""Tests of stitch kinds, candidate listing and the matching of real captured models."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch import nn

from stitchc.capture import capture
from stitchc.errors import InvalidArgumentError
from stitchc.passes.candidates import (
    Candidate,
    CandidateOptions,
    StitchKind,
    find_candidates,
    get_stitch_kind,
    layer_node_names,
    register_stitch_kind,
    stitch_kinds,
    to_digraph,
)
from stitchc.passes.matching import MatchingOptions, is_acyclic_matching, solve_matching
from stitchc.runtime.similarity import linear_cka, centered_grams, similarity_weights


class _SmallNet(nn.Module):
    """conv(8x8) -> relu -> conv(4x4) -> flatten -> linear -> output head."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width * 16, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.conv2(self.act(self.conv1(x)))
        return self.head(self.fc(torch.flatten(x, 1)))


def test_builtin_kinds_registered_in_order():
    assert [kind.name for kind in stitch_kinds()][:3] == ["linear", "conv1x1", "token_linear"]


@pytest.mark.parametrize(
    "name, shape_src, shape_dst, module_type, macs",
    [
        ("linear", (2, 10), (2, 7), nn.Linear, 2 * 10 * 7),
        ("conv1x1", (2, 16, 5, 6), (2, 8, 5, 6), nn.Conv2d, 2 * 5 * 6 * 16 * 8),
        ("token_linear", (2, 9, 12), (2, 9, 20), nn.Linear, 2 * 9 * 12 * 20),
    ],
)
def test_kind_builds_module_mapping_shapes(name, shape_src, shape_dst, module_type, macs):
    kind = get_stitch_kind(name)
    assert kind.applies(shape_src, shape_dst)
    module = kind.make_module(shape_src, shape_dst)
    assert isinstance(module, module_type)
    assert module.bias is not None
    assert tuple(module(torch.zeros(shape_src)).shape) == shape_dst
    assert kind.macs(shape_src, shape_dst) == macs


@pytest.mark.parametrize(
    "name, shape_src, shape_dst",
    [
        ("linear", (2, 10), (2, 7, 1)),
        ("conv1x1", (2, 16, 5, 6), (2, 8, 6, 5)),
        ("conv1x1", (1, 16, 5, 5), (2, 16, 5, 5)),
        ("token_linear", (2, 9, 12), (2, 10, 12)),
    ],
)
def test_kind_rejects_mismatched_shapes(name, shape_src, shape_dst):
    assert not get_stitch_kind(name).applies(shape_src, shape_dst)


def test_duplicate_kind_is_rejected():
    class Again(StitchKind):
        name = "linear"

        def applies(self, shape_src, shape_dst):
            return False

        def make_module(self, shape_src, shape_dst):
            return nn.Identity()

        def macs(self, shape_src, shape_dst):
            return 0

    with pytest.raises(InvalidArgumentError, match="'linear' is already registered"):
        register_stitch_kind(Again)


def test_unknown_kind_is_rejected():
    with pytest.raises(InvalidArgumentError, match="stitch kind 'mlp' is not registered"):
        get_stitch_kind("mlp")
    with pytest.raises(InvalidArgumentError, match="layers 'convs' is unknown"):
        CandidateOptions(layers="convs")


def test_candidates_skip_input_output_and_head():
    gm = capture(_SmallNet(), "1x3x8x8").gm
    names = layer_node_names(gm)
    # conv1, act (8x8), conv2 (4x4), flatten and fc (2-D); head feeds the output.
    assert names == ["conv1", "act", "conv2", "flatten", "fc"]
    assert layer_node_names(gm, CandidateOptions(layers="parameterized")) == ["conv1", "conv2", "fc"]


def test_candidates_pair_compatible_shapes():
    gm_a = capture(_SmallNet(width=4), "1x3x8x8").gm
    gm_b = capture(_SmallNet(width=6), "1x3x8x8").gm
    candidates = find_candidates(gm_a, gm_b)
    pairs = {(c.a, c.b): c.kind for c in candidates}
    # 2 x 2 at 8x8, 1 x 1 at 4x4, 2 x 2 flat: 9 pairs.
    assert len(candidates) == 9
    assert pairs[("conv1", "act")] == "conv1x1"
    assert pairs[("flatten", "fc")] == "linear"
    assert ("conv1", "conv2") not in pairs
    first = candidates[0]
    assert first == Candidate("conv1", "conv1", "conv1x1", (1, 4, 8, 8), (1, 6, 8, 8))


def test_different_input_shapes_are_rejected():
    gm_a = capture(_SmallNet(), "1x3x8x8").gm
    gm_b = capture(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), "1x3x6x6").gm
    with pytest.raises(InvalidArgumentError, match="input shape 1x3x8x8 and model B at 1x3x6x6"):
        find_candidates(gm_a, gm_b)


def test_no_candidates_matches_nothing():
    gm_a = capture(_SmallNet(), "1x3x8x8").gm
    gm_b = capture(_SmallNet(), "1x3x8x8").gm
    candidates = find_candidates(gm_a, gm_b, CandidateOptions(kinds=("token_linear",)))
    assert candidates == []
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    assert result.pairs == ()
    assert "no candidates" in result.message


def test_digraph_uses_stable_names():
    gm = capture(_SmallNet(), "1x3x8x8").gm
    graph = to_digraph(gm)
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.has_edge("conv1", "act")
    assert graph.has_edge("head", "output")


def test_cka_is_one_for_scaled_copy_and_bounded():
    torch.manual_seed(0)
    x = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randn(16, 7, dtype=torch.float64)
    gram = lambda f: (lambda k: k - k.mean(0) - k.mean(1, keepdim=True) + k.mean())(f @ f.T)
    assert linear_cka(gram(x), gram(3 * x)) == pytest.approx(1.0)
    assert 0.0 <= linear_cka(gram(x), gram(y)) < 1.0


def test_similarity_weights_prefer_identical_layer():
    torch.manual_seed(0)
    net = _SmallNet()
    gm_a = capture(net, "1x3x8x8").gm
    gm_b = capture(net, "1x3x8x8").gm
    candidates = find_candidates(gm_a, gm_b)
    inputs = torch.randn(12, 3, 8, 8)
    weights = dict(zip([(c.a, c.b) for c in candidates], similarity_weights(gm_a, gm_b, candidates, inputs)))
    assert weights[("conv1", "conv1")] == pytest.approx(1.0)
    assert weights[("conv1", "act")] < 1.0
    grams = centered_grams(gm_a, inputs, ["fc"])
    assert tuple(grams["fc"].shape) == (12, 12)


def _match_real(source_a: str, source_b: str, input_shape: str):
    from stitchc.sources import capture_source

    gm_a = capture_source(source_a, input_shape).gm
    gm_b = capture_source(source_b, input_shape).gm
    candidates = find_candidates(gm_a, gm_b)
    graph_a, graph_b = to_digraph(gm_a), to_digraph(gm_b)
    result = solve_matching(graph_a, graph_b, candidates, options=MatchingOptions(workers=1))
    assert is_acyclic_matching(graph_a, graph_b, result.pairs)
    return candidates, result


def test_resnet18_resnet34_matched_optimally():
    candidates, result = _match_real("timm:resnet18", "timm:resnet34", "1x3x64x64")
    assert result.status == "optimal"
    # resnet18 has fewer layer nodes than resnet34 at every output shape (3 + 19 + 20 +
    # 20 + 20 + 1 + 1 = 84), and the per-shape bound is reached.
    assert result.objective == 84
    assert result.upper_bound == 84
    assert len(candidates) == 3003


def test_resnet50_resnext50_matched_optimally():
    candidates, result = _match_real("timm:resnet50", "timm:resnext50_32x4d", "1x3x64x64")
    assert result.status == "optimal"
    assert result.objective == 206
    assert result.upper_bound == 206
