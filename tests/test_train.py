"""Tests of stitch training on two small CNNs trained briefly on digits."""

import copy

import pytest
import torch
from torch import nn

from stitchc import capture
from stitchc.errors import TrainingError
from stitchc.passes.build import insert_stitches
from stitchc.runtime.data import load_data
from stitchc.runtime.train import TrainOptions, train_stitches

SHAPE = (1, 1, 16, 16)


class _SmallCnn(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, stride=2)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _fit(model, data, epochs=3):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_pair():
    splits = load_data("digits", SHAPE)
    torch.manual_seed(1)
    parent_a = _fit(_SmallCnn(8), splits.train)
    parent_b = _fit(_SmallCnn(12), splits.train)
    gm_a, gm_b = capture(parent_a, SHAPE).gm, capture(parent_b, SHAPE).gm
    pairs = [("conv1", "conv1", "conv1x1"), ("bn1", "bn1", "conv1x1"), ("conv2", "conv2", "conv1x1"),
             ("bn2", "bn2", "conv1x1"), ("mean", "mean", "linear")]
    return insert_stitches(gm_a, gm_b, pairs), splits


def test_training_lowers_every_mse_and_freezes_parents(trained_pair):
    net, splits = copy.deepcopy(trained_pair[0]), trained_pair[1]
    parents_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("gm.stitches")}
    net.train()
    steps = []
    report = train_stitches(net, splits.train, TrainOptions(samples=640, lr=3e-3),
                            progress=lambda step, total, loss: steps.append((step, total)))
    assert report.steps == 20
    assert steps[-1] == (20, 20)
    assert set(report.mse_after) == {f"stitch:{k}" for k in range(10)}
    for name, before in report.mse_before.items():
        assert report.mse_after[name] < before, name
    for key, value in net.state_dict().items():
        if key in parents_before:
            assert torch.equal(value, parents_before[key]), key


def test_lstsq_init_starts_lower(trained_pair):
    net, splits = copy.deepcopy(trained_pair[0]), trained_pair[1]
    report = train_stitches(net, splits.train, TrainOptions(samples=32, init="lstsq"))
    assert report.lstsq_fallbacks == ()
    for name, before in report.mse_before.items():
        assert report.mse_after_init[name] < before, name


def test_training_is_seeded(trained_pair):
    results = []
    for _ in range(2):
        net = copy.deepcopy(trained_pair[0])
        train_stitches(net, trained_pair[1].train, TrainOptions(samples=96, seed=3))
        results.append(net.stitches()["stitch:0"].weight.detach().clone())
    assert torch.equal(results[0], results[1])


def test_non_finite_loss_names_stitch(trained_pair):
    net = copy.deepcopy(trained_pair[0])
    with torch.no_grad():
        net.stitches()["stitch:3"].weight.fill_(float("inf"))
    with pytest.raises(TrainingError, match="stitch:3"):
        train_stitches(net, trained_pair[1].train, TrainOptions(samples=32))
