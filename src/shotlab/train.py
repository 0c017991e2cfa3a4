"""One run: (task, backbone, regime, method, split seed) -> metrics.json in its run folder.

    python -m shotlab.train method=finetune regime=few regime.k=16 seed=1
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from shotlab import ShotlabError
from shotlab.config import check_config, config_hash
from shotlab.data.datamodule import ShotDataModule
from shotlab.data.tasks import load_task


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _reset_peak_memory() -> None:
    """Start this process's peak-RSS count afresh (Linux), so each run of a multirun reports its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_mb() -> float:
    """Peak resident memory since the last reset (Linux VmHWM), else since the process started."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _init_from(backbone, run_dir: str) -> None:
    """Head swap: load a previous run's fine-tuned backbone weights; its head is dropped."""
    ckpts = sorted(Path(run_dir).glob("checkpoints/*.ckpt"))
    if not ckpts:
        raise ShotlabError(f"backbone.init_from={run_dir} has no checkpoints/*.ckpt; point it at a finetune run folder")
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)["state_dict"]
    weights = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ShotlabError(
            f"backbone.init_from={run_dir}: its backbone does not match this one "
            f"({len(missing)} missing, {len(unexpected)} unexpected weights); use the same backbone config"
        )


def _identity(cfg: DictConfig, k: int | None) -> dict:
    return {
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "method": cfg.method.name,
        "regime": cfg.regime.name,
        "k": k,
        "per_class": cfg.regime.per_class,
        "seed": cfg.seed,
        "init_from": cfg.backbone.get("init_from"),
        "config_hash": config_hash(cfg),
    }


def _make_logger(cfg: DictConfig):
    if not cfg.get("logger"):
        return False
    if "Wandb" in cfg.logger.get("_target_", ""):
        from shotlab.tracking import ensure_wandb_mode

        ensure_wandb_mode()
    return instantiate(cfg.logger)


def _finish_logger(logger, record: dict, result: dict) -> None:
    """Log the run's identity and final numbers, then close it (a sweep logs every job)."""
    if not logger:
        return
    logger.log_hyperparams(record)
    numbers = {f"final/{k}": v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    logger.log_metrics(numbers)
    if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
        logger.experiment.summary.update({**record, **numbers})
        logger.experiment.finish()
    else:
        logger.finalize("success")


def _skip_reason(cfg: DictConfig, k: int | None) -> str | None:
    """Why a (method, regime, seed) cell of a sweep is not worth running, or None."""
    method = cfg.method.name
    if cfg.method.trains != "none" and k == 0 and method != "prompt_finetune":
        return f"{method} trains, and k=0 gives it nothing to train on"
    if method == "prompt" and k is None:
        return "prompt puts its examples in the context; all of them do not fit (use a few-shot k)"
    full_methods = cfg.get("full_methods")
    if k is None and full_methods is not None and method not in full_methods:
        return f"full data runs only for full_methods={list(full_methods)} here (too slow for this sweep)"
    seed_free = k is None or (method in ("prompt", "prompt_finetune") and k == 0)
    if seed_free and cfg.seed != 0:
        return "does not depend on the split seed; run once, as seed=0"
    return None


def run(cfg: DictConfig) -> dict:
    """Do one run and return what it writes to metrics.json."""
    check_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.json"
    k = cfg.regime.k  # None: full
    record = _identity(cfg, k)
    if metrics_file.exists() and not cfg.get("force", False):
        previous = json.loads(metrics_file.read_text())
        if previous.get("config_hash") == record["config_hash"] and previous.get("status") in ("ok", "skipped"):
            return previous

    reason = _skip_reason(cfg, k)
    if reason:
        result = {**record, "status": "skipped", "reason": reason}
        _write_json(metrics_file, result)
        return result

    _reset_peak_memory()
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True))
    data = ShotDataModule(
        task, tokenizer=None, k=k, seed=cfg.seed, per_class=cfg.regime.per_class,
        max_length=cfg.max_length, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
        shuffle_seed=cfg.train_seed,
    )
    if cfg.get("force", False) and (out / "checkpoints").exists():
        import shutil

        shutil.rmtree(out / "checkpoints")  # +force=true redoes the run from scratch
    _write_json(out / "split.json", data.split_record())

    # Everything a user can get wrong has been checked; now the model loads.
    from shotlab.models.backbone import build_backbone

    L.seed_everything(cfg.train_seed, workers=True, verbose=False)
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))
    if cfg.backbone.init_from:
        _init_from(backbone, cfg.backbone.init_from)
    data.tokenizer = backbone.tokenizer
    logger = _make_logger(cfg)
    if cfg.method.name == "prompt":
        result = _prompt(cfg, task, data, backbone)
    else:
        result = _fit_and_test(cfg, task, data, backbone, out, logger)
    result = {**record, "status": "ok", **result, "num_train": data.num_train, "num_test": len(task.test),
              "chance": max(task.test.class_counts(task.num_classes)) / len(task.test),
              "label_names": list(task.label_names),
              "peak_memory_mb": _peak_memory_mb()}
    _write_json(metrics_file, result)
    _finish_logger(logger, record, result)
    return result


def _scores(predictions: torch.Tensor, labels, num_classes: int) -> dict:
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    target = torch.as_tensor(labels)
    return {
        "test_acc": multiclass_accuracy(predictions, target, num_classes, average="micro").item(),
        "test_f1": multiclass_f1_score(predictions, target, num_classes, average="macro").item(),
        "confusion": multiclass_confusion_matrix(predictions, target, num_classes).tolist(),
    }


