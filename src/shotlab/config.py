"""Checks of a composed config, run before any data or model loads, and its identity hash."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from shotlab import ShotlabError

REGIMES = ("zero", "one", "few", "full")
METHODS = ("prompt", "prompt_finetune", "finetune", "linear_probe", "lora")
TRAINS = ("none", "all", "head", "lora")
# Keys that change where or how a run is recorded, not what it computes.
NOT_IDENTITY = ("force", "ckpt_path", "checkpoint_optimizer", "logger", "output_dir", "hydra", "sweep_name", "full_methods")


def regime_name(k: int | None) -> str:
    """The regime a k belongs to: 0 zero, 1 one, >1 few, None (all) full."""
    if k is None:
        return "full"
    return {0: "zero", 1: "one"}.get(k, "few")


# Regime names follow k, so a sweep over `regime.k=0,1,4,16,null` covers every regime.
if not OmegaConf.has_resolver("regime_name"):
    OmegaConf.register_new_resolver("regime_name", regime_name)


def check_number(cfg: DictConfig, key: str, low: float, high: float = float("inf"), integer=False, none_ok=False):
    """Raise a one-line ShotlabError unless cfg[key] is a number (an int) in [low, high]."""
    value = OmegaConf.select(cfg, key)
    if value is None and none_ok:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (low <= value <= high):
        want = "an integer" if integer else "a number"
        raise ShotlabError(f"{key} must be {want} in [{low}, {high}], got {value!r}")


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line ShotlabError for a value a user may have mistyped."""
    if cfg.regime.name not in REGIMES:
        raise ShotlabError(f"regime.name must be one of {REGIMES}, got {cfg.regime.name!r}")
    if cfg.method.name not in METHODS:
        raise ShotlabError(f"method.name must be one of {METHODS}, got {cfg.method.name!r}")
    if cfg.method.trains not in TRAINS:
        raise ShotlabError(f"method.trains must be one of {TRAINS}, got {cfg.method.trains!r}")
    check_number(cfg, "regime.k", 0, integer=True, none_ok=True)
    check_number(cfg, "seed", 0, integer=True)
    check_number(cfg, "max_length", 8, 1_000_000, integer=True)
    check_number(cfg, "batch_size", 1, integer=True)
    check_number(cfg, "eval_batch_size", 1, integer=True)
    check_number(cfg, "optimizer.lr", 0)
    check_number(cfg, "optimizer.weight_decay", 0)
    check_number(cfg, "optimizer.warmup_fraction", 0, 1)
    check_number(cfg, "method.lm_loss_weight", 0)
    check_number(cfg, "method.backbone_lr_scale", 0)
    check_number(cfg, "method.layer_decay", 0, 1)
    check_number(cfg, "method.min_steps", 0, integer=True)
    check_number(cfg, "regime.min_steps", 0, integer=True)
    if cfg.optimizer.lr == 0:
        raise ShotlabError("optimizer.lr must be > 0")
    if cfg.backbone.pooling not in ("last", "mean"):
        raise ShotlabError(f"backbone.pooling must be 'last' or 'mean', got {cfg.backbone.pooling!r}")
    if not cfg.backbone.name_or_path and not cfg.backbone.random_init:
        raise ShotlabError("set backbone.name_or_path (a hub name or folder) or backbone.random_init")


def identity(cfg: DictConfig) -> dict:
    """The resolved config minus the keys that only say where or how a run is recorded."""
    keys = [k for k in cfg if k not in NOT_IDENTITY]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def config_hash(cfg: DictConfig) -> str:
    """Same hash <=> the same run (task, backbone, method, regime, k, seeds, hyper-parameters)."""
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
