"""Checks of a composed config, run before any data or model loads, and its identity hash.
The method's own keys are checked by its class (shotlab.methods), built right after these."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from shotlab import ShotlabError

REGIMES = ("zero", "one", "few", "full")
CONF_MODULE = "shotlab.conf"  # the top-level conf/ folder, packed into the wheel as shotlab/conf


def conf_dir() -> Path:
    """The shipped configs, found the same way from a clone, an editable or a plain install."""
    return Path(str(importlib.resources.files(CONF_MODULE)))


def task_config(name: str) -> dict:
    """The shipped conf/task/<name>.yaml as a plain dict; a name with no such file is one line."""
    path = conf_dir() / "task" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ShotlabError(f"no task config {name!r}; the shipped tasks are {shipped}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


# Keys that change where or how a run is recorded, not what it computes.
NOT_IDENTITY = ("force", "ckpt_path", "checkpoint_optimizer", "logger", "output_dir", "hydra", "sweep_name", "full_methods")


def regime_name(k: int | None) -> str:
    """The regime a k belongs to: 0 zero, 1 one, >1 few, None (all) full."""
    if k is None:
        return "full"
    return {0: "zero", 1: "one"}.get(k, "few")


def flat_dirname(dirname: str) -> str:
    """Hydra's override_dirname as one flat folder name. A value holding a `/` (a file path, a hub
    name) keeps only its last part, and a hash of the whole name is appended, so two runs whose
    values differ only in their folders still get two folders; a name that would pass the file
    system's 255-byte limit is cut the same way."""
    if "/" not in dirname and len(dirname.encode()) <= 200:
        return dirname  # the plain key=value,... name, as before
    short = re.sub(r"[^,=\[\]]*/[^,=\[\]]*", lambda m: Path(m.group()).name or "_", dirname)
    short = short.encode()[:190].decode(errors="ignore").rstrip(",")
    return f"{short}-{hashlib.sha256(dirname.encode()).hexdigest()[:8]}"


# Regime names follow k, so a sweep over `regime.k=0,1,4,16,null` covers every regime.
if not OmegaConf.has_resolver("regime_name"):
    OmegaConf.register_new_resolver("regime_name", regime_name)
# A sweep's run folders: hydra.sweep.subdir in train.yaml.
if not OmegaConf.has_resolver("flat_dirname"):
    OmegaConf.register_new_resolver("flat_dirname", flat_dirname)


def check_value(key: str, value, low: float, high: float = float("inf"), integer=False, none_ok=False):
    """Raise a one-line ShotlabError unless `value` (of config key `key`) is a number (an int) in [low, high]."""
    if value is None and none_ok:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (low <= value <= high):
        want = "an integer" if integer else "a number"
        raise ShotlabError(f"{key} must be {want} in [{low}, {high}], got {value!r}")


def check_number(cfg: DictConfig, key: str, low: float, high: float = float("inf"), integer=False, none_ok=False):
    """Raise a one-line ShotlabError unless cfg[key] is a number (an int) in [low, high]."""
    check_value(key, OmegaConf.select(cfg, key), low, high, integer, none_ok)


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id, which is 'name' or 'namespace/name'."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def check_folder(key: str, value, what: str) -> None:
    """Raise a one-line ShotlabError when config key `key` names a local folder that does not exist."""
    if isinstance(value, str) and looks_like_path(value) and not Path(value).expanduser().is_dir():
        raise ShotlabError(f"{key}={value}: no such folder; point it at {what}")


# Architecture sizes of backbone.random_init (n_layer, num_attention_heads, hidden_size, ...).
_SIZE_KEY = re.compile(r"^(n_|num_)|_(size|layers|heads|positions)$")


