"""The `prompt` method's scorer: KV-cached scoring equals re-running every (example, word)
from scratch, calibration removes a constant label bias, demonstrations are seeded, and
the context-length policy drops demonstrations but never a test text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shotlab import ShotlabError
from shotlab.data.sampling import sample_k
from shotlab.models.backbone import build_backbone
from shotlab.models.scorer import (
    CONTENT_FREE,
    LMScorer,
    calibrate_scores,
    demonstration_prefix,
    demonstrations,
    naive_scores,
    split_prompt,
)

TEMPLATE = "Review: {text}\nSentiment:"
# Several words per label, some of them several GPT-2 tokens (" super|cal|if|rag|il|istic").
VERBALIZER = (("unbelievably bad", "terrible"), ("magnificent", "supercalifragilistic"), ("ghastly",))
TEXTS = [  # different lengths, so a batch is padded
    "a",
    "this film is an absolute triumph of cinema, from the first scene to the last; I loved it",
    "meh",
    "the plot made no sense at all",
    "fine.",
]
TRAIN_TEXTS = ["good one", "bad stuff happened here", "fine", "a wonderful cast", "dull"]
TRAIN_LABELS = [1, 0, 2, 1, 0]
# A larger init than the default 0.02, so the LM's outputs depend strongly on the context
# and a wrong position, mask or cache would show in the scores.
ARCHS = {
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 512},
    "llama": {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 512},
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def backbone(request):
    arch = {**ARCHS[request.param], "initializer_range": 0.2}
    return build_backbone({"name_or_path": None, "tokenizer": "gpt2", "random_init": arch, "init_seed": 0})


def _demos(seed=0):
    return demonstrations(TRAIN_TEXTS, TRAIN_LABELS, TEMPLATE, VERBALIZER, seed)


@pytest.mark.parametrize("token_reduce", ["sum", "mean"])
@pytest.mark.parametrize("template", [TEMPLATE, "{text} =>"])
@pytest.mark.parametrize("in_context", [False, True])
def test_cached_scores_equal_naive(backbone, token_reduce, template, in_context):
    demos = demonstrations(TRAIN_TEXTS, TRAIN_LABELS, template, VERBALIZER, 0) if in_context else ()
    scorer = LMScorer(backbone, template, VERBALIZER, token_reduce=token_reduce, batch_size=3)
    assert max(map(len, scorer.word_ids)) >= 3  # multi-token words are really exercised
    got = scorer.score(TEXTS, demos)
    want = naive_scores(backbone, TEXTS, template, VERBALIZER, demos, token_reduce)
    torch.testing.assert_close(got.scores, want, atol=1e-4, rtol=1e-4)
    assert got.num_demonstrations == len(demos)
    assert torch.equal(got.predictions, want.argmax(-1))
    assert want.std(0).max() > 0.1  # the scores depend on the text: the check above can fail


@pytest.mark.parametrize("in_context", [False, True])
def test_one_token_words_run_packed_and_equal_naive(backbone, in_context):
    verbalizer = (("bad", "awful"), ("good",), ("fine",))  # one GPT-2 token each: prompts run packed
    demos = demonstrations(TRAIN_TEXTS, TRAIN_LABELS, TEMPLATE, verbalizer, 0) if in_context else ()
    scorer = LMScorer(backbone, TEMPLATE, verbalizer, batch_size=5)
    assert max(map(len, scorer.word_ids)) == 1
    rests = [backbone.tokenizer(split_prompt(TEMPLATE, t)[1], add_special_tokens=False).input_ids for t in TEXTS]
    from shotlab.data.batching import pad_right
    from shotlab.models.backbone import plan_packing

    assert plan_packing(pad_right(rests, 0)[1]).rows < len(TEXTS)  # the batch is really packed
    got = scorer.score(TEXTS, demos).scores
    want = naive_scores(backbone, TEXTS, TEMPLATE, verbalizer, demos)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert want.std(0).max() > 0.1


def test_batch_size_does_not_change_scores(backbone):
    one = LMScorer(backbone, TEMPLATE, VERBALIZER, batch_size=1).score(TEXTS, _demos()).scores
    many = LMScorer(backbone, TEMPLATE, VERBALIZER, batch_size=8).score(TEXTS, _demos()).scores
    torch.testing.assert_close(one, many, atol=1e-4, rtol=1e-4)


def test_mean_divides_each_word_by_its_token_count(backbone):
    verbalizer = (("supercalifragilistic",), ("unbelievably bad",))  # 6 and 2 GPT-2 tokens
    total = LMScorer(backbone, TEMPLATE, verbalizer).score(TEXTS).scores
    mean = LMScorer(backbone, TEMPLATE, verbalizer, token_reduce="mean").score(TEXTS).scores
    torch.testing.assert_close(mean, total / torch.tensor([6.0, 2.0]))


def test_calibration_undoes_a_constant_label_bias():
    torch.manual_seed(0)
    unbiased = torch.randn(200, 3).log_softmax(-1)
    bias = torch.tensor([2.5, 0.0, -2.5])  # a model that says label 0 whatever the text
    biased = (unbiased + bias).log_softmax(-1)
    # Content-free inputs carry no evidence: under the biased model they score the bias alone.
    content_free = bias.expand(len(CONTENT_FREE), 3)
    assert (biased.argmax(-1) != unbiased.argmax(-1)).float().mean() > 0.2
    fixed = calibrate_scores(biased, content_free)
    assert torch.equal(fixed.argmax(-1), unbiased.argmax(-1))
    torch.testing.assert_close(fixed.softmax(-1), unbiased.softmax(-1))


def test_calibration_divides_by_the_mean_content_free_probabilities():
    content_free = torch.tensor([[0.8, 0.2], [0.4, 0.6]]).log()  # p_cf = (0.6, 0.4)
    scores = torch.tensor([[0.5, 0.5], [0.65, 0.35]]).log()
    fixed = calibrate_scores(scores, content_free)
    torch.testing.assert_close(fixed.exp(), torch.tensor([[0.5 / 0.6, 0.5 / 0.4], [0.65 / 0.6, 0.35 / 0.4]]))
    assert fixed.argmax(-1).tolist() == [1, 0]


def test_calibrate_scores_content_free_inputs_after_the_same_demonstrations(backbone):
    scorer = LMScorer(backbone, TEMPLATE, VERBALIZER)
    got = scorer.score(TEXTS, _demos(), calibrate=True)
    plain = scorer.score(TEXTS, _demos()).scores
    content_free = naive_scores(backbone, list(CONTENT_FREE), TEMPLATE, VERBALIZER, _demos())
    torch.testing.assert_close(got.scores, calibrate_scores(plain, content_free), atol=1e-4, rtol=1e-4)
    assert torch.equal(got.predictions, got.scores.argmax(-1))


def test_demonstrations_are_prompt_plus_gold_word():
    demos = demonstrations(["x", "y"], [0, 1], "T: {text}\nL:", (("neg", "bad"), ("pos",)), seed=0)
    assert sorted(demos) == ["T: x\nL: neg", "T: y\nL: pos"]
    assert demonstration_prefix(demos) == f"{demos[0]}\n\n{demos[1]}\n\n"
    shared, rest = split_prompt("T: {text}\nL:", "z", demonstration_prefix(demos))
    assert (shared, rest) == (demonstration_prefix(demos) + "T:", " z\nL:")


def test_demonstrations_are_chosen_and_ordered_by_seed():
    rng = np.random.default_rng(0)
    texts = [f"review number {i}" for i in range(40)]
    labels = rng.integers(0, 2, size=40)
    verbalizer = (("bad",), ("good",))

    def prompt_demos(seed):  # what a run does: sample k=4 per class, then order them
        picked = sample_k(labels, 4, seed)
        return demonstrations([texts[i] for i in picked], labels[picked], TEMPLATE, verbalizer, seed)

    assert prompt_demos(0) == prompt_demos(0)
    assert prompt_demos(0) != prompt_demos(1)
    assert len(set(prompt_demos(0))) == 8
    same_set = demonstrations(texts[:8], labels[:8], TEMPLATE, verbalizer, 0)
    other_order = demonstrations(texts[:8], labels[:8], TEMPLATE, verbalizer, 1)
    assert sorted(same_set) == sorted(other_order) and same_set != other_order


def _prompt_tokens(backbone, demos, texts=TEXTS):
    """Tokens of the shared prefix, plus the longest prompt rest and label word."""
    tok = backbone.tokenizer
    shared = split_prompt(TEMPLATE, "", demonstration_prefix(demos))[0]
    rest = max(len(tok(split_prompt(TEMPLATE, t)[1]).input_ids) for t in texts)
    word = max(len(tok(" " + w).input_ids) for ws in VERBALIZER for w in ws)
    return len(tok(shared).input_ids) + rest + word


def test_too_long_drops_demonstrations_from_the_front(backbone, capsys):
    demos = _demos()
    limit = _prompt_tokens(backbone, demos[2:])  # room for exactly the last three
    got = LMScorer(backbone, TEMPLATE, VERBALIZER, max_length=limit).score(TEXTS, demos)
    assert got.num_demonstrations == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shotlab:")]
    assert err == [f"shotlab: 3 of 5 demonstrations fit the backbone's context of {limit} tokens with the longest "
                   "test prompt; the first 2 shown are left out"]
    want = naive_scores(backbone, TEXTS, TEMPLATE, VERBALIZER, demos[2:])
    torch.testing.assert_close(got.scores, want, atol=1e-4, rtol=1e-4)
    assert LMScorer(backbone, TEMPLATE, VERBALIZER, max_length=limit - 1).score(TEXTS, demos).num_demonstrations == 2


def test_too_long_test_text_raises_naming_the_limit(backbone):
    limit = _prompt_tokens(backbone, []) - 1  # the longest text does not fit even alone
    scorer = LMScorer(backbone, TEMPLATE, VERBALIZER, max_length=limit)
    with pytest.raises(ShotlabError, match=f"context of {limit}"):
        scorer.score(TEXTS, _demos())
    assert scorer.score(TEXTS[2:], _demos()).scores.shape == (3, 3)  # shorter texts still fit


def test_unknown_token_reduce_is_a_user_error(backbone):
    with pytest.raises(ShotlabError, match="token_reduce"):
        LMScorer(backbone, TEMPLATE, VERBALIZER, token_reduce="max")


@pytest.mark.slow
def test_cached_scores_equal_naive_on_smollm2():
    real = build_backbone({"name_or_path": "smollm2-135m"})
    verbalizer = (("negative", "awful"), ("positive", "magnificent"))
    demos = demonstrations(TRAIN_TEXTS[:4], [1, 0, 0, 1], TEMPLATE, verbalizer, 0)
    got = LMScorer(real, TEMPLATE, verbalizer, batch_size=2).score(TEXTS[:3], demos).scores
    want = naive_scores(real, TEXTS[:3], TEMPLATE, verbalizer, demos)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


def test_texts_longer_than_max_length_are_scored_whole_with_a_note(backbone, capsys):
    lengths = [len(backbone.tokenizer(t, add_special_tokens=False).input_ids) for t in TEXTS]
    limit = sorted(lengths)[-2]  # only the longest text is longer
    whole = LMScorer(backbone, TEMPLATE, VERBALIZER).score(TEXTS).scores
    capsys.readouterr()
    noted = LMScorer(backbone, TEMPLATE, VERBALIZER, text_tokens=limit).score(TEXTS).scores
    torch.testing.assert_close(noted, whole)  # nothing is cut
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shotlab:")]
    assert notes == [f"shotlab: 1 of 5 texts are longer than max_length={limit} tokens (longest {max(lengths)}); "
                     "prompting scores them whole"]


@pytest.mark.parametrize("words", ["one-token", "multi-token"])
@pytest.mark.parametrize("calibrate", [False, True])
@pytest.mark.parametrize("kernel", ["fused", "plain"])  # torch's CPU flash kernel, or the computation GPUs use
def test_shared_prefix_attention_equals_the_copied_prefix_cache(backbone, words, calibrate, kernel, monkeypatch):
    """The Hydragen split (prefix part + own part, merged by log-sum-exp; models.shared_prefix)
    gives the reference path's scores (the prefix cache expanded to every row): GPT-2 and Llama
    (grouped-query) blocks, packed prompts (one-token words) and padded ones with multi-token
    words, calibration's content-free inputs included."""
    from shotlab.models import shared_prefix

    verbalizer = (("bad", "awful"), ("good",), ("fine",)) if words == "one-token" else VERBALIZER
    demos = demonstrations(TRAIN_TEXTS, TRAIN_LABELS, TEMPLATE, verbalizer, 0)
    if kernel == "plain":
        monkeypatch.setattr(shared_prefix, "_FLASH_CPU", None)
    calls = []
    attention = shared_prefix.attention
    monkeypatch.setattr(shared_prefix, "attention", lambda *a, **k: calls.append(1) or attention(*a, **k))
    shared = LMScorer(backbone, TEMPLATE, verbalizer, batch_size=5).score(TEXTS, demos, calibrate=calibrate)
    n_layers = backbone.lm.config.num_hidden_layers
    assert len(calls) >= n_layers and len(calls) % n_layers == 0  # every layer of every forward took it
    calls.clear()
    copied = LMScorer(backbone, TEMPLATE, verbalizer, batch_size=5, shared_prefix=False).score(
        TEXTS, demos, calibrate=calibrate)
    assert not calls
    torch.testing.assert_close(shared.scores, copied.scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(shared.predictions, copied.predictions)
    assert copied.scores.std(0).max() > 0.1


def test_a_model_outside_the_attention_registry_falls_back_to_the_copied_cache(backbone, monkeypatch, capsys):
    from shotlab.models import shared_prefix

    monkeypatch.setattr(shared_prefix, "attention", lambda module, *a, shared_prefix=None, **k:
                        shared_prefix_free(module, *a, **k))
    got = LMScorer(backbone, TEMPLATE, VERBALIZER, batch_size=2).score(TEXTS, _demos()).scores
    want = LMScorer(backbone, TEMPLATE, VERBALIZER, batch_size=2, shared_prefix=False).score(TEXTS, _demos()).scores
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert "does not call transformers' attention registry" in capsys.readouterr().err


def shared_prefix_free(module, query, key, value, attention_mask, **kwargs):
    """An attention that ignores the prefix it is given (as a model with its own attention code would)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
