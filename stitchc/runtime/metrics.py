"""Evaluation metrics over logits: classification and semantic segmentation.

Classification: top-1 accuracy, mean cross-entropy loss and expected calibration error (ECE)
with equal-width confidence bins. Bin ``b`` of ``B`` contains the samples whose confidence (the
maximum softmax probability) lies in ``(b/B, (b+1)/B]``, and

    ECE = sum over bins of (n_b / N) * |accuracy_b - mean confidence_b|.

Segmentation: pixel accuracy and mean intersection over union (mIoU) from a confusion matrix.
Pixels whose target is the ignore label (255 by default) count nowhere. A class that appears in
neither the prediction nor the target has no IoU and is left out of the mean.

The functions take one batch. :class:`MetricAccumulator` sums the same statistics over many
batches, so an evaluator can stream a data set and get exactly the values it would get from
one call on the concatenated tensors (up to floating-point summation order).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from stitchc.errors import EvaluationError, InvalidArgumentError

__all__ = [
    "DEFAULT_ECE_BINS",
    "IGNORE_INDEX",
    "MetricAccumulator",
    "accuracy",
    "cross_entropy",
    "expected_calibration_error",
    "mean_iou",
    "pixel_accuracy",
]

logger = logging.getLogger(__name__)

DEFAULT_ECE_BINS = 15
"""Number of equal-width confidence bins for the expected calibration error."""

IGNORE_INDEX = 255
"""Segmentation target value that marks pixels excluded from every metric."""

_TASKS = ("classification", "segmentation")


class MetricAccumulator:
    """Sums metric statistics over batches of logits and targets.

    Args:
        task: ``"classification"`` (logits ``(N, K)``, targets ``(N,)``) or
            ``"segmentation"`` (logits ``(N, K, H, W)``, targets ``(N, H, W)``).
        num_classes: K, the number of logit channels every batch must have.
        num_bins: confidence bins for the expected calibration error (classification only).
        ignore_index: target value skipped by the segmentation metrics.

    :meth:`result` returns these keys:

    - classification: ``accuracy``, ``loss`` (mean cross-entropy in nats), ``ece`` and
      ``count`` (samples).
    - segmentation: ``pixel_accuracy``, ``mean_iou``, ``loss`` (mean cross-entropy over the
      pixels not ignored) and ``count`` (pixels not ignored).
    """

    def __init__(
        self,
        task: str,
        num_classes: int,
        *,
        num_bins: int = DEFAULT_ECE_BINS,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if task not in _TASKS:
            raise InvalidArgumentError(f"Unknown task {task!r}; expected one of {', '.join(_TASKS)}.")
        if num_classes < 1:
            raise InvalidArgumentError(f"num_classes must be at least 1, got {num_classes}.")
        if num_bins < 1:
            raise InvalidArgumentError(f"num_bins must be at least 1, got {num_bins}.")
        self.task = task
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.ignore_index = ignore_index

        # Running sums, kept on the CPU in float64 or int64 whatever device the logits are on.
        self._count = 0
        self._correct = 0
        self._loss_sum = 0.0
        # Per confidence bin: number of samples, sum of confidences, number correct.
        self._bin_count = torch.zeros(num_bins, dtype=torch.int64)
        self._bin_confidence = torch.zeros(num_bins, dtype=torch.float64)
        self._bin_correct = torch.zeros(num_bins, dtype=torch.int64)
        # confusion[t, p]: pixels with target class t predicted as class p.
        self._confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of logits and targets to the running sums.

        Raises:
            InvalidArgumentError: the shapes do not match or a label is out of range.
            EvaluationError: a logit is NaN or infinite, so no metric of this batch would be a number.
        """
        if not bool(torch.isfinite(logits).all()):
            raise EvaluationError(
                f"Logits of shape {tuple(logits.shape)} contain NaN or infinite values; "
                "the model's output is not finite, so this evaluation has no score."
            )
        if self.task == "classification":
            self._update_classification(logits, target)
        else:
            self._update_segmentation(logits, target)

    def result(self) -> dict[str, float]:
        """Return the metrics over every batch added so far.

        Raises:
            EvaluationError: no sample (or, for segmentation, no pixel that is not ignored)
                has been added.
        """
        if self._count == 0:
            raise EvaluationError(
                f"No {'samples' if self.task == 'classification' else 'non-ignored pixels'} "
                "were added to the metric accumulator; evaluate on a non-empty data set."
            )
        if self.task == "classification":
            return {
                "accuracy": self._correct / self._count,
                "loss": self._loss_sum / self._count,
                "ece": _ece_from_bins(self._bin_count, self._bin_confidence, self._bin_correct),
                "count": float(self._count),
            }
        return {
            "pixel_accuracy": self._correct / self._count,
            "mean_iou": _mean_iou_from_confusion(self._confusion),
            "loss": self._loss_sum / self._count,
            "count": float(self._count),
        }

    def _update_classification(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.dim() != 2 or target.dim() != 1 or logits.shape[0] != target.shape[0]:
            raise InvalidArgumentError(
                f"Classification metrics expect logits (N, K) and targets (N,), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}."
            )
        self._check_classes(logits, target, target)
        target = target.to(device=logits.device, dtype=torch.int64)
        logits = logits.to(torch.float64)

        probabilities = logits.softmax(dim=1)
        confidence, prediction = probabilities.max(dim=1)
        correct = prediction == target
        self._count += target.numel()
        self._correct += int(correct.sum())
        self._loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))

        # Bin b contains confidences in (b/B, (b+1)/B]: ceil(c * B) - 1, clamped for c == 0.
        bins = (torch.ceil(confidence * self.num_bins).to(torch.int64) - 1).clamp(0, self.num_bins - 1)
        self._bin_count += torch.bincount(bins, minlength=self.num_bins).cpu()
        self._bin_confidence += torch.bincount(bins, weights=confidence, minlength=self.num_bins).cpu()
        self._bin_correct += torch.bincount(bins[correct], minlength=self.num_bins).cpu()

    def _update_segmentation(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if (
            logits.dim() != 4
            or target.dim() != 3
            or logits.shape[0] != target.shape[0]
            or logits.shape[2:] != target.shape[1:]
        ):
            raise InvalidArgumentError(
                f"Segmentation metrics expect logits (N, K, H, W) and targets (N, H, W), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}."
            )
        target = target.to(device=logits.device, dtype=torch.int64)
        valid = target != self.ignore_index
        self._check_classes(logits, target, target[valid])

        # Cross-entropy sums over the pixels not ignored, so the mean weights every pixel equally.
        self._loss_sum += float(
            F.cross_entropy(logits.to(torch.float64), target, ignore_index=self.ignore_index, reduction="sum")
        )
        prediction = logits.argmax(dim=1)[valid]
        labels = target[valid]
        self._count += labels.numel()
        self._correct += int((prediction == labels).sum())
        pairs = labels * self.num_classes + prediction
        counts = torch.bincount(pairs, minlength=self.num_classes * self.num_classes)
        self._confusion += counts.cpu().reshape(self.num_classes, self.num_classes)

    def _check_classes(self, logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> None:
        if logits.shape[1] != self.num_classes:
            raise InvalidArgumentError(
                f"Logits have {logits.shape[1]} classes but the accumulator was made for "
                f"{self.num_classes}; pass num_classes={logits.shape[1]} or check the model's output."
            )
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise InvalidArgumentError(f"Targets must be integer class indices, got dtype {target.dtype}.")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InvalidArgumentError(
                f"Target labels range over [{int(labels.min())}, {int(labels.max())}] but must lie "
                f"in [0, {self.num_classes - 1}]"
                + (f" or equal the ignore label {self.ignore_index}" if self.task == "segmentation" else "")
                + "."
            )


def _ece_from_bins(count: torch.Tensor, confidence_sum: torch.Tensor, correct: torch.Tensor) -> float:
    # sum_b (n_b / N) * |correct_b / n_b - confidence_b / n_b| = sum_b |correct_b - confidence_b| / N
    total = int(count.sum())
    gap = (correct.to(torch.float64) - confidence_sum).abs().sum()
    return float(gap) / total


def _mean_iou_from_confusion(confusion: torch.Tensor) -> float:
    true_positive = confusion.diagonal().to(torch.float64)
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - confusion.diagonal()
    # At least one pixel was counted (result() checks), so at least one class is present.
    present = union > 0
    return float((true_positive[present] / union[present]).mean())


def _run(task: str, logits: torch.Tensor, target: torch.Tensor, **kwargs: int) -> dict[str, float]:
    if logits.dim() < 2:
        raise InvalidArgumentError(f"Logits need a class dimension, got shape {tuple(logits.shape)}.")
    accumulator = MetricAccumulator(task, logits.shape[1], **kwargs)
    accumulator.update(logits, target)
    return accumulator.result()


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Return the fraction of samples whose arg-max logit equals the target, for ``(N, K)`` logits."""
    return _run("classification", logits, target)["accuracy"]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Return the mean cross-entropy in nats of ``(N, K)`` logits against ``(N,)`` class indices."""
    return _run("classification", logits, target)["loss"]


def expected_calibration_error(
    logits: torch.Tensor, target: torch.Tensor, num_bins: int = DEFAULT_ECE_BINS
) -> float:
    """Return the expected calibration error over ``num_bins`` equal-width confidence bins.

    Each bin contributes ``|accuracy - mean confidence|`` of its samples, weighted by its share
    of all samples; confidence is the maximum softmax probability.
    """
    return _run("classification", logits, target, num_bins=num_bins)["ece"]


def pixel_accuracy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> float:
    """Return the fraction of non-ignored pixels whose arg-max over ``(N, K, H, W)`` logits is right."""
    return _run("segmentation", logits, target, ignore_index=ignore_index)["pixel_accuracy"]


def mean_iou(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> float:
    """Return the mean IoU over the classes present in the prediction or the target.

    Pixels labelled ``ignore_index`` count in no class. Raises EvaluationError when every
    pixel is ignored.
    """
    return _run("segmentation", logits, target, ignore_index=ignore_index)["mean_iou"]
