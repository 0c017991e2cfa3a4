"""Per-example predictions: a run's label scores -> predictions.jsonl and the numbers in its
metrics.json, so every number a run reports can be recomputed from its predictions file.

predictions.jsonl, one object per line, test rows (in the test split's order), then dev rows, then
the rows of the validation split's held-out pool (which only the report's selection regret reads),
then each eval task's test rows (out of domain, split "eval:<task>"):
    {"split": "test" | "dev" | "heldout" | "eval:<task>", "id": str, "label": gold int,
     "prediction": int, "scores": [float per label]}
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

from shotlab.data.sampling import EVAL
from shotlab.files import write_text
from shotlab.runfolder import writes


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


def gold_logprob(scores: torch.Tensor, labels) -> float:
    """The mean log-probability of the gold label, the label scores read as logits (softmax over
    the labels): the dev sample's continuous criterion, which breaks ties of its accuracy."""
    logp = torch.log_softmax(scores.double(), -1)
    return logp.gather(1, torch.as_tensor(labels).long().view(-1, 1)).mean().item()


def sample_metrics(sample, scores: dict[str, torch.Tensor]) -> dict:
    """What metrics.json says of a run's scores: test accuracy, macro-F1 and confusion, dev accuracy
    and gold-label log-probability (None without a dev sample), the label budget (training + dev
    labels), the test split's chance, the size of the held-out pool it scored, and per eval task its
    test accuracy, macro-F1, confusion, size and chance ("eval")."""
    test, dev, classes = sample.test, sample.dev, sample.task.num_classes
    num_dev = len(dev) if dev is not None else 0
    evals = {name: {**test_metrics(scores[f"{EVAL}{name}"], split.labels, classes), "num_test": len(split),
                    "chance": max(split.class_counts(classes)) / len(split)}
             for name, split in sample.evals.items()}
    return {**test_metrics(scores["test"], test.labels, classes),
            "dev_acc": accuracy(scores["dev"], dev.labels) if num_dev else None,
            "dev_logprob": gold_logprob(scores["dev"], dev.labels) if num_dev else None,
            "num_heldout": len(scores["heldout"]) if "heldout" in scores else 0,
            "num_train": len(sample.train), "num_dev": num_dev, "num_test": len(test),
            "label_budget": len(sample.train) + num_dev, "chance": max(test.class_counts(classes)) / len(test),
            "label_names": list(sample.task.label_names), **({"eval": evals} if evals else {})}


def write_predictions(path: Path, sample, scores: dict[str, torch.Tensor],
                      columns: dict[str, list[dict]] | None = None) -> list[dict]:
    """Write predictions.jsonl (test, dev, held-out and eval-task rows; only the writing process of
    a DDP run) and return its rows; `columns` (split -> a dict per example) adds fields to them."""
    rows = []
    for name, split in sample.scored().items():
        if name not in scores:
            continue
        predicted = scores[name].argmax(-1).tolist()
        more = (columns or {}).get(name) or [{}] * len(split)
        for rid, label, pred, row, extra in zip(split.ids, split.labels.tolist(), predicted, scores[name].tolist(),
                                                more):
            rows.append({"split": name, "id": rid, "label": label, "prediction": pred,
                         "scores": [round(s, 6) for s in row], **extra})
    if writes():
        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows
