"""Classification heads: new, randomly initialised layers on the pooled backbone state."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Sequential):
    """GPT-1's head: dropout, then one linear layer (hidden_size -> num_classes)."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float = 0.1):
        super().__init__(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))


class MLPHead(nn.Sequential):
    """One hidden layer with GELU between the pooled state and the classes."""

    def __init__(self, hidden_size: int, num_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


class VerbalizerHead(nn.Module):
    """The LM head restricted to the verbalizer: label scores from the rows of the output
    embedding of each label word's first token, so it starts as the zero-shot classifier
    (prompt_finetune). Scores are logsumexp over a label's words, normalised over labels."""

    def __init__(self, output_embedding: torch.Tensor, word_tokens: list[int], word_label: torch.Tensor, num_classes: int):
        super().__init__()
        self.proj = nn.Linear(output_embedding.shape[1], len(word_tokens), bias=True)
        with torch.no_grad():
            self.proj.weight.copy_(output_embedding[word_tokens])  # (J, H), a copy: trains on its own
            self.proj.bias.zero_()
        self.register_buffer("word_label", torch.as_tensor(word_label), persistent=False)  # (J,)
        self.num_classes = num_classes

    @classmethod
    def from_backbone(cls, backbone, verbalizer) -> VerbalizerHead:
        """The zero-shot classifier of `backbone` for the task's verbalizer (words per label)."""
        from shotlab.models.scorer import verbalizer_words

        word_ids, word_label = verbalizer_words(backbone.tokenizer, verbalizer)
        weight = backbone.lm.get_output_embeddings().weight.detach()
        return cls(weight, [ids[0] for ids in word_ids], word_label, len(verbalizer))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        from shotlab.models.scorer import words_to_labels

        word = self.proj(pooled)  # (B, J) logits of each word's first token
        return words_to_labels(word, self.word_label, self.num_classes).log_softmax(-1)  # (B, C)
