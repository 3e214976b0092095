"""Tests of the build, genotype and prune passes on real timm and torchvision models."""

import copy
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from stitchc import capture, capture_source
from stitchc.errors import InvalidArgumentError, InvalidGenotypeError, MatchingError
from stitchc.ir import META_KEY, NodeInfo, node_info, total_macs, total_params
from stitchc.passes.build import BuildOptions, check_supernet, insert_stitches
from stitchc.passes.candidates import find_candidates, to_digraph
from stitchc.passes.genotype import active_positions, canonical_genotype, format_genotype, parse_genotype
from stitchc.passes.matching import solve_matching
from stitchc.passes.prune import prune_to_genotype

SHAPE = "1x1x16x16"


def matched_pairs(gm_a, gm_b):
    candidates = find_candidates(gm_a, gm_b)
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    by_pair = {(c.a, c.b): c for c in candidates}
    return [by_pair[tuple(pair)] for pair in result.pairs]


@pytest.fixture(scope="module")
def parents():
    gm_a = capture_source("timm:resnet10t,num_classes=10,in_chans=1", SHAPE).gm
    gm_b = capture_source("torchvision:resnet18,num_classes=10", "1x3x16x16").gm
    return gm_a, gm_b


@pytest.fixture(scope="module")
def pair():
    gm_a = capture_source("timm:resnet10t,num_classes=10,in_chans=1", SHAPE).gm
    gm_b = capture_source("timm:resnet18,num_classes=10,in_chans=1", SHAPE).gm
    return gm_a, gm_b


@pytest.fixture(scope="module")
def supernet(pair):
    return insert_stitches(pair[0], pair[1], matched_pairs(*pair))


def x_batch(batch=3):
    return torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def zeros_with_output(supernet, output):
    return [0] * (supernet.genotype_length - 1) + [output]


def test_build_rejects_different_input_shapes(parents):
    with pytest.raises(InvalidArgumentError, match="same --input-shape"):
        insert_stitches(parents[0], parents[1], [])


def test_build_keeps_inputs_unchanged(pair):
    before = [node.name for node in pair[0].graph.nodes]
    state = {k: v.clone() for k, v in pair[0].state_dict().items()}
    insert_stitches(pair[0], pair[1], matched_pairs(*pair)[:3])
    assert [node.name for node in pair[0].graph.nodes] == before
    for key, value in pair[0].state_dict().items():
        assert torch.equal(value, state[key])


def test_build_layout_and_invariants(supernet, pair):
    m = len(supernet.matches)
    assert m > 10
    assert supernet.genotype_length == 2 * m + 1
    check_supernet(supernet.gm, m)
    supernet.gm.graph.lint()
    assert all(isinstance(node.meta.get(META_KEY), NodeInfo) for node in supernet.gm.graph.nodes)
    # Matches come in A's topological order.
    order_a = [node_info(n).name for n in pair[0].graph.nodes]
    positions = [order_a.index(match.a) for match in supernet.matches]
    assert positions == sorted(positions)
    assert sorted(supernet.stitches()) == sorted(f"stitch:{k}" for k in range(2 * m))
    # Parents' modules never alias even though both have layer1.0.conv1.
    assert supernet.gm.get_submodule("a.layer1.0.conv1") is not supernet.gm.get_submodule("b.layer1.0.conv1")


def test_build_rejects_reused_node(pair):
    pairs = matched_pairs(*pair)
    duplicate = (pairs[0].a, pairs[1].b, pairs[1].kind)
    with pytest.raises(MatchingError, match="already matched"):
        insert_stitches(pair[0], pair[1], [pairs[0], duplicate])


def test_build_rejects_cycle(pair):
    pairs = matched_pairs(*pair)
    # Two matches i < j at the same spatial size, crossed: a_i <- b_j and a_j <- b_i.
    first, second = next((p, q) for i, p in enumerate(pairs) for q in pairs[i + 2:]
                         if p.shape_a[2:] == q.shape_a[2:] and p.kind == q.kind == "conv1x1")
    crossed = [(first.a, second.b, "conv1x1"), (second.a, first.b, "conv1x1")]
    with pytest.raises(MatchingError, match="cycle"):
        insert_stitches(pair[0], pair[1], crossed)


