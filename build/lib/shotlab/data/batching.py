"""Right padding: the one way token id lists become a (B, T) batch with an attention mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (N, max(1, longest)); an empty sequence is one masked pad."""
    T = max(1, max(map(len, seqs), default=0))
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)], mask[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long), 1
    return ids.to(device), mask.to(device)
