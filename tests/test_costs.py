"""MAC and parameter counts against FlopCounterMode and hand-computed values."""

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from stitchc import capture, total_macs, total_params
from stitchc.capture import example_input
from stitchc.costs import matmul_macs, register_module_macs, sdpa_macs


def _flop_counter_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    # On the CPU, FlopCounterMode has no rule for the fused attention kernel, so the
    # reference runs attention through the math backend, which it counts as bmm.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.eval()(example_input(shape))
    return counter.get_total_flops() // 2


ZOO = [
    ("timm resnet18", lambda: timm.create_model("resnet18", num_classes=10), (1, 3, 64, 64)),
    ("timm resnet50", lambda: timm.create_model("resnet50"), (1, 3, 64, 64)),
    ("timm resnext50_32x4d", lambda: timm.create_model("resnext50_32x4d"), (1, 3, 64, 64)),
    ("timm mobilenetv3_large_100", lambda: timm.create_model("mobilenetv3_large_100"), (1, 3, 64, 64)),
    ("timm efficientnet_b0", lambda: timm.create_model("efficientnet_b0"), (1, 3, 64, 64)),
    ("timm vit_tiny_patch16_224", lambda: timm.create_model("vit_tiny_patch16_224", img_size=64), (1, 3, 64, 64)),
    ("torchvision deeplabv3_mobilenet_v3_large",
     lambda: torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
         weights=None, weights_backbone=None, aux_loss=False), (1, 3, 64, 64)),
    ("torchvision convnext_tiny", lambda: torchvision.models.convnext_tiny(), (1, 3, 64, 64)),
]


@pytest.mark.parametrize("name, build, shape", ZOO, ids=[entry[0] for entry in ZOO])
def test_macs_and_params_match_flop_counter(name, build, shape):
    model = build()
    result = capture(model, shape)

    assert total_macs(result.gm) == _flop_counter_macs(model, shape)
    assert total_params(result.gm) == sum(p.numel() for p in model.parameters())
    assert result.report.parity_max_abs_diff < 1e-5
    assert result.report.flop_counted == ()


def test_resnet50_at_224_is_4089_gmacs():
    result = capture(timm.create_model("resnet50"), (1, 3, 224, 224))
    assert total_macs(result.gm) == 4_089_184_256


def test_counts_ignore_requires_grad_and_mode():
    model = timm.create_model("resnet18", num_classes=10)
    frozen = timm.create_model("resnet18", num_classes=10)
    frozen.requires_grad_(False)

    trained = capture(model.train(), (1, 3, 32, 32))
    no_grad = capture(frozen.eval(), (1, 3, 32, 32))

    assert total_macs(trained.gm) == total_macs(no_grad.gm)
    assert total_params(trained.gm) == total_params(no_grad.gm)


def test_grouped_conv_macs_by_hand():
    # out 1x8x4x4 = 128 elements, each 8/4 = 2 input channels x 3x3 kernel = 18 MACs.
    model = nn.Conv2d(8, 8, 3, padding=1, groups=4)
    assert total_macs(capture(model, (1, 8, 4, 4)).gm) == 128 * 18


def test_depthwise_conv_macs_by_hand():
    # out 2x16x5x5 = 800 elements, each 1 channel x 3x3 = 9 MACs.
    model = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    assert total_macs(capture(model, (2, 16, 5, 5)).gm) == 800 * 9


def test_multihead_attention_macs_by_hand():
    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    # batch 2, length 5, embed 32, 4 heads of 8:
    # projections q, k, v: 3 * 2*5*32*32 = 30720; Q·Kᵀ and A·V: 2 * 2*4*5*5*8 = 3200;
    # output projection: 2*5*32*32 = 10240.
    assert total_macs(capture(SelfAttention(), (2, 5, 32)).gm) == 30720 + 3200 + 10240


def test_matmul_and_sdpa_formulas_by_hand():
    assert matmul_macs((2, 3, 4), (4, 5)) == 2 * 3 * 4 * 5
    assert matmul_macs((7,), (7, 3)) == 7 * 3
    assert sdpa_macs((1, 2, 6, 8), (1, 2, 9, 8), (1, 2, 9, 4)) == 2 * 6 * 9 * (8 + 4)


def test_exported_archive_counts_like_the_module(tmp_path):
    model = timm.create_model("resnet18", num_classes=10).eval()
    exported = torch.export.export(model, (example_input((1, 3, 32, 32)),))

    from_export = capture(exported.module(), (1, 3, 32, 32))
    from_module = capture(model, (1, 3, 32, 32))

    assert total_macs(from_export.gm) == total_macs(from_module.gm)


def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_module_macs(nn.Conv2d)(lambda module, args, kwargs, output: 0)


def test_unregistered_leaf_falls_back_to_flop_counter():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 6)

        def forward(self, x):
            if x.sum() > 0:
                return self.linear(x)
            return self.linear(x) * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.custom = Custom()

        def forward(self, x):
            return self.custom(x)

    result = capture(Net(), (3, 4))
    assert result.report.flop_counted == ("custom",)
    assert total_macs(result.gm) == 3 * 4 * 6