def node_info_shape(gm, name):
    return next(node_info(n).shape for n in gm.graph.nodes if node_info(n).name == name)


def test_build_rejects_unknown_node(pair):
    with pytest.raises(InvalidArgumentError, match="no node named 'nope'"):
        insert_stitches(pair[0], pair[1], [("nope", "conv1", "conv1x1")])


def test_zeros_reproduce_parents_exactly(supernet, pair):
    x = x_batch()
    with torch.no_grad():
        logits_a, logits_b = pair[0](x), pair[1](x)
        supernet.set_genotype(zeros_with_output(supernet, 0))
        assert float((supernet(x) - logits_a).abs().max()) == 0.0
        assert float((supernet.gm(x) - logits_a).abs().max()) == 0.0
        supernet.set_genotype(zeros_with_output(supernet, 1))
        assert float((supernet(x) - logits_b).abs().max()) == 0.0
        supernet.set_genotype(zeros_with_output(supernet, 2))
        assert float((supernet(x) - (logits_a + logits_b) / 2).abs().max()) == 0.0


def test_probability_ensemble(pair):
    net = insert_stitches(pair[0], pair[1], matched_pairs(*pair)[:2], BuildOptions(ensemble="probabilities"))
    net.set_genotype([0] * 4 + [2])
    x = x_batch()
    with torch.no_grad():
        expected = (pair[0](x).softmax(-1) + pair[1](x).softmax(-1)) / 2
        assert torch.allclose(net(x).softmax(-1), expected, atol=1e-6)
        assert torch.allclose(prune_to_genotype(net, [0] * 4 + [2])(x), net(x), atol=0)


def test_parse_genotype_forms():
    assert parse_genotype("0110 2", 5) == (0, 1, 1, 0, 2)
    assert parse_genotype([1, 0, 0, 0, 1], 5) == (1, 0, 0, 0, 1)
    assert format_genotype((0, 1, 2)) == "012"


@pytest.mark.parametrize("value, message", [
    ("0101", "length 4, expected 5"),
    ("01012", None),
    ("01202", "position 2"),
    ("01013", "output position 4"),
    ("01a12", "only digits"),
    ([0, 1, 0.5, 0, 1], "sequence of integers"),
])
def test_parse_genotype_rejects(value, message):
    if message is None:
        assert parse_genotype(value, 5) == (0, 1, 0, 1, 2)
        return
    with pytest.raises(InvalidGenotypeError, match=message):
        parse_genotype(value, 5)


def test_active_positions_and_canonical(supernet):
    m = len(supernet.matches)
    zeros = zeros_with_output(supernet, 0)
    # Parent A alone: every A switch is active, no B switch is, the output always is.
    assert active_positions(supernet, zeros) == frozenset(range(0, 2 * m + 1, 2))
    only_b = zeros_with_output(supernet, 1)
    assert active_positions(supernet, only_b) == frozenset(list(range(1, 2 * m, 2)) + [2 * m])
    flipped = list(zeros)
    flipped[1] = 1  # B's switch, inactive while the output is A
    assert canonical_genotype(supernet, flipped) == tuple(zeros)


def test_one_stitch_changes_output_and_macs(supernet, pair):
    m = len(supernet.matches)
    genotype = zeros_with_output(supernet, 0)
    middle = m // 2
    genotype[2 * middle] = 1
    pruned = prune_to_genotype(supernet, genotype)
    x = x_batch()
    with torch.no_grad():
        assert float((pruned(x) - pair[0](x)).abs().max()) > 0
    assert total_macs(pruned) != total_macs(pair[0])
    origins = {node_info(node).origin for node in pruned.graph.nodes}
    assert f"stitch:{2 * middle}" in origins
    assert "B" in origins


