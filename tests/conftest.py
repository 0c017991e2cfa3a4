"""Tests compose the real conf/train.yaml with a tiny, CPU-only, no-logger override, so they
exercise the code path users run. The tiny GPT-2 is random and offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from shotlab.config import conf_dir  # also registers the regime_name resolver the yaml uses

CONF = conf_dir()
TINY = [
    "backbone=tiny-gpt2",
    "logger=none",
    "task.test_size=64",
    "max_length=32",
    "trainer.enable_progress_bar=false",
]


def make_cfg(output_dir, *overrides: str, tiny: bool = True):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[*(TINY if tiny else []), f"output_dir={output_dir}", *overrides])


def tiny():
    """A fresh tiny GPT-2 backbone (the tiny-gpt2 config), for tests that change it."""
    from shotlab.models.backbone import build_backbone

    return build_backbone(
        {"name_or_path": None, "tokenizer": "gpt2", "init_seed": 0,
         "random_init": {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 512}}
    )


@pytest.fixture(scope="session", autouse=True)
def own_feature_cache(tmp_path_factory):
    """The suite's features live in a folder of its own (inherited by the runs and sweeps it
    starts): it never reads the user's cache, nor writes into it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SHOTLAB_FEATURES", str(tmp_path_factory.mktemp("features")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_backbone():
    """A shared tiny GPT-2 for tests that only read it (never freeze or train it)."""
    return tiny()


@pytest.fixture
def synthetic_csv(tmp_path) -> Path:
    """A learnable 2-class task: the last word says the label."""
    import random

    rng = random.Random(0)
    fillers = ["the", "film", "was", "a", "plot", "story", "really", "quite", "and", "it"]
    rows = ["text,label"]
    for i in range(240):
        label = ["bad", "good"][i % 2]
        words = rng.choices(fillers, k=rng.randint(2, 8))
        rows.append(f"{' '.join(words)} {label},{label}")
    path = tmp_path / "synthetic.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