DTYPES = ("auto", "float32", "bfloat16", "float16")  # backbone.dtype


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line ShotlabError for a value a user may have mistyped."""
    if cfg.regime.name not in REGIMES:
        raise ShotlabError(f"regime.name must be one of {REGIMES}, got {cfg.regime.name!r}")
    if not cfg.method.get("_target_"):
        raise ShotlabError("method has no _target_: a method yaml names its class, e.g. shotlab.methods.transfer.Finetune")
    check_number(cfg, "regime.k", 0, integer=True, none_ok=True)
    check_number(cfg, "seed", 0, integer=True)
    check_number(cfg, "max_length", 8, 1_000_000, integer=True)
    check_number(cfg, "batch_size", 1, integer=True)
    check_number(cfg, "eval_batch_size", 1, integer=True)
    check_number(cfg, "optimizer.lr", 0)
    check_number(cfg, "optimizer.weight_decay", 0)
    check_number(cfg, "optimizer.warmup_fraction", 0, 1)
    check_number(cfg, "regime.min_steps", 0, integer=True)
    check_number(cfg, "epochs", 1, integer=True)
    check_number(cfg, "validations", 1, integer=True)
    check_number(cfg, "heldout_size", 0, integer=True)
    check_number(cfg, "task.test_size", 1, integer=True, none_ok=True)
    check_number(cfg, "head.hidden", 1, integer=True, none_ok=True)
    # Counts Lightning would take only to fail later (devices=0), or divide by (log_every_n_steps=0).
    devices = OmegaConf.select(cfg, "trainer.devices")
    if isinstance(devices, int) and devices != -1:  # -1 and "auto": every device there is
        check_value("trainer.devices", devices, 1, integer=True)
    check_number(cfg, "trainer.num_nodes", 1, integer=True, none_ok=True)
    check_number(cfg, "trainer.log_every_n_steps", 1, integer=True, none_ok=True)
    check_number(cfg, "trainer.accumulate_grad_batches", 1, integer=True, none_ok=True)
    check_number(cfg, "trainer.gradient_clip_val", 0, none_ok=True)
    for key, value in (cfg.backbone.get("random_init") or {}).items():
        if _SIZE_KEY.search(key) and value is not None:  # None: the architecture's default (GPT-2's n_inner)
            check_value(f"backbone.random_init.{key}", value, 1, integer=True)
    eval_tasks = cfg.get("eval_tasks") or []
    if isinstance(eval_tasks, str) or not all(isinstance(t, str) for t in eval_tasks):
        raise ShotlabError(f"eval_tasks must be a list of task config names, e.g. eval_tasks=[product_sentiment], "
                           f"got {eval_tasks!r}")
    for name in eval_tasks:
        task_config(name)
    if cfg.optimizer.lr == 0:
        raise ShotlabError("optimizer.lr must be > 0")
    if cfg.backbone.pooling not in ("last", "mean"):
        raise ShotlabError(f"backbone.pooling must be 'last' or 'mean', got {cfg.backbone.pooling!r}")
    if not cfg.backbone.name_or_path and not cfg.backbone.random_init:
        raise ShotlabError("set backbone.name_or_path (a hub name or folder) or backbone.random_init")
    if cfg.backbone.get("dtype", "auto") not in DTYPES:
        raise ShotlabError(f"backbone.dtype must be one of {DTYPES}, got {cfg.backbone.dtype!r}")
    if not isinstance(cfg.backbone.get("gradient_checkpointing", False), bool):
        raise ShotlabError(f"backbone.gradient_checkpointing must be true or false, got "
                           f"{cfg.backbone.gradient_checkpointing!r}")


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one, or FSDP off a GPU, in one line before the model loads
    (Lightning would say so only once the model is built). Apart from check_config: this is about
    the machine, not the config (the docs' commands name trainer=gpu and compose anywhere)."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "cpu")
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy or "")
    sharded = "fsdp" in target.lower()
    if accelerator in ("gpu", "cuda") or sharded:
        import torch

        if not torch.cuda.is_available():
            what = "trainer=fsdp (Lightning's FSDP runs on CUDA GPUs only)" if sharded else \
                f"trainer.accelerator={accelerator}"
            raise ShotlabError(f"{what}, but this machine has no CUDA GPU; use trainer=cpu (or trainer=ddp "
                               "trainer.accelerator=cpu for several processes)")
        if sharded and accelerator not in ("gpu", "cuda"):
            raise ShotlabError(f"trainer=fsdp runs on GPUs; trainer.accelerator={accelerator} cannot shard")


def check_paths(cfg: DictConfig) -> None:
    """Raise a one-line ShotlabError for a local folder the config names that is not there. Apart
    from check_config: a config may name a folder an earlier step makes (pretraining_ablation)."""
    # A missing path would otherwise reach the hub as a malformed repo id.
    check_folder("backbone.name_or_path", cfg.backbone.name_or_path, "a model folder, or give a hub name such as gpt2")
    check_folder("backbone.tokenizer", cfg.backbone.get("tokenizer"), "a tokenizer folder, or give a hub name such as gpt2")
    init_from = cfg.backbone.get("init_from")
    if init_from and not Path(init_from).expanduser().is_dir():
        raise ShotlabError(f"backbone.init_from={init_from}: no such folder; point it at a finetune run folder")


def identity(cfg: DictConfig) -> dict:
    """The resolved config minus the keys that only say where or how a run is recorded."""
    keys = [k for k in cfg if k not in NOT_IDENTITY]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def config_hash(cfg: DictConfig) -> str:
    """Same hash <=> the same run (task, backbone, method, regime, k, seeds, hyper-parameters)."""
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_method(method_cfg: DictConfig):
    """The method object its yaml names (`_target_`); its constructor checks its own keys."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(method_cfg, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ShotlabError):
            raise cause from None
        first = (str(cause or err).strip().splitlines() or [""])[0]
        raise ShotlabError(f"method {method_cfg.get('name')!r} ({method_cfg.get('_target_')}): {first}") from None
