"""CausalLM: next-token pre-training of a Hugging Face causal LM (up-stream, GPT-1 §3.1).

Batches are packed blocks of token ids (B, T) with no padding, so every position is a real
token and the mean loss over a batch is the mean token loss; perplexity is exp of it.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch import nn
from torchmetrics import MeanMetric

from shotlab.models.backbone import eval_mode


def lr_multiplier(step: int, progress: float, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Linear warmup over `warmup_steps`, then cosine or linear decay to `min_lr_ratio` as
    `progress` (the fraction of the step or time budget used) goes from 0 to 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(max(progress, 0.0), 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * p)) if schedule == "cosine" else 1 - p
    return min_lr_ratio + (1 - min_lr_ratio) * shape


@torch.no_grad()
def mean_token_loss(lm: nn.Module, blocks, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy of `lm` over packed blocks (N, T); exp() is perplexity."""
    total, count = 0.0, 0
    with eval_mode(lm):
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size]
            predictions = batch.numel() - len(batch)  # B x (T-1): the first token has no target
            total += lm(input_ids=batch, labels=batch).loss.item() * predictions
            count += predictions
    return total / max(count, 1)


class CausalLM(L.LightningModule):
    """The HF model trained on the next-token loss with AdamW; the learning-rate schedule runs
    on the larger of the step and time fractions used, so either budget ends the decay."""

    def __init__(
        self,
        lm: nn.Module,
        lr: float,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.1,
        max_steps: int | None = None,
        max_seconds: float | None = None,
    ):
        super().__init__()
        self.lm = lm
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.warmup_steps, self.schedule, self.min_lr_ratio = warmup_steps, schedule, min_lr_ratio
        self.max_steps, self.max_seconds = max_steps, max_seconds
        self.val_loss = MeanMetric()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of packed blocks (B, T)."""
        return self.lm(input_ids=input_ids, labels=input_ids).loss

    def _step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        loss = self(batch)
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
            self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=len(batch))
        else:  # every block holds the same number of tokens: a mean weighted by blocks is exact
            self.val_loss.update(loss, weight=len(batch))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss)
        self.log("val/ppl", loss.exp(), prog_bar=True)

    def _progress(self, step: int) -> float:
        progress = step / self.max_steps if self.max_steps else 0.0
        if self.max_seconds:
            timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
            if timer is not None:  # its elapsed time survives a resume from a checkpoint
                progress = max(progress, (timer.time_elapsed("train") or 0.0) / self.max_seconds)
        return progress

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.lm.parameters():  # no weight decay on biases and norm weights
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas)

        def schedule(step: int) -> float:  # `step` is restored with the scheduler on resume
            return lr_multiplier(step, self._progress(step), self.warmup_steps, self.schedule, self.min_lr_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
