"""Metrics against values computed by hand, with the arithmetic inline."""

import math

import pytest
import torch

from stitchc.errors import EvaluationError, InvalidArgumentError
from stitchc.runtime.metrics import (
    MetricAccumulator,
    accuracy,
    cross_entropy,
    expected_calibration_error,
    mean_iou,
    pixel_accuracy,
)

# Five samples over three classes. The logits are log-probabilities, so the softmax returns
# exactly these rows (up to rounding). Confidence is the row maximum.
PROBABILITIES = torch.tensor(
    [
        [0.90, 0.05, 0.05],  # target 0, predicted 0: correct, confidence 0.90
        [0.62, 0.28, 0.10],  # target 1, predicted 0: wrong,   confidence 0.62
        [0.20, 0.70, 0.10],  # target 1, predicted 1: correct, confidence 0.70
        [0.50, 0.25, 0.25],  # target 2, predicted 0: wrong,   confidence 0.50
        [0.05, 0.05, 0.90],  # target 0, predicted 2: wrong,   confidence 0.90
    ],
    dtype=torch.float64,
)
LOGITS = PROBABILITIES.log()
TARGETS = torch.tensor([0, 1, 1, 2, 0])


def test_accuracy_counts_argmax_hits():
    # Samples 0 and 2 are right: 2 / 5.
    assert accuracy(LOGITS, TARGETS) == pytest.approx(0.4)


def test_cross_entropy_is_mean_negative_log_probability():
    expected = -(math.log(0.90) + math.log(0.28) + math.log(0.70) + math.log(0.25) + math.log(0.05)) / 5
    assert cross_entropy(LOGITS, TARGETS) == pytest.approx(expected)


def test_ece_weights_bins_by_size():
    # Bin b of 15 contains confidences in (b/15, (b+1)/15]:
    #   0.90 -> 13.5 -> bin 13 (samples 0 and 4), 0.62 -> 9.3 -> bin 9,
    #   0.70 -> 10.5 -> bin 10, 0.50 -> 7.5 -> bin 7.
    # bin 13: n=2, accuracy 1/2, confidence 0.90 -> 2/5 * |0.5 - 0.9| = 0.16
    # bin 9:  n=1, accuracy 0,   confidence 0.62 -> 1/5 * 0.62       = 0.124
    # bin 10: n=1, accuracy 1,   confidence 0.70 -> 1/5 * 0.30       = 0.06
    # bin 7:  n=1, accuracy 0,   confidence 0.50 -> 1/5 * 0.50       = 0.10
    assert expected_calibration_error(LOGITS, TARGETS) == pytest.approx(0.16 + 0.124 + 0.06 + 0.10)


def test_ece_bin_count_changes_grouping():
    # With 1 bin, all five share it: |2/5 - (0.9 + 0.62 + 0.7 + 0.5 + 0.9) / 5| = |0.4 - 0.724|.
    assert expected_calibration_error(LOGITS, TARGETS, num_bins=1) == pytest.approx(0.324)


def test_ece_zero_for_confident_correct_predictions():
    # Softmax of (100, 0) is 1.0 in float64, so confidence 1.0 lands in the last bin, all correct.
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
    assert expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-12)


def test_accumulator_streams_like_one_batch():
    accumulator = MetricAccumulator("classification", 3)
    accumulator.update(LOGITS[:2], TARGETS[:2])
    accumulator.update(LOGITS[2:], TARGETS[2:])
    result = accumulator.result()

    assert result["count"] == 5
    assert result["accuracy"] == pytest.approx(accuracy(LOGITS, TARGETS))
    assert result["loss"] == pytest.approx(cross_entropy(LOGITS, TARGETS))
    assert result["ece"] == pytest.approx(0.444)


# A 2x3 image over four classes; class 3 appears in neither prediction nor target.
SEGMENTATION_TARGET = torch.tensor([[[0, 0, 1], [1, 255, 0]]])
SEGMENTATION_PREDICTION = torch.tensor([[[0, 1, 1], [2, 2, 0]]])


def _one_hot_logits(prediction: torch.Tensor, num_classes: int) -> torch.Tensor:
    # (N, H, W) class indices -> (N, K, H, W) logits whose argmax is the prediction.
    return torch.nn.functional.one_hot(prediction, num_classes).permute(0, 3, 1, 2).to(torch.float32) * 10


