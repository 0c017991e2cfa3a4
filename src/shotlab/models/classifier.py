"""TransferClassifier: a pretrained backbone + a new head, trained with GPT-1's recipe.

Every gradient method goes through this one module and its one `_step`: `trains="all"` trains
every weight (plus the auxiliary LM loss when asked), `"head"` only the head (on cached features
when the batch carries them), `"lora"` adapters + head. Which weights learn is decided in one
place, `set_trainable`.
"""

from __future__ import annotations

import pickle
import re
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, Checkpoint
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from shotlab import ShotlabError
from shotlab.files import write_whole
from shotlab.models.backbone import Backbone

STAGES = ("train", "val", "test")


def block_depth(name: str, num_blocks: int) -> int:
    """0 for embeddings, i+1 for transformer block i, num_blocks+1 for what follows the
    blocks (final norm): the depth used for layer-wise learning-rate decay."""
    match = re.search(r"\.(?:h|layers|layer|blocks)\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if re.search(r"embed|wte|wpe", name) else num_blocks + 1


def add_lora(backbone: Backbone, r: int, alpha: int, dropout: float, target_modules=None) -> None:
    """Inject LoRA adapters (peft) into the backbone in place; set_trainable(.., "lora") trains only them."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
    inject_adapter_in_model(config, backbone.lm)


def set_trainable(backbone: Backbone, trains: str) -> None:
    """Which backbone weights learn: "all", none ("head": only the head learns), or the LoRA adapters."""
    for name, p in backbone.named_parameters():
        p.requires_grad_(trains == "all" or (trains == "lora" and "lora_" in name))


def load_backbone_weights(backbone: Backbone, run_dir: str) -> None:
    """Head swap: load a previous run's fine-tuned backbone weights; its head is dropped."""
    ckpts = sorted(Path(run_dir).glob("checkpoints/*.ckpt"))
    if not ckpts:
        raise ShotlabError(f"backbone.init_from={run_dir} has no checkpoints/*.ckpt; point it at a finetune run folder")
    # weights_only: the unpickler builds tensors and plain containers only, so a file from
    # elsewhere cannot run code as it loads. A Lightning checkpoint holds nothing else.
    try:
        ckpt = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"WeightsUnpickler error: ([^\n.]*)", str(err))
        raise ShotlabError(
            f"backbone.init_from={run_dir}: {ckpts[0]} holds more than weights and plain values "
            f"({found.group(1) if found else 'objects'}), so it is not loaded; use a shotlab finetune run folder"
        ) from None
    except (RuntimeError, EOFError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ShotlabError(f"backbone.init_from={run_dir}: cannot read {ckpts[0]} as a checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ShotlabError(f"backbone.init_from={run_dir}: {ckpts[0]} is not a Lightning checkpoint (no state_dict)")
    state = ckpt["state_dict"]
    weights = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ShotlabError(
            f"backbone.init_from={run_dir}: its backbone does not match this one "
            f"({len(missing)} missing, {len(unexpected)} unexpected weights); use the same backbone config"
        )


def _save(state: dict, path: Path) -> None:
    """torch.save, streamed through a Python file so that a failed write keeps its OSError."""
    with open(path, "wb") as f:
        torch.save(state, f)


class BestWeights(Checkpoint):
    """The trained weights of the best dev evaluation (`monitor`, higher is better, the first of
    equals kept), written to `path` at each improvement and put back into the model by `restore`
    when training ended elsewhere; with nothing to monitor, the final weights, written once.

    The file holds only what trained ({"state_dict", "global_step", "epoch", monitor}), streamed
    to disk by torch.save: no second copy of the weights in memory, no optimizer state (that is
    `full=True`: Lightning's whole checkpoint, which `ckpt_path=` can resume from). A requeued
    run keeps the best score and file through this callback's state in its requeue checkpoint."""

    def __init__(self, path: Path, monitor: str | None = None, full: bool = False):
        self.path, self.monitor, self.full = Path(path), monitor, full
        self.best: float | None = None
        self.current = False  # the model holds the weights in `path`

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.current = False

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.monitor is None or trainer.sanity_checking:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if self.best is None or score > self.best:
            self.best = score
            self._write(trainer, pl_module, {self.monitor: score})

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is None:
            self._write(trainer, pl_module, {})

    def _write(self, trainer, model, extra: dict) -> None:
        if self.full:
            trainer.save_checkpoint(self.path)  # every rank joins; rank 0 writes
        else:
            # The strategy's state dict: the module's own, or under FSDP the full one gathered from
            # every rank's shards (a collective: every rank asks, rank 0 receives).
            weights = trainer.strategy.lightning_module_state_dict()
            if trainer.is_global_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                state = {"state_dict": model.trained_state(weights), "global_step": trainer.global_step,
                         "epoch": trainer.current_epoch, **extra}
                write_whole(self.path, lambda part: _save(state, part))
            trainer.strategy.barrier()
        self.current = True

    def restore(self, model: L.LightningModule, trainer: L.Trainer | None = None) -> None:
        """Put the written weights back into `model`, unless it holds them already (every rank
        reads the file; under FSDP each keeps its own shard of it)."""
        if self.current or not self.path.exists():
            return
        state = torch.load(self.path, map_location="cpu", weights_only=not self.full, mmap=True)["state_dict"]
        load_full_state(model, state, strict=model.trains == "all", wrapped=trainer.strategy.model if trainer else None)
        self.current = True


def load_full_state(model: nn.Module, state: dict, strict: bool, wrapped: nn.Module | None = None) -> None:
    """model.load_state_dict(state), also when training sharded it (`wrapped`, the strategy's
    FSDP module): a full state dict goes in through FSDP, which keeps each rank's shard."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import StateDictType

    if isinstance(wrapped, FSDP):
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT):
            wrapped.load_state_dict(state, strict=strict)
    else:
        model.load_state_dict(state, strict=strict)


class TrainThroughput(Callback):
    """Real tokens (attention-mask ones) and seconds of the optimizer steps alone (forward,
    backward, optimizer step; no validation, no setup), the GPU synchronised around each, written
    to <run folder>/throughput.json when training ends. Add it to any gradient run:

        python -m shotlab.train ... +callbacks.throughput._target_=shotlab.models.classifier.TrainThroughput
    """

    def __init__(self):
        self.steps, self.tokens, self.seconds, self._start = 0, 0, 0.0, 0.0

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.seconds += time.perf_counter() - self._start
        self.steps += 1
        if isinstance(batch, dict) and "attention_mask" in batch:
            self.tokens += int(batch["attention_mask"].sum())

    def on_train_end(self, trainer, pl_module) -> None:
        from shotlab.runfolder import write_json

        write_json(Path(trainer.default_root_dir) / "throughput.json",
                   {"steps": self.steps, "tokens": self.tokens, "seconds": self.seconds,
                    "tokens_per_s": self.tokens / self.seconds if self.seconds else None})


class TransferClassifier(L.LightningModule):
    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.002,
        trains: str = "all",
        backbone_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
        lm_loss_weight: float = 0.0,
    ):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.optimizer, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.warmup_fraction, self.trains = warmup_fraction, trains
        self.backbone_lr_scale, self.layer_decay = backbone_lr_scale, layer_decay
        self.lm_loss_weight = lm_loss_weight
        set_trainable(backbone, trains)
        # Checkpoints of a frozen backbone hold only what trained (see on_save_checkpoint).
        self.strict_loading = trains == "all"
        # ModuleDict keys may not shadow Module attributes ("train"), hence the suffix.
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_": MetricCollection(
                    {
                        "acc": MulticlassAccuracy(num_classes, average="micro"),
                        "f1": MulticlassF1Score(num_classes, average="macro"),
                    },
                    prefix=f"{stage}/",
                )
                for stage in STAGES
            }
        )

    def trained_state(self, state: dict | None = None) -> dict:
        """The state dict without the frozen backbone weights (rebuilt from the backbone config)."""
        state = self.state_dict() if state is None else state
        if self.trains == "all":
            return state
        trained = {f"backbone.{n}" for n, p in self.backbone.named_parameters() if p.requires_grad}
        return {k: v for k, v in state.items() if not k.startswith("backbone.") or k in trained}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.trained_state(checkpoint["state_dict"])

    def train(self, mode: bool = True):
        super().train(mode)
        if self.trains == "head":  # a frozen backbone keeps dropout off: fixed features, as cached ones
            self.backbone.eval()
        return self

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Lightning sets each submodule's mode itself (around validations too), not through
        # train() above: the frozen backbone is put back in eval mode before every step.
        # (LoRA's adapters keep their configured dropout: only trains="head" is fixed.)
        if self.trains == "head":
            self.backbone.eval()

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class logits (B, C), and the token states (B, T, H) when the backbone ran."""
        if "features" in batch:  # cached pooled states of a frozen backbone
            return self.head(batch["features"]), None
        hidden, _ = self.backbone.states(batch["input_ids"], batch["attention_mask"])
        return self.head(self.backbone.pool(hidden, batch["attention_mask"])), hidden

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits, hidden = self(batch)
        loss = F.cross_entropy(logits, batch["labels"])
        # val/test losses are epoch means: under DDP, over every process's batches (sync_dist);
        # train logs per step, and the torchmetrics metrics sync themselves.
        sync = stage != "train"
        self.log(f"{stage}/cls_loss", loss, prog_bar=False, batch_size=len(logits), sync_dist=sync)
        if stage == "train" and self.lm_loss_weight > 0 and hidden is not None:
            lm_loss = self.backbone.lm_loss(hidden, batch["input_ids"], batch["attention_mask"])
            self.log("train/lm_loss", lm_loss, batch_size=len(logits))
            loss = loss + self.lm_loss_weight * lm_loss
        metrics = self.metrics[f"{stage}_"]
        metrics.update(logits.detach(), batch["labels"])
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=len(logits), sync_dist=sync)
        self.log_dict(metrics, prog_bar=stage != "train", batch_size=len(logits))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx) -> dict:
        """Class logits with each example's position in its split (batches are length-sorted)."""
        return {"index": batch["index"], "logits": self(batch)[0]}

    def param_groups(self) -> list[dict]:
        """AdamW groups: the head at lr, pretrained weights at lr x backbone_lr_scale x
        layer_decay^(depth from the top); no weight decay on biases and norm weights."""
        num_blocks = self.backbone.lm.config.num_hidden_layers
        groups: dict[tuple[float, float], list] = {}
        rated = [(p, self.lr) for p in self.head.parameters()]
        base = self.lr * self.backbone_lr_scale
        for n, p in self.backbone.named_parameters():
            depth = block_depth(n, num_blocks)
            rated.append((p, base * self.layer_decay ** (num_blocks + 1 - depth)))
        for p, lr in rated:
            if not p.requires_grad:
                continue
            decay = 0.0 if p.ndim < 2 else self.weight_decay
            groups.setdefault((lr, decay), []).append(p)
        return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]

    def configure_optimizers(self):
        optimizer = self.optimizer(self.param_groups())
        from transformers import get_linear_schedule_with_warmup

        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, round(total * self.warmup_fraction), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
