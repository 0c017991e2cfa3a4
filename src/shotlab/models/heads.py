"""Classification heads: new, randomly initialised layers on the pooled backbone state."""

from __future__ import annotations

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