def test_inactive_flip_keeps_emitted_graph(supernet):
    genotype = zeros_with_output(supernet, 0)
    flipped = list(genotype)
    flipped[3] = 1
    assert 3 not in active_positions(supernet, genotype)
    first, second = prune_to_genotype(supernet, genotype), prune_to_genotype(supernet, flipped)
    assert first.code == second.code
    assert hash(first.code) == hash(second.code)
    assert first.state_dict().keys() == second.state_dict().keys()


def test_pruned_counts_and_hygiene(supernet):
    genotype = zeros_with_output(supernet, 2)
    genotype[4] = 1
    pruned = prune_to_genotype(supernet, genotype)
    called = {node.target for node in pruned.graph.nodes if node.op == "call_module"}
    expected_keys = {f"{target}.{name}" for target in called
                     for name, _ in pruned.get_submodule(target).named_parameters()}
    expected_keys |= {f"{target}.{name}" for target in called
                      for name, _ in pruned.get_submodule(target).named_buffers()}
    assert set(pruned.state_dict()) == expected_keys
    assert total_params(pruned) == sum(p.numel() for p in pruned.parameters())
    recount = capture(pruned, "1x1x16x16")
    assert total_macs(recount.gm) == total_macs(pruned)
    assert not any("switches" in key for key in pruned.state_dict())
    provenance = pruned.meta["stitchc_provenance"]
    assert set(provenance["parameters"]) == set(pruned.state_dict())
    assert provenance["parameters"]["stitches.4.weight"] == "stitch:4"


class _DeepStage(nn.Module):
    """A parent whose stage has 12 blocks, so names layer.1 and layer.10 both exist."""

    def __init__(self, channels):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.layer = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(12)])
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        return self.head(self.layer(self.stem(x)).mean((2, 3)))


def test_state_dict_hygiene_past_ten_blocks():
    torch.manual_seed(0)
    gm_a = capture(_DeepStage(4), SHAPE).gm
    gm_b = capture(_DeepStage(6), SHAPE).gm
    pairs = [("layer.1", "layer.1", "conv1x1"), ("layer.10", "layer.10", "conv1x1")]
    net = insert_stitches(gm_a, gm_b, pairs)
    # A up to layer.1, then B from layer.1 on: A's layer.10 must not survive.
    genotype = [0, 1, 0, 0, 1]
    pruned = prune_to_genotype(net, genotype)
    keys = set(pruned.state_dict())
    assert "a.layer.1.weight" in keys
    assert "a.layer.10.weight" not in keys
    assert "b.layer.10.weight" in keys
    assert pruned.meta["stitchc_provenance"]["parameters"]["a.layer.1.weight"] == "A"
    net.set_genotype(genotype)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(pruned(x), net(x))


def test_metadata_survives_copies(supernet):
    pruned = prune_to_genotype(supernet, zeros_with_output(supernet, 2))
    expected = [node_info(node) for node in pruned.graph.nodes]
    copied = copy.deepcopy(pruned)
    assert [node_info(node) for node in copied.graph.nodes] == expected
    assert copied.meta["stitchc_provenance"] == pruned.meta["stitchc_provenance"]
    assert pickle.loads(pickle.dumps(expected)) == expected
    code = ("import pickle, sys; infos = pickle.load(sys.stdin.buffer); "
            "print(sum(i.macs for i in infos), sorted({i.origin for i in infos}))")
    completed = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(expected),
                               capture_output=True, check=True)
    assert completed.stdout.decode().split()[0] == str(total_macs(pruned))


def test_supernet_train_keeps_parents_in_eval(supernet):
    supernet.train()
    assert all(not module.training for module in supernet.gm.a.modules())
    assert all(not module.training for module in supernet.gm.b.modules())
    assert all(module.training for module in supernet.gm.stitches.modules())
    supernet.eval()
    assert all(not p.requires_grad for p in supernet.parent_parameters())
