"""The feature cache: shared by parallel jobs without losing what any of them computed, keyed by
the data actually read (an edited file never gets its old features back), and a damaged shard
costs a warning and a recomputation, not a wrong number."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from shotlab.models import features
from shotlab.models.features import FeatureCache
from tests.conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]


def sequences(n: int = 60, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(50, 5000) for _ in range(rng.randint(3, 20))] for _ in range(n)]


# Each writer computes an overlapping slice of the sequences, all at once (they start together
# when the go file appears).
WRITER = """
import sys, time
from pathlib import Path
from shotlab.models.features import FeatureCache
from tests.conftest import tiny
from tests.test_features import sequences
folder, go, part, parts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
backbone = tiny()
seqs = sequences()
size = len(seqs) // parts
while not go.exists():
    time.sleep(0.01)
FeatureCache(backbone, folder, batch_size=4)("train", seqs[part * size // 2 : part * size // 2 + size])
"""


@pytest.mark.slow
def test_parallel_writers_lose_nothing_and_a_second_pass_computes_nothing(tmp_path, tiny_backbone):
    folder, go, parts = tmp_path / "shared", tmp_path / "go", 4
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(go), str(i), str(parts)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for i in range(parts)]
    go.touch()
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    seqs = sequences()
    covered = {i for part in range(parts) for i in range(part * 15 // 2, part * 15 // 2 + 15)}
    again = FeatureCache(tiny_backbone, folder)
    shared = again("train", [seqs[i] for i in sorted(covered)])
    assert again.computed == 0  # every writer's shard is there
    alone = FeatureCache(tiny_backbone, tmp_path / "alone")("train", [seqs[i] for i in sorted(covered)])
    assert_close(shared, alone, atol=1e-5, rtol=1e-5)
    assert not list(folder.glob(".*"))  # no part-written shard left behind


def test_only_new_sequences_are_computed_and_reads_equal_computes(tmp_path, tiny_backbone):
    seqs = sequences(20)
    cache = FeatureCache(tiny_backbone, tmp_path)
    first = cache("train", seqs[:12])
    assert cache.computed == 12
    second = cache("train", seqs[6:] + seqs[6:8])  # 6 cached, 8 new, 2 repeated
    assert cache.computed == 12 + 8
    assert_close(second[:6], first[6:])
    assert_close(second[-2:], second[:2])
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_a_damaged_shard_is_reported_once_and_recomputed(tmp_path, tiny_backbone, capsys):
    seqs = sequences(10)
    good = FeatureCache(tiny_backbone, tmp_path)("train", seqs)
    shard = next(tmp_path.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # torn, as by a full disk
    cache = FeatureCache(tiny_backbone, tmp_path)
    assert_close(cache("train", seqs), good)
    assert cache.computed == 10
    assert capsys.readouterr().err.count(f"feature cache shard {shard} is unreadable") == 1
    again = FeatureCache(tiny_backbone, tmp_path)
    again("train", seqs)
    assert again.computed == 0 and "unreadable" not in capsys.readouterr().err


def test_the_cache_folder_changes_with_the_backbone_and_the_format(monkeypatch):
    cfg = {"name_or_path": None, "tokenizer": "gpt2", "pooling": "last", "pack": True}
    key = features.cache_key(cfg)
    assert features.cache_key({**cfg, "pack": False}) == key  # how a batch runs is not what it computes
    assert features.cache_key({**cfg, "pooling": "mean"}) != key
    assert features.cache_key({**cfg, "gradient_checkpointing": True}) == key  # training only
    # auto is float32 on the CPU: the same features; bf16 ones, or a GPU's, are other entries
    cpu = torch.device("cpu")
    assert features.cache_key({**cfg, "dtype": "auto"}, (cpu, torch.float32)) == key
    assert features.cache_key(cfg, (cpu, torch.bfloat16)) != key
    assert features.cache_key(cfg, (torch.device("cuda"), torch.float32)) != key
    monkeypatch.setattr(features, "FORMAT", features.FORMAT + 1)
    assert features.cache_key(cfg) != key


def test_an_edited_data_file_is_recomputed_and_an_unchanged_one_is_not(tmp_path, synthetic_csv, monkeypatch):
    from shotlab.train import run

    store = tmp_path / "features"
    monkeypatch.setenv("SHOTLAB_FEATURES", str(store))
    args = ("task=csv", f"task.files.train={synthetic_csv}", "task.text_column=text", "task.label_column=label",
            "regime.k=2", "method=linear_probe", "method.min_steps=2", "epochs=1", "validations=1", "+force=true")

    def shards():
        return set(store.rglob("*.safetensors"))

    first = run(make_cfg(tmp_path / "a", *args))
    after_first = shards()
    assert after_first
    assert run(make_cfg(tmp_path / "b", *args))["test_acc"] == first["test_acc"] and shards() == after_first

    # The same ids (<file stem>:<row>), other texts: in place, as a user edits a file.
    lines = synthetic_csv.read_text().splitlines()
    edited = [lines[0]] + [line.replace(" good,", " splendid good,") for line in lines[1:]]
    synthetic_csv.write_text("\n".join(edited) + "\n")
    run(make_cfg(tmp_path / "c", *args))
    new = shards() - after_first
    from safetensors import safe_open

    recomputed = 0
    for shard in new:  # one per split the run read
        with safe_open(str(shard), framework="pt") as f:
            recomputed += f.get_tensor("keys").shape[0]
    # Only edited texts were computed (half the rows were edited; a run reads a part of the file)
    assert 0 < recomputed < sum(" splendid " in line for line in edited)
    run(make_cfg(tmp_path / "d", *args))
    assert shards() - after_first == new  # and once computed, they are read
