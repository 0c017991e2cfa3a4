"""k-shot sampling is a pure, balanced, deterministic function of (labels, k, seed)."""

from __future__ import annotations

import numpy as np
import pytest

from shotlab import ShotlabError
from shotlab.data.sampling import ids_hash, sample_k

UNBALANCED = np.array([0] * 50 + [1] * 7 + [2] * 20)


def test_same_inputs_same_ids_and_seeds_differ():
    a = sample_k(UNBALANCED, 5, seed=1)
    assert a.tolist() == sample_k(UNBALANCED.copy(), 5, seed=1).tolist()
    assert a.tolist() != sample_k(UNBALANCED, 5, seed=2).tolist()


def test_pinned_sample_is_the_same_on_any_machine():
    # numpy's PCG64 stream is stable; a change here changes every published split.
    assert sample_k(UNBALANCED, 2, seed=0).tolist() == [31, 41, 51, 52, 57, 58]


@pytest.mark.parametrize("k", [1, 4, 7])
def test_k_per_class_is_balanced_on_unbalanced_labels(k):
    picked = sample_k(UNBALANCED, k, seed=3)
    assert np.bincount(UNBALANCED[picked], minlength=3).tolist() == [k, k, k]
    assert len(set(picked.tolist())) == len(picked)


def test_k_larger_than_a_class_names_the_class_and_its_size():
    with pytest.raises(ShotlabError, match=r"k=8 per class is more than class 'rare' has \(7 examples\)"):
        sample_k(UNBALANCED, 8, seed=0, label_names=["common", "rare", "mid"])


def test_total_k_is_stratified_as_evenly_as_classes_allow():
    picked = sample_k(UNBALANCED, 30, seed=0, per_class=False)
    counts = np.bincount(UNBALANCED[picked], minlength=3).tolist()
    assert sum(counts) == 30 and counts[1] == 7 and abs(counts[0] - counts[2]) <= 1
    assert np.bincount(UNBALANCED[sample_k(UNBALANCED, 7, 0, per_class=False)], minlength=3).tolist() in (
        [3, 2, 2], [2, 3, 2], [2, 2, 3])
    with pytest.raises(ShotlabError, match="k=78 in total is more than the 77 examples"):
        sample_k(UNBALANCED, 78, seed=0, per_class=False)


def test_zero_and_full():
    assert sample_k(UNBALANCED, 0, seed=0).tolist() == []
    assert sample_k(UNBALANCED, None, seed=0).tolist() == list(range(len(UNBALANCED)))


def test_ids_hash_is_order_free():
    assert ids_hash(["b", "a"]) == ids_hash(["a", "b"]) != ids_hash(["a", "c"])


def test_the_heldout_pool_is_fixed_and_no_dev_sample_draws_from_it():
    from shotlab.data.sampling import draw_sample
    from shotlab.data.tasks import Split, Task

    def split(name, n):
        labels = np.arange(n) % 3
        return Split([f"{name}{i}" for i in range(n)], [f"text {i}" for i in range(n)], labels)

    task = Task("toy", ("a", "b", "c"), "{text}", (("a",), ("b",), ("c",)), split("tr", 300), split("va", 120),
                split("te", 30))
    pools = set()
    for k in (0, 1, 4, 16, None):
        for seed in (0, 1, 2):
            sample = draw_sample(task, k, seed, heldout_size=40)
            pools.add(tuple(sample.heldout.ids))
            dev = set(sample.dev.ids) if sample.dev is not None else set()
            assert not dev & set(sample.heldout.ids)
            if k is None:  # full data: all of the validation split but the pool
                assert len(dev) == 80
    assert len(pools) == 1 and len(next(iter(pools))) == 40
    assert sorted(np.bincount(draw_sample(task, 0, 0, heldout_size=40).heldout.labels).tolist()) == [13, 13, 14]
    # at most half the validation split; 0 keeps none
    assert len(draw_sample(task, 4, 0, heldout_size=500).heldout) == 60
    assert draw_sample(task, 4, 0).heldout is None
