"""Attention over a shared prefix without copying it (Hydragen, Juravsky et al. 2024).

Scoring many prompts after one prefix (the demonstrations of in-context learning, a template's
head, calibration's content-free inputs) runs the prefix once and keeps its keys and values,
one row of them. The reference way then expands them to every row of a batch and concatenates
each row's own keys in every layer, and grouped-query attention repeats them once more per
query head: gigabytes of copies to score a few thousand tokens.

Here each layer's attention is split in two and merged exactly:

    over the prefix    one matrix product for all rows and query heads of a key/value head
                       against the single prefix K/V (B x G x L queries, never B copies of K/V)
    over its own       each row against its own keys (causal, padding masked), a small product
    merge              softmax(a ++ b) @ (V_a ++ V_b) = (e^lse_a o_a + e^lse_b o_b) / (e^lse_a + e^lse_b)

It plugs into transformers' attention-function registry (`AttentionInterface`), not into a copy
of a model's code: every causal LM whose attention calls the registered function (Llama, GPT-2,
and the others built the same way) uses it while `Backbone.states(..., shared_prefix=...)`
runs, and the prefix object counts the layers that saw it, so a model that bypasses the
registry fails loudly instead of silently ignoring the prefix.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

NAME = "shotlab_shared_prefix"


class Unsupported(RuntimeError):
    """A model whose attention layers do not all call the registered attention function."""


@dataclass
class SharedPrefix:
    """The prefix's keys and values, (1, Hkv, P, D) per layer. `calls` counts the attention
    layers that used it in the last forward."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    calls: int = field(default=0, compare=False)


def _attend(query, key, value, mask, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp: q (X, H, M, D), k/v (X, H, S, D), an additive mask
    broadcastable to (X, H, M, S) -> (X, H, M, D), (X, H, M, 1) float32. On the CPU through
    torch's fused flash kernel, which returns the log-sum-exp beside the output (7x faster here
    than the three passes below at k=16's sizes); elsewhere the plain computation."""
    if query.device.type == "cpu" and _FLASH_CPU is not None:
        out, lse = _FLASH_CPU(query, key, value, 0.0, False, attn_mask=None if mask is None else mask.to(query.dtype),
                              scale=scale)
        return out, lse.unsqueeze(-1).float()
    scores = (query @ key.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores + mask
    lse = torch.logsumexp(scores, -1, keepdim=True)
    return torch.exp(scores - lse).to(value.dtype) @ value, lse


_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, shared_prefix=None, **kwargs):
    """transformers' attention-function signature: query (B, Hq, L, D), key/value (B, Hkv, S, D)
    (the rows' own keys, S >= L with a cache of their own), an additive 4-D mask over those own
    keys. Returns (B, L, Hq, D) and no weights."""
    if shared_prefix is None:  # in use only while a prefix is passed: a layer that drops it is not served
        raise Unsupported("an attention layer was called without the shared prefix its model was given")
    prefix_k, prefix_v = shared_prefix.kv[module.layer_idx]
    shared_prefix.calls += 1
    B, Hq, L, D = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    G = Hq // Hkv  # query heads per key/value head; head h belongs to key/value head h // G
    scale = scaling if scaling is not None else D**-0.5
    q = query.reshape(B, Hkv, G * L, D)
    mask = None
    if attention_mask is not None:  # (B, 1, L, S) -> (B, 1, G*L, S), the same for each head of a group
        mask = attention_mask[..., -S:]
        mask = mask[:, :, None].expand(B, mask.shape[1], G, L, S).reshape(B, mask.shape[1], G * L, S)
    own, lse_own = _attend(q, key, value, mask, scale)  # (B, Hkv, G*L, D)
    # Every query of every row against the one prefix: (1, Hkv, B*G*L, D) @ (1, Hkv, D, P).
    shared, lse_shared = _attend(q.transpose(0, 1).reshape(1, Hkv, B * G * L, D), prefix_k, prefix_v, None, scale)
    shared = shared.view(Hkv, B, G * L, D).transpose(0, 1)
    lse_shared = lse_shared.view(Hkv, B, G * L, 1).transpose(0, 1)
    top = torch.maximum(lse_own, lse_shared)
    w_own, w_shared = torch.exp(lse_own - top), torch.exp(lse_shared - top)
    out = (own.float() * w_own + shared.float() * w_shared) / (w_own + w_shared)
    return out.to(query.dtype).view(B, Hq, L, D).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def in_use(lm):
    """The model's attention is this module's `attention` inside the block."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, attention)  # a dict entry, set each time: the current function
    before = lm.config._attn_implementation
    lm.config._attn_implementation = NAME
    try:
        yield
    finally:
        lm.config._attn_implementation = before


def own_mask(attention_mask: torch.Tensor, past: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(B, 1, L, past + L) additive mask of the rows' own tokens: each sees the `past` own keys
    its cache holds where `attention_mask` (B, past + L) marks them real, and its own earlier
    tokens (causal); a padding query sees its own position too, so no row is empty."""
    B, T = attention_mask.shape
    L = T - past
    real = attention_mask.bool()
    causal = torch.ones(L, T, dtype=torch.bool, device=real.device).tril(diagonal=past)
    allowed = causal[None] & real[:, None, :]
    own = torch.arange(L, device=real.device)
    allowed[:, own, past + own] = True  # a query always sees itself (padding too: never an empty row)
    return torch.zeros(B, 1, L, T, dtype=dtype, device=real.device).masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