def _prompt(cfg: DictConfig, task, data: ShotDataModule, backbone) -> dict:
    """Zero-shot (k=0) or in-context (the k-shot sample as demonstrations) LM scoring."""
    from shotlab.models.scorer import LMScorer, demonstrations

    train = data.splits["train"]
    demos = demonstrations(train.texts, train.labels, task.template, task.verbalizer, seed=cfg.seed)
    scorer = LMScorer(backbone, task.template, task.verbalizer, token_reduce=cfg.method.token_reduce,
                      batch_size=cfg.eval_batch_size)
    t0 = time.perf_counter()
    scored = scorer.score(task.test.texts, demos, calibrate=cfg.method.calibrate)
    return {**_scores(scored.predictions, task.test.labels, task.num_classes),
            "train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0,
            "num_demonstrations": scored.num_demonstrations}


def _verbalizer_head(backbone, task):
    from shotlab.models.heads import VerbalizerHead
    from shotlab.models.scorer import verbalizer_words

    word_ids, word_label = verbalizer_words(backbone.tokenizer, task.verbalizer)
    weight = backbone.lm.get_output_embeddings().weight.detach()
    return VerbalizerHead(weight, [ids[0] for ids in word_ids], word_label, task.num_classes)


def _fit_and_test(cfg: DictConfig, task, data: ShotDataModule, backbone, out: Path, logger) -> dict:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from shotlab.models.classifier import TransferClassifier, add_lora
    from shotlab.models.features import FeatureCache
    from shotlab.requeue import ResumeOnSlurm, hpc_checkpoints

    method = cfg.method
    if method.trains == "lora":
        add_lora(backbone, **OmegaConf.to_container(method.lora, resolve=True))
    if method.get("feature_cache"):
        import os

        from shotlab.assets import cache_dir

        # Stored per example id: one store serves every k, seed, test_size, template and verbalizer.
        task_cfg = {k: v for k, v in cfg.task.items() if k not in ("test_size", "template", "verbalizer")}
        local = Path(str(cfg.backbone.name_or_path))  # a local folder's weights may be re-trained in place
        stamp = max((f.stat().st_mtime_ns for f in local.glob("*.safetensors")), default=0) if local.is_dir() else 0
        key = config_hash(OmegaConf.create({"backbone": cfg.backbone, "task": task_cfg, "max_length": cfg.max_length,
                                            "weights_mtime": stamp}))
        root = Path(os.environ.get("SHOTLAB_FEATURES") or cache_dir() / "features")
        data.encoder = FeatureCache(backbone, root / key, batch_size=cfg.eval_batch_size)
    if method.name == "prompt_finetune":  # the zero-shot classifier as the starting head
        head = _verbalizer_head(backbone, task)
        data.template = task.template
    else:
        head = instantiate(cfg.head, hidden_size=backbone.hidden_size, num_classes=task.num_classes)
    model = TransferClassifier(
        backbone, head, task.num_classes,
        optimizer=instantiate(cfg.optimizer.optim), lr=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.weight_decay, warmup_fraction=cfg.optimizer.warmup_fraction,
        trains=method.trains, backbone_lr_scale=method.backbone_lr_scale,
        layer_decay=method.layer_decay, lm_loss_weight=method.lm_loss_weight,
    )
    has_val = "validation" in data.splits and len(data.splits["validation"]) > 0
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        monitor="val/acc" if has_val else None, mode="max", save_top_k=1,
        filename="best" if has_val else "last", save_weights_only=not cfg.checkpoint_optimizer,
    )
    steps_per_epoch = math.ceil(data.num_train / cfg.batch_size)
    max_steps = max(cfg.regime.min_steps, cfg.method.min_steps, cfg.trainer.max_epochs * steps_per_epoch, 1)
    # Small samples repeat their few batches for min_steps; validate max_epochs times in all,
    # evenly spaced in steps, rather than after every (one-batch) epoch.
    trainer = instantiate(
        cfg.trainer, max_steps=max_steps, max_epochs=-1, callbacks=[checkpoint, ResumeOnSlurm()], logger=logger,
        default_root_dir=str(out), num_sanity_val_steps=0, check_val_every_n_epoch=None,
        val_check_interval=math.ceil(max_steps / cfg.trainer.max_epochs),
    )
    t0 = time.perf_counter()
    data.setup()
    if data.num_train:  # k=0 (prompt_finetune's zero-shot head): nothing trains
        resume = hpc_checkpoints(out)  # a requeued SLURM job goes on from where it stopped
        trainer.fit(model, datamodule=data, ckpt_path=resume[-1] if resume else cfg.ckpt_path)
    for done in hpc_checkpoints(out):  # on SLURM, test(ckpt_path=None) would load the newest
        done.unlink()
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.test(model, datamodule=data, ckpt_path="best" if has_val and data.num_train else None, verbose=False)
    eval_seconds = time.perf_counter() - t0
    res = model.test_results
    return {"test_acc": res["acc"], "test_f1": res["f1"], "confusion": res["confusion"],
            "train_seconds": train_seconds, "eval_seconds": eval_seconds, "train_steps": trainer.global_step,
            "best_checkpoint": checkpoint.best_model_path or checkpoint.last_model_path}


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        result = run(cfg)
    except Exception as err:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if isinstance(err, ShotlabError):
                print(f"shotlab: error: {err}", file=sys.stderr)
                sys.exit(2)
            raise
        # In a sweep one failed run must not stop the others; the report lists it.
        print(f"shotlab: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        _write_json(out / "metrics.json", {"status": "failed", "error": error})
        return None
    return result.get("test_acc")


if __name__ == "__main__":
    main()
