"""The backbone matches plain transformers, and padding on either side changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from shotlab import ShotlabError
from shotlab.models.backbone import (
    build_backbone,
    last_token_index,
    plan_packing,
    positions_from_mask,
)
from tests.conftest import tiny

TEXTS = ["A gorgeous, witty film.", "Dull.", "The plot meanders for two hours and never lands anywhere at all."]


def pad(tokenizer, texts, side):
    ids = [tokenizer(t)["input_ids"] for t in texts]
    T = max(map(len, ids))
    batch = torch.full((len(ids), T), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, row in enumerate(ids):
        sl = slice(0, len(row)) if side == "right" else slice(T - len(row), T)
        batch[i, sl], mask[i, sl] = torch.tensor(row), 1
    return batch, mask, ids


def test_parity_with_plain_transformers(tiny_backbone, tmp_path):
    from transformers import GPT2LMHeadModel

    # The reference is a separate model, loaded by transformers alone from the saved weights.
    tiny_backbone.lm.save_pretrained(tmp_path)
    reference = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    b = tiny_backbone.eval()
    ids = torch.tensor([b.tokenizer(TEXTS[2])["input_ids"]])
    with torch.no_grad():
        ref = reference(input_ids=ids, output_hidden_states=True)
        hidden, _ = b.states(ids, torch.ones_like(ids))
        logprobs = b.lm_logprobs(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    assert_close(hidden, ref.hidden_states[-1])
    assert_close(logprobs, torch.log_softmax(ref.logits, -1))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padded_batch_equals_one_by_one(tiny_backbone, side, pooling):
    b = tiny_backbone.eval()
    b.pooling = pooling
    batch, mask, ids = pad(b.tokenizer, TEXTS, side)
    with torch.no_grad():
        pooled = b(batch, mask)
        last = last_token_index(mask)
        lp = b.lm_logprobs(batch, mask, last[:, None])  # next-token log-probs after each text
        for i, row in enumerate(ids):
            one = torch.tensor([row])
            assert_close(pooled[i], b(one, torch.ones_like(one))[0], atol=1e-5, rtol=1e-5)
            ref = b.lm_logprobs(one, torch.ones_like(one), torch.tensor([[len(row) - 1]]))
            assert_close(lp[i], ref[0], atol=1e-5, rtol=1e-5)
    b.pooling = "last"


def test_lm_logprobs_only_computes_asked_positions(tiny_backbone):
    b = tiny_backbone.eval()
    batch, mask, _ = pad(b.tokenizer, TEXTS, "right")
    with torch.no_grad():
        lp = b.lm_logprobs(batch, mask, torch.zeros(3, 2, dtype=torch.long))
    assert lp.shape == (3, 2, len(b.tokenizer))


def test_lm_loss_is_the_next_token_loss(tiny_backbone):
    b = tiny_backbone.eval()
    batch, mask, ids = pad(b.tokenizer, TEXTS[:2], "right")
    with torch.no_grad():
        hidden, _ = b.states(batch, mask)
        ours = b.lm_loss(hidden, batch, mask)
        # Reference: plain transformers' loss on the unpadded texts, token-weighted.
        losses, counts = [], []
        for row in ids:
            one = torch.tensor([row])
            losses.append(b.lm(input_ids=one, labels=one).loss * (len(row) - 1))
            counts.append(len(row) - 1)
    assert_close(ours, sum(losses) / sum(counts))


def test_set_trainable_decides_every_backbone_gradient():
    from shotlab.models.classifier import add_lora, set_trainable

    b = build_backbone({"name_or_path": None, "tokenizer": "gpt2",
                        "random_init": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}})
    set_trainable(b, "head")
    assert not any(p.requires_grad for p in b.parameters())
    set_trainable(b, "all")
    assert all(p.requires_grad for p in b.parameters())
    add_lora(b, r=2, alpha=4, dropout=0.0)
    set_trainable(b, "lora")
    trainable = {n for n, p in b.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_gpt2_tokenizer_is_the_real_bpe(tiny_backbone):
    # Ids of GPT-2's published vocabulary.
    assert tiny_backbone.tokenizer("Hello world, it's great!")["input_ids"] == [15496, 995, 11, 340, 338, 1049, 0]
    assert tiny_backbone.tokenizer.eos_token_id == 50256


def test_unreachable_hub_name_says_how_to_point_at_a_copy(monkeypatch):
    import huggingface_hub.constants

    # As with no network, minus the retries: the hub is not asked at all.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ShotlabError, match=r"cannot load backbone 'no-such-org/no-such-model'.*backbone.name_or_path=DIR") as err:
        build_backbone({"name_or_path": "no-such-org/no-such-model"})
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_smollm2_prefers_real_text_to_shuffled_tokens():
    """The embedded default is a real language model: real sentences beat token salad."""
    from shotlab.demo import real_vs_shuffled

    real, shuffled = real_vs_shuffled(n=8)
    assert real > shuffled + 1.0  # mean log-likelihood per token, nats


def test_mixed_lengths_run_packed_with_the_same_states_and_gradients():
    b = tiny().eval()  # eval: no dropout, so both layouts compute the same function
    batch, mask, ids = pad(b.tokenizer, TEXTS, "right")
    packing = plan_packing(mask)
    assert packing is not None and packing.rows == 2  # the two short texts share a row
    assert int((packing.segment >= 0).sum()) == int(mask.sum())

    def loss_and_grads(positions):
        b.zero_grad()
        hidden, _ = b.states(batch, mask, position_ids=positions)
        loss = b.pool(hidden, mask).square().sum() + b.lm_loss(hidden, batch, mask)
        loss.backward()
        return hidden * mask[..., None], {n: p.grad.clone() for n, p in b.named_parameters()}

    packed, packed_grads = loss_and_grads(None)  # no position ids given: the batch runs packed
    padded, padded_grads = loss_and_grads(positions_from_mask(mask))  # given: it runs as it is
    assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    for name, grad in padded_grads.items():
        assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert plan_packing(torch.ones(3, 5, dtype=torch.long)) is None  # equal lengths: nothing to gain


def test_chunked_lm_loss_equals_cross_entropy_in_value_and_gradients():
    from shotlab.models.backbone import chunked_lm_loss

    torch.manual_seed(0)
    states, weight = torch.randn(7, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (7,))
    reference = torch.nn.functional.cross_entropy(states @ weight.T, targets)
    reference.backward()
    expected = states.grad.clone(), weight.grad.clone()
    states.grad = weight.grad = None
    ours = chunked_lm_loss(states, weight, targets, chunk=3)  # three chunks, the last one short
    (2 * ours).backward()
    assert_close(ours, reference)
    assert_close(states.grad, 2 * expected[0])
    assert_close(weight.grad, 2 * expected[1])


ARCHITECTURES = {  # tiny random GPT-2 and Llama blocks (the embedded default is a Llama)
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 128},
    "llama": {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 128},
}


def build_tiny(arch: str, **more):
    return build_backbone({"name_or_path": None, "tokenizer": "gpt2", "init_seed": 0,
                           "random_init": ARCHITECTURES[arch], **more})


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("packed", [True, False])
def test_gradient_checkpointing_gives_the_plain_gradients(arch, packed):
    """backbone.gradient_checkpointing recomputes activations in the backward pass: the same loss
    and gradients as keeping them, in training mode (dropout on: its masks are replayed), packed
    (4-D block mask) or padded."""
    plain, checkpointed = build_tiny(arch), build_tiny(arch, gradient_checkpointing=True)
    on = [m.gradient_checkpointing for m in checkpointed.lm.modules() if hasattr(m, "gradient_checkpointing")]
    off = [m.gradient_checkpointing for m in plain.lm.modules() if hasattr(m, "gradient_checkpointing")]
    assert on and all(on) and not any(off)
    batch, mask, _ = pad(plain.tokenizer, TEXTS, "right")

    def loss_and_grads(b):
        b.train().zero_grad()
        torch.manual_seed(0)
        hidden, _ = b.states(batch, mask, position_ids=None if packed else positions_from_mask(mask))
        loss = b.pool(hidden, mask).square().sum() + b.lm_loss(hidden, batch, mask)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in b.named_parameters()}

    loss, grads = loss_and_grads(plain)
    loss_ckpt, grads_ckpt = loss_and_grads(checkpointed)
    assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys()
    for name, grad in grads.items():
        assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fsdp_wraps_each_transformer_block(arch):
    """trainer=fsdp's wrap policy: one unit per decoder block of any architecture, nothing else."""
    from shotlab.models.sharding import decoder_blocks

    b = build_tiny(arch)
    units = [name for name, module in b.lm.named_modules() if isinstance(module, tuple(decoder_blocks()))]
    blocks = b.lm.base_model.h if arch == "gpt2" else b.lm.base_model.layers
    assert units == [name for name, m in b.lm.named_modules() if any(m is block for block in blocks)]
    assert len(units) == b.lm.config.num_hidden_layers == 2


def test_scoring_placement_follows_the_trainer_and_backbone_dtype():
    from shotlab.models.backbone import scoring_placement

    cpu = torch.device("cpu")
    assert scoring_placement({"dtype": "auto"}, {"accelerator": "cpu"}) == (cpu, torch.float32)
    assert scoring_placement({"dtype": "bfloat16"}, {"accelerator": "cpu"}) == (cpu, torch.bfloat16)
    assert scoring_placement({}, None) == (cpu, torch.float32)
    cuda = scoring_placement({"dtype": "auto"}, {"accelerator": "gpu"})
    assert cuda == (torch.device("cuda"), torch.bfloat16)  # what a GPU run scores in, unless told
    auto = scoring_placement({"dtype": "auto"}, {"accelerator": "auto"})
    assert auto[0].type == ("cuda" if torch.cuda.is_available() else "cpu")
