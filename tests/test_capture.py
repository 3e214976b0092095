"""Capture: parity with the original module, in-place rewriting, leaves, metadata."""

import copy
import pickle

import pytest
import timm
import torch
import torchvision
from torch import nn

from stitchc import META_KEY, NodeInfo, capture, node_info, parse_input_shape
from stitchc.capture import CaptureOptions, example_input
from stitchc.errors import InvalidArgumentError, ParityError


def _node_values(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``gm`` and return every node's output, keyed by stable name."""
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            values[node_info(node).name] = result
            return result

    with torch.no_grad():
        Recorder(gm).run(x)
    return values


class ConvReluInplace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu2(self.conv2(self.relu1(self.conv1(x))))


def test_inplace_relu_does_not_overwrite_conv_output():
    model = ConvReluInplace().eval()
    gm = capture(model, (2, 3, 8, 8)).gm
    x = example_input((2, 3, 8, 8), seed=3)

    values = _node_values(gm, x)

    with torch.no_grad():
        expected = model.conv1(x)
    assert torch.equal(values["conv1"], expected)
    assert (values["conv1"] < 0).any(), "the check needs negative values that ReLU would clear"
    assert model.relu1.inplace is True, "capture must not change the caller's module"


class InplaceArithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        z = y * 2
        y += x
        y.add_(1.0)
        torch.relu_(z)
        return y + z


def test_inplace_ops_become_out_of_place_with_parity():
    result = capture(InplaceArithmetic(), (1, 3, 4, 4))
    x = example_input((1, 3, 4, 4))

    values = _node_values(result.gm, x)

    # fx turns `y += x` into a plain add (Proxy has no __iadd__), so the two
    # rewrites are `add_` and `torch.relu_`.
    assert result.report.inplace_rewrites == 2
    assert result.report.parity_max_abs_diff == 0.0
    with torch.no_grad():
        conv_alone = result.gm.conv(x)
    assert torch.equal(values["conv"], conv_alone)


class ShapeBranch(nn.Module):
    def forward(self, x):
        if x.shape[-1] > 4:
            return x * 2
        return x


class UsesLen(nn.Module):
    def forward(self, x):
        return x / len(x)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.branch = ShapeBranch()
        self.length = UsesLen()

    def forward(self, x):
        return self.length(self.branch(self.conv(x)))


def test_untraceable_submodules_become_leaves():
    result = capture(Untraceable(), (2, 3, 8, 8))

    names = [name for name, _ in result.report.leafized]
    assert sorted(names) == ["branch", "length"]
    assert result.report.parity_max_abs_diff == 0.0
    module_targets = [n.target for n in result.gm.graph.nodes if n.op == "call_module"]
    assert module_targets == ["conv", "branch", "length"]


class Doubler(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
        self.block.register_forward_hook(lambda module, inputs, output: output * 2)

    def forward(self, x):
        return self.block(x) + 1


def test_forward_hook_module_is_kept_whole():
    model = Doubler().eval()
    result = capture(model, (1, 3, 4, 4))
    x = example_input((1, 3, 4, 4), seed=5)

    with torch.no_grad():
        expected = model(x)

    assert result.report.hooked == ("block",)
    assert torch.equal(result.gm(x), expected)


class Noisy(nn.Module):
    def forward(self, x):
        return x + torch.randn_like(x)


def test_parity_error_names_the_difference():
    with pytest.raises(ParityError, match=r"differs from the module by [0-9.e+-]+ \(max abs\)"):
        capture(Noisy(), (1, 3, 4, 4))


def test_recapture_of_captured_graph():
    first = capture(torchvision.models.resnet18(num_classes=10), (1, 3, 32, 32))
    second = capture(first.gm, (1, 3, 32, 32))

    assert second.report.parity_max_abs_diff == 0.0
    names_first = [node_info(n).name for n in first.gm.graph.nodes]
    names_second = [node_info(n).name for n in second.gm.graph.nodes]
    assert names_first == names_second
    assert second.summary()["macs"] == first.summary()["macs"]


def test_stable_names_follow_module_paths():
    gm = capture(timm.create_model("resnet18", num_classes=10), (1, 3, 32, 32)).gm
    names = [node_info(n).name for n in gm.graph.nodes]

    assert "layer1.0.conv1" in names
    assert "layer1.0.add" in names
    assert "layer4.1.add" in names
    assert len(names) == len(set(names))


def test_layer_nodes_are_tensor_valued_ops():
    gm = capture(torchvision.models.resnet18(num_classes=10), (1, 3, 32, 32)).gm
    infos = [node_info(n) for n in gm.graph.nodes]

    assert infos[0].kind == "input"
    assert not infos[0].is_layer
    assert infos[-1].kind == "output"
    assert not infos[-1].is_layer
    assert all(info.is_layer for info in infos[1:-1])
    assert infos[-2].shape == (1, 10)


def test_mapping_output_is_unwrapped():
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=False)
    result = capture(model, (1, 3, 64, 64))

    out = result.gm(example_input((1, 3, 64, 64)))
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == (1, 3, 64, 64)
    assert result.report.parity_max_abs_diff < 1e-5


def test_mapping_output_needs_key_when_ambiguous():
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=True)
    with pytest.raises(InvalidArgumentError, match=r"keys \['aux', 'out'\]"):
        capture(model, (1, 3, 64, 64))
    result = capture(model, (1, 3, 64, 64), CaptureOptions(output_key="out"))
    assert result.report.parity_max_abs_diff < 1e-5


def test_metadata_survives_deepcopy():
    gm = capture(ConvReluInplace(), (1, 3, 8, 8)).gm
    copied = copy.deepcopy(gm)

    infos = [n.meta[META_KEY] for n in copied.graph.nodes]
    assert all(isinstance(info, NodeInfo) for info in infos)
    assert infos == [n.meta[META_KEY] for n in gm.graph.nodes]


def test_node_info_pickles():
    gm = capture(ConvReluInplace(), (1, 3, 8, 8)).gm
    infos = [n.meta[META_KEY] for n in gm.graph.nodes]
    assert pickle.loads(pickle.dumps(infos)) == infos


def test_capture_runs_in_eval_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    result = capture(model, (2, 3, 4, 4))

    assert result.report.parity_max_abs_diff == 0.0
    assert model.training, "capture must not switch the caller's module to eval"


@pytest.mark.parametrize("text, expected", [
    ("1x3x224x224", (1, 3, 224, 224)),
    ("2x16", (2, 16)),
    ("1, 3, 8, 8", (1, 3, 8, 8)),
])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["", "1x3xax4", "0x3x4x4", "1x-3"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(InvalidArgumentError, match="input shape"):
        parse_input_shape(text)
