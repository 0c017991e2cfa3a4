"""method=prompt and method=prompt_finetune through run(): same metrics.json contract."""

from __future__ import annotations

import pytest

from shotlab.train import run
from tests.conftest import make_cfg


def test_prompt_finetune_at_k0_predicts_exactly_as_prompt(tmp_path):
    # movie_sentiment's label words (" negative", " positive") are single GPT-2 tokens.
    prompt = run(make_cfg(tmp_path / "p", "method=prompt", "regime=zero", "max_length=512"))
    tuned = run(make_cfg(tmp_path / "f", "method=prompt_finetune", "regime=zero", "max_length=512"))
    assert prompt["status"] == tuned["status"] == "ok"
    assert tuned["confusion"] == prompt["confusion"] and tuned["test_acc"] == prompt["test_acc"]
    assert tuned["num_train"] == 0


def test_in_context_run_uses_the_k_shot_sample_as_demonstrations(tmp_path):
    result = run(make_cfg(tmp_path, "method=prompt", "regime=few", "regime.k=2", "seed=3"))
    assert result["status"] == "ok" and result["num_demonstrations"] == 4 and result["num_train"] == 4
    assert result["train_seconds"] == 0.0 and 0.0 <= result["test_acc"] <= 1.0


@pytest.mark.parametrize(("overrides", "reason"), [
    (["method=prompt", "regime=zero", "seed=1"], "does not depend on the split seed"),
    (["method=prompt", "regime=full"], "all of them do not fit"),
    (["method=lora", "regime=zero"], "k=0 gives it nothing to train on"),
])
def test_cells_a_sweep_does_not_run(tmp_path, overrides, reason):
    result = run(make_cfg(tmp_path, *overrides))
    assert result["status"] == "skipped" and reason in result["reason"]


@pytest.mark.slow
def test_prompt_finetune_trains_from_the_zero_shot_head(tmp_path):
    import torch

    from tests.conftest import tiny

    result = run(make_cfg(tmp_path, "method=prompt_finetune", "regime=few", "regime.k=2",
                          "trainer.max_epochs=1", "regime.min_steps=3"))
    assert result["status"] == "ok" and result["num_train"] == 4
    # The head started as the output-embedding rows of " negative" / " positive" and moved.
    rows = tiny().lm.get_output_embeddings().weight[[4633, 3967]]
    trained = torch.load(result["best_checkpoint"], weights_only=False)["state_dict"]["head.proj.weight"]
    assert trained.shape == rows.shape and not torch.allclose(trained, rows)
    assert torch.allclose(trained, rows, atol=0.1)  # a few small steps from there, not a new layer