def test_pixel_accuracy_ignores_label_255():
    logits = _one_hot_logits(SEGMENTATION_PREDICTION, 4)
    # Five pixels are not ignored; (0,0), (0,2) and (1,2) are right: 3 / 5.
    assert pixel_accuracy(logits, SEGMENTATION_TARGET) == pytest.approx(0.6)


def test_mean_iou_skips_absent_classes():
    logits = _one_hot_logits(SEGMENTATION_PREDICTION, 4)
    # Over the five pixels not ignored (the ignored pixel's prediction 2 counts nowhere):
    #   class 0: target {(0,0),(0,1),(1,2)}, prediction {(0,0),(1,2)}: IoU 2 / 3
    #   class 1: target {(0,2),(1,0)},       prediction {(0,1),(0,2)}: IoU 1 / 3
    #   class 2: target {},                  prediction {(1,0)}:       IoU 0 / 1
    #   class 3: in neither, left out (including it as 0 would give 0.25).
    # Mean over three classes: (2/3 + 1/3 + 0) / 3 = 1/3.
    assert mean_iou(logits, SEGMENTATION_TARGET) == pytest.approx(1 / 3)


def test_segmentation_loss_skips_ignored_pixels():
    logits = _one_hot_logits(SEGMENTATION_PREDICTION, 4)
    changed = logits.clone()
    changed[0, :, 1, 1] = torch.tensor([50.0, -50.0, 3.0, 7.0])  # the ignored pixel only
    first = MetricAccumulator("segmentation", 4)
    first.update(logits, SEGMENTATION_TARGET)
    second = MetricAccumulator("segmentation", 4)
    second.update(changed, SEGMENTATION_TARGET)

    assert first.result()["loss"] == pytest.approx(second.result()["loss"])
    assert first.result()["count"] == 5


def test_segmentation_accumulator_streams_batches():
    target = torch.cat([SEGMENTATION_TARGET, SEGMENTATION_TARGET.flip(2)])
    prediction = torch.cat([SEGMENTATION_PREDICTION, SEGMENTATION_PREDICTION.flip(2)])
    logits = _one_hot_logits(prediction, 4)
    accumulator = MetricAccumulator("segmentation", 4)
    accumulator.update(logits[:1], target[:1])
    accumulator.update(logits[1:], target[1:])

    # Flipping prediction and target together keeps every count, so both batches give 1/3.
    assert accumulator.result()["mean_iou"] == pytest.approx(mean_iou(logits, target))
    assert accumulator.result()["mean_iou"] == pytest.approx(1 / 3)
    assert accumulator.result()["pixel_accuracy"] == pytest.approx(0.6)


def test_labels_out_of_range_rejected():
    with pytest.raises(InvalidArgumentError, match=r"range over \[0, 3\].*\[0, 2\]"):
        accuracy(LOGITS, torch.tensor([0, 1, 3, 2, 0]))


def test_segmentation_label_out_of_range_rejected():
    target = SEGMENTATION_TARGET.clone()
    target[0, 0, 0] = 4
    with pytest.raises(InvalidArgumentError, match="ignore label 255"):
        mean_iou(_one_hot_logits(SEGMENTATION_PREDICTION, 4), target)


def test_mismatched_shapes_rejected():
    with pytest.raises(InvalidArgumentError, match=r"logits \(N, K\) and targets \(N,\)"):
        accuracy(LOGITS, TARGETS[:4])


def test_wrong_class_count_rejected():
    accumulator = MetricAccumulator("classification", 4)
    with pytest.raises(InvalidArgumentError, match="Logits have 3 classes"):
        accumulator.update(LOGITS, TARGETS)


def test_float_targets_rejected():
    with pytest.raises(InvalidArgumentError, match="integer class indices"):
        accuracy(LOGITS, TARGETS.to(torch.float32))


def test_non_finite_logits_raise():
    logits = LOGITS.clone()
    logits[3, 1] = float("nan")
    with pytest.raises(EvaluationError, match="contain NaN or infinite values"):
        accuracy(logits, TARGETS)


def test_empty_accumulator_raises():
    with pytest.raises(EvaluationError, match="No samples"):
        MetricAccumulator("classification", 3).result()


def test_all_ignored_pixels_raise():
    target = torch.full((1, 2, 3), 255)
    with pytest.raises(EvaluationError, match="non-ignored pixels"):
        mean_iou(_one_hot_logits(SEGMENTATION_PREDICTION, 4), target)


def test_unknown_task_rejected():
    with pytest.raises(InvalidArgumentError, match="Unknown task 'detection'"):
        MetricAccumulator("detection", 3)
