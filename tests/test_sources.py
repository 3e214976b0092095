"""Model sources: parsing, building, weight files, exported archives, capture files."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from stitchc import capture_source, load_model, parse_source, save_capture
from stitchc.capture import example_input
from stitchc.errors import InvalidArgumentError, UnsupportedModelError


def _output(model, shape=(1, 1, 16, 16)):
    with torch.no_grad():
        return model.eval()(example_input(shape))


def test_parse_options_as_literals():
    source = parse_source("timm:resnet18,num_classes=10,in_chans=1,drop_rate=0.1,weights=dir/w,x.pt")

    assert source.kind == "timm"
    assert source.name == "resnet18"
    assert dict(source.options) == {"num_classes": 10, "in_chans": 1, "drop_rate": 0.1, "weights": "dir/w,x.pt"}
    assert source.weights == "dir/w,x.pt"


def test_parse_rejects_unknown_prefix():
    with pytest.raises(InvalidArgumentError, match="unknown model source 'keras:resnet'"):
        parse_source("keras:resnet")


def test_timm_options_reach_the_model():
    model = load_model("timm:resnet18,num_classes=7,in_chans=1")
    assert model.conv1.in_channels == 1
    assert model.fc.out_features == 7


def test_random_timm_resnet_keeps_last_norm_nonzero():
    model = load_model("timm:resnet18,num_classes=10")
    assert model.layer1[0].bn2.weight.abs().sum() > 0


def test_unknown_option_lists_accepted():
    with pytest.raises(InvalidArgumentError, match=r"accepted options: .*num_classes.*in_chans"):
        load_model("timm:resnet18,colour=1")


def test_pretrained_without_file_is_an_error():
    with pytest.raises(InvalidArgumentError, match="weights=path/to/file.pth"):
        load_model("timm:resnet18,pretrained=True")


def test_unknown_architecture():
    with pytest.raises(UnsupportedModelError, match="timm has no architecture 'resnet9000'"):
        load_model("timm:resnet9000")


def test_torchvision_source():
    model = load_model("torchvision:mobilenet_v3_small,num_classes=10")
    assert model.classifier[-1].out_features == 10


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tmp_path, suffix):
    original = load_model("timm:resnet18,num_classes=10,in_chans=1")
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in original.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)

    loaded = load_model(f"timm:resnet18,num_classes=10,in_chans=1,weights={path}")

    assert torch.equal(_output(loaded), _output(original))


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(load_model("timm:resnet18,num_classes=10,in_chans=1").state_dict(), path)
    with pytest.raises(InvalidArgumentError, match="does not fit ResNet"):
        load_model(f"timm:resnet18,num_classes=5,in_chans=1,weights={path}")


def test_capture_file_round_trip(tmp_path):
    source = "timm:resnet18,num_classes=10,in_chans=1"
    original = load_model(source)
    path = tmp_path / "capture.pt"
    save_capture(path, source, original, (1, 1, 16, 16))

    content = torch.load(path, weights_only=True)
    loaded = load_model(str(path))

    assert content["source"] == source
    assert torch.equal(_output(loaded), _output(original))


def test_export_archive_round_trip(tmp_path):
    original = load_model("timm:resnet18,num_classes=10,in_chans=1")
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(original, (example_input((1, 1, 16, 16)),)), str(path))

    result = capture_source(str(path), (1, 1, 16, 16))

    assert torch.equal(result.gm(example_input((1, 1, 16, 16))), _output(original))


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    model = timm.create_model("resnet18", num_classes=10, in_chans=1)
    torch.save(model, path)

    with pytest.raises(UnsupportedModelError, match="--trust-pickle"):
        load_model(str(path))
    trusted = load_model(str(path), trust_pickle=True)
    assert torch.equal(_output(trusted), _output(model))


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="missing.pt2"):
        load_model("missing.pt2")


def test_state_dict_without_architecture(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(load_model("timm:resnet18,num_classes=10").state_dict(), path)
    with pytest.raises(UnsupportedModelError, match="without an architecture"):
        load_model(str(path))
