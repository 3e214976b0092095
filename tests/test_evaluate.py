"""The cached evaluator and the supernetwork search problem, on a real random-weight pair."""

import random

import pytest
import torch

from stitchc import capture_source
from stitchc.errors import EvaluationError
from stitchc.passes.build import insert_stitches
from stitchc.passes.candidates import find_candidates, to_digraph
from stitchc.passes.genotype import active_positions
from stitchc.passes.matching import solve_matching
from stitchc.passes.prune import prune_to_genotype
from stitchc.passes.supernet_file import save_supernet
from stitchc.runtime.data import DataOptions, load_data
from stitchc.runtime.evaluate import (
    EvalOptions,
    SubnetEvaluator,
    SupernetProblemFactory,
    evaluate_module,
    evaluate_offspring,
)
from stitchc.runtime.search import Problem

SHAPE = (1, 1, 16, 16)
DATA_OPTIONS = DataOptions(max_train=64, max_val=48, max_test=48)


@pytest.fixture(scope="module")
def supernet():
    gm_a = capture_source("timm:resnet10t,num_classes=10,in_chans=1", SHAPE).gm
    gm_b = capture_source("timm:mobilenetv3_small_050,num_classes=10,in_chans=1", SHAPE).gm
    candidates = find_candidates(gm_a, gm_b)
    result = solve_matching(to_digraph(gm_a), to_digraph(gm_b), candidates)
    by_pair = {(c.a, c.b): c for c in candidates}
    return insert_stitches(gm_a, gm_b, [by_pair[tuple(p)] for p in result.pairs])


@pytest.fixture(scope="module")
def splits():
    return load_data("digits", SHAPE, DATA_OPTIONS)


def _random_genotypes(length: int, count: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(count):
        bits = [1 if rng.random() < 0.08 else 0 for _ in range(length - 1)]
        yield tuple(bits) + (rng.randrange(3),)


def test_cached_evaluation_equals_plain_forward(supernet, splits):
    evaluator = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes, EvalOptions(batch_size=20))

    for genotype in _random_genotypes(supernet.genotype_length, 6):
        cached = evaluator.evaluate(genotype)
        plain = evaluate_module(prune_to_genotype(supernet, genotype), splits.val, splits.task, splits.num_classes)
        assert cached["accuracy"] == plain["accuracy"]
        assert cached["loss"] == pytest.approx(plain["loss"], abs=1e-5)
        assert cached["ece"] == pytest.approx(plain["ece"], abs=1e-5)


def test_parents_and_ensemble_costs(supernet, splits):
    evaluator = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes)
    zeros = (0,) * (supernet.genotype_length - 1)

    parent_a = evaluator.evaluate(zeros + (0,))
    parent_b = evaluator.evaluate(zeros + (1,))
    ensemble = evaluator.evaluate(zeros + (2,))

    assert ensemble["macs"] == parent_a["macs"] + parent_b["macs"]
    assert ensemble["params"] == parent_a["params"] + parent_b["params"]


def test_memoized_by_active_positions(supernet, splits):
    evaluator = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes)
    genotype = next(_random_genotypes(supernet.genotype_length, 1, seed=3))
    active = active_positions(supernet, genotype)
    inactive = next(p for p in range(supernet.genotype_length - 1) if p not in active)
    flipped = list(genotype)
    flipped[inactive] = 1 - flipped[inactive]

    first = evaluator.evaluate(genotype)
    second = evaluator.evaluate(flipped)

    assert first["memoized"] is False
    assert second["memoized"] is True
    assert evaluator.evaluations == 1
    assert second["accuracy"] == first["accuracy"]


def test_output_only_change_is_evaluated(supernet, splits):
    evaluator = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes)
    zeros = (0,) * (supernet.genotype_length - 1)

    evaluator.evaluate(zeros + (0,))
    result = evaluator.evaluate(zeros + (1,))

    assert result["memoized"] is False
    assert evaluator.evaluations == 2


def test_onnxruntime_backend_agrees(supernet, splits):
    genotype = next(_random_genotypes(supernet.genotype_length, 1, seed=5))
    torch_result = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes).evaluate(genotype)
    onnx_result = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes,
                                  EvalOptions(backend="onnxruntime")).evaluate(genotype)

    assert onnx_result["accuracy"] == torch_result["accuracy"]
    assert onnx_result["loss"] == pytest.approx(torch_result["loss"], abs=1e-4)
    assert onnx_result["macs"] == torch_result["macs"]


def test_non_finite_output_is_an_evaluation_error(supernet, splits):
    evaluator = SubnetEvaluator(supernet, splits.val, splits.task, splits.num_classes)
    stitch_label, stitch = next(iter(supernet.stitches().items()))
    position = int(stitch_label.split(":")[1])
    genotype = [0] * supernet.genotype_length
    genotype[position] = 1
    genotype[-1] = position % 2  # the parent whose layer the stitch feeds
    saved = {key: value.clone() for key, value in stitch.state_dict().items()}
    try:
        with torch.no_grad():
            for parameter in stitch.parameters():
                parameter.fill_(float("nan"))
        with pytest.raises(EvaluationError):
            evaluator.evaluate(genotype)
    finally:
        stitch.load_state_dict(saved)


def test_problem_protocol_and_identity(supernet, splits, tmp_path):
    path = tmp_path / "net.stitch"
    save_supernet(path, supernet)
    factory = SupernetProblemFactory(str(path), "digits", DATA_OPTIONS)
    problem = factory()

    assert isinstance(problem, Problem)
    assert problem.genotype_length == supernet.genotype_length
    assert problem.alphabet_sizes[-1] == 3
    assert set(problem.alphabet_sizes[:-1]) == {2}
    other = SupernetProblemFactory(str(path), "digits", DataOptions(seed=1, max_train=64, max_val=48, max_test=48))
    assert other.identity() != factory.identity()
    references = problem.reference_points()
    assert set(references) == {"A", "B", "ensemble"}
    assert references["ensemble"]["macs"] == references["A"]["macs"] + references["B"]["macs"]


def test_evaluate_offspring_on_test_split(supernet, tmp_path):
    path = tmp_path / "net.stitch"
    save_supernet(path, supernet)
    genotype = "".join(map(str, next(_random_genotypes(supernet.genotype_length, 1, seed=7))))

    result = evaluate_offspring(str(path), genotype, "digits", DATA_OPTIONS, EvalOptions(split="test"))

    assert result["count"] == 48
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["macs"] == sum(
        info.macs for info in (n.meta["stitchc"] for n in prune_to_genotype(supernet, genotype).graph.nodes))
