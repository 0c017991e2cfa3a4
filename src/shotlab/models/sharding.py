"""Sharded fine-tuning (trainer=fsdp): which modules FSDP wraps as its units.

A unit is one transformer block, whatever the architecture: transformers' decoder blocks
(Llama's LlamaDecoderLayer, GPT-2's GPT2Block, ...) all derive from GradientCheckpointingLayer,
the class its activation checkpointing wraps, so one policy serves every causal LM the `hf`
backbone loads. Embeddings, the final norm and the heads stay in the root unit.
"""

from __future__ import annotations


def decoder_blocks() -> set[type]:
    """The module classes FSDP wraps one by one (Lightning's FSDPStrategy auto_wrap_policy)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return {GradientCheckpointingLayer}
