"""k-shot sampling: which labelled examples a run may learn from, and which it selects on.

`sample_k` is a pure function of (labels, k, seed): numpy's PCG64 stream is stable across
versions and platforms, so the same split seed picks the same examples on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shotlab import ShotlabError
from shotlab.data.tasks import Split, Task


def sample_k(
    labels: np.ndarray,
    k: int | None,
    seed: int,
    per_class: bool = True,
    label_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices (sorted) of k examples per class, or k in total stratified as evenly as the
    classes allow (`per_class=False`); k=None takes everything, k=0 nothing."""
    labels = np.asarray(labels)
    if k is None:
        return np.arange(len(labels))
    if k < 0:
        raise ShotlabError(f"regime.k must be >= 0, got {k}")
    classes = np.arange(int(labels.max()) + 1) if len(labels) else np.arange(0)
    names = list(label_names) if label_names is not None else [str(c) for c in classes]
    sizes = np.bincount(labels, minlength=len(classes))
    rng = np.random.default_rng(seed)

    if per_class:
        quota = np.full(len(classes), k)
        for c in classes:
            if sizes[c] < k:
                raise ShotlabError(
                    f"k={k} per class is more than class {names[c]!r} has ({sizes[c]} examples); lower regime.k"
                )
    else:
        if k > len(labels):
            raise ShotlabError(f"k={k} in total is more than the {len(labels)} examples; lower regime.k")
        # Round-robin over the classes in a seeded order, skipping classes already used up.
        quota = np.zeros(len(classes), dtype=int)
        order = rng.permutation(classes)
        while quota.sum() < k:
            for c in order:
                if quota.sum() < k and quota[c] < sizes[c]:
                    quota[c] += 1

    picked = [rng.choice(np.flatnonzero(labels == c), size=quota[c], replace=False) for c in classes]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


def ids_hash(ids: Sequence[str]) -> str:
    """A short fingerprint of a set of example ids (order-free)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


EVAL = "eval:"  # an eval task's split name: eval:<task name>
HELDOUT_SEED = 0  # the held-out pool is the same for every split seed, k and method


def heldout_index(labels: np.ndarray, size: int) -> np.ndarray:
    """Indices (sorted) of the validation split's held-out pool: `size` examples stratified over
    the classes, drawn with HELDOUT_SEED, at most half the split (the rest is for dev samples)."""
    size = min(size, len(labels) // 2)
    return sample_k(labels, size, HELDOUT_SEED, per_class=False) if size > 0 else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Sample:
    """What one run may see: its training sample, its dev sample, the (fixed) test split, and the
    validation split's held-out pool.

    The held-out pool is a fixed part of the validation split (the same for every run) that no
    dev sample draws from: the report scores every candidate on it to measure what a choice made
    on the dev sample costs (selection regret). Nothing chooses on it. The dev sample is drawn
    from the rest of the validation split with the same split seed and the same size as the
    training sample (k per class, fewer where a class is smaller); full-data runs get all of the
    rest; k=0 gets none. It selects checkpoints and hyper-parameters.
    """

    task: Task
    seed: int
    train: Split
    dev: Split | None
    test: Split
    heldout: Split | None = None
    evals: dict[str, Split] = field(default_factory=dict)  # eval task name -> its test split (out of domain)

    def scored(self) -> dict[str, Split]:
        """Every split a run scores, by its name in predictions.jsonl, in that file's order: test, dev,
        heldout, then eval:<task> for each eval task; empty ones left out."""
        parts = {"test": self.test, "dev": self.dev, "heldout": self.heldout,
                 **{f"{EVAL}{name}": split for name, split in self.evals.items()}}
        return {name: split for name, split in parts.items() if split is not None and len(split)}

    def extra_scored(self) -> dict[str, Split]:
        """The splits scored besides test and dev: the held-out pool and the eval tasks."""
        return {name: split for name, split in self.scored().items() if name not in ("test", "dev")}

    def record(self) -> dict:
        """What split.json holds: the chosen example ids and their hash."""
        return {
            "task": self.task.name,
            "seed": self.seed,
            "train_ids": self.train.ids,
            "train_hash": ids_hash(self.train.ids),
            "validation_ids": self.dev.ids if self.dev is not None else [],
            "heldout_hash": ids_hash(self.heldout.ids) if self.heldout is not None else None,
            "test_hash": ids_hash(self.test.ids),
            "eval_hashes": {name: ids_hash(split.ids) for name, split in self.evals.items()},
        }


def draw_sample(task: Task, k: int | None, seed: int, per_class: bool = True, heldout_size: int = 0) -> Sample:
    """The run's sample, a pure function of (task, k, seed, heldout_size): k too large fails here,
    before any model loads."""
    train = task.train.subset(sample_k(task.train.labels, k, seed, per_class, task.label_names))
    pool = heldout_index(task.validation.labels, heldout_size)
    rest = np.setdiff1d(np.arange(len(task.validation)), pool)
    heldout = task.validation.subset(pool) if len(pool) else None
    validation = task.validation.subset(rest)
    dev = None
    if k is None:
        dev = validation
    elif k > 0:
        dev_k = min(k, int(min(validation.class_counts(task.num_classes)))) if per_class else k
        dev = validation.subset(sample_k(validation.labels, dev_k, seed, per_class, task.label_names))
    return Sample(task, seed, train, dev, task.test, heldout)
