"""One run: (task, backbone, regime, method, split seed) -> metrics.json in its run folder.

    python -m shotlab.train method=finetune regime=few regime.k=16 seed=1

run(): check the config -> build the method -> load the task and draw the sample -> (now the
model loads) build the backbone -> method.run() -> metrics.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from shotlab import ShotlabError
from shotlab.config import build_method, check_config, config_hash
from shotlab.data.sampling import draw_sample
from shotlab.data.tasks import load_task


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _identity(cfg: DictConfig) -> dict:
    return {
        "task": cfg.task.name, "backbone": cfg.backbone.name, "method": cfg.method.name,
        "regime": cfg.regime.name, "k": cfg.regime.k, "per_class": cfg.regime.per_class, "seed": cfg.seed,
        "init_from": cfg.backbone.get("init_from"), "config_hash": config_hash(cfg),
    }


def _skip_reason(cfg: DictConfig, method) -> str | None:
    """Why a (method, regime, seed) cell of a sweep is not worth running, or None."""
    k = cfg.regime.k
    reason = method.skip_reason(k)
    if reason:
        return reason
    full_methods = cfg.get("full_methods")
    if k is None and full_methods is not None and method.name not in full_methods:
        return f"full data runs only for full_methods={list(full_methods)} here (too slow for this sweep)"
    if k in (None, 0) and cfg.seed != 0:  # nothing is sampled: every split seed gives the same run
        return "does not depend on the split seed; run once, as seed=0"
    return None


def run(cfg: DictConfig) -> dict:
    """Do one run and return what it writes to metrics.json."""
    check_config(cfg)
    method = build_method(cfg.method)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.json"
    record = _identity(cfg)
    if metrics_file.exists() and not cfg.get("force", False):
        previous = json.loads(metrics_file.read_text())
        if previous.get("config_hash") == record["config_hash"] and previous.get("status") in ("ok", "skipped"):
            return previous

    reason = _skip_reason(cfg, method)
    if reason:
        result = {**record, "status": "skipped", "reason": reason}
        _write_json(metrics_file, result)
        return result

    from shotlab.tracking import finish_logger, make_logger, peak_memory_mb, reset_peak_memory

    reset_peak_memory()
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True))
    sample = draw_sample(task, cfg.regime.k, cfg.seed, cfg.regime.per_class)
    if cfg.get("force", False) and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")  # +force=true redoes the run from scratch
    _write_json(out / "split.json", sample.record())

    # Everything a user can get wrong has been checked; only now do torch and the model load.
    from lightning.fabric.utilities.seed import seed_everything

    from shotlab.methods.base import Job
    from shotlab.predictions import test_metrics
    from shotlab.models.backbone import build_backbone
    from shotlab.models.classifier import load_backbone_weights

    seed_everything(cfg.train_seed, workers=True, verbose=False)
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))
    if cfg.backbone.init_from:
        load_backbone_weights(backbone, cfg.backbone.init_from)
    logger = make_logger(cfg.get("logger"))
    outcome = method.run(Job(cfg, sample, backbone, out, logger))
    result = {**record, "status": "ok", **test_metrics(outcome.scores["test"], task.test.labels, task.num_classes),
              **outcome.extra, "num_train": len(sample.train), "num_test": len(task.test),
              "chance": max(task.test.class_counts(task.num_classes)) / len(task.test),
              "label_names": list(task.label_names), "peak_memory_mb": peak_memory_mb()}
    _write_json(metrics_file, result)
    finish_logger(logger, record, result)
    return result


@hydra.main(version_base="1.3", config_path="pkg://shotlab.conf", config_name="train")
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
