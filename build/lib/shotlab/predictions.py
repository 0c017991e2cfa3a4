"""Per-example predictions: a run's label scores -> the numbers in its metrics.json."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


def test_metrics(scores: torch.Tensor, labels, num_classes: int) -> dict:
    """Accuracy, macro-F1 and the confusion matrix of (N, C) label scores (prediction: argmax)."""
    predictions, target = scores.argmax(-1), torch.as_tensor(labels)
    return {
        "test_acc": multiclass_accuracy(predictions, target, num_classes, average="micro").item(),
        "test_f1": multiclass_f1_score(predictions, target, num_classes, average="macro").item(),
        "confusion": multiclass_confusion_matrix(predictions, target, num_classes).tolist(),
    }
