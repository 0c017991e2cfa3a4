"""Per-example predictions: a run's label scores -> predictions.jsonl and the numbers in its
metrics.json, so every number a run reports can be recomputed from its predictions file.

predictions.jsonl, one object per line, test rows (in the test split's order) then dev rows:
    {"split": "test" | "dev", "id": str, "label": gold int, "prediction": int, "scores": [float per label]}
"""

from __future__ import annotations

import json
from pathlib import Path

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


def accuracy(scores: torch.Tensor, labels) -> float:
    """The fraction of argmax predictions equal to the gold labels."""
    return (scores.argmax(-1) == torch.as_tensor(labels)).float().mean().item()


def prediction_rows(splits: dict, scores: dict[str, torch.Tensor]) -> list[dict]:
    """One row per example of each scored split: {"split", "id", "label", "prediction", "scores"}."""
    rows = []
    for name, split in splits.items():
        if name not in scores:
            continue
        predicted = scores[name].argmax(-1).tolist()
        for rid, label, pred, row in zip(split.ids, split.labels.tolist(), predicted, scores[name].tolist()):
            rows.append({"split": name, "id": rid, "label": label, "prediction": pred, "scores": [round(s, 6) for s in row]})
    return rows


def write_predictions(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
