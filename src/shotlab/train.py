"""One run: (task, backbone, regime, method, split seed) -> metrics.json in its run folder.

    python -m shotlab.train method=finetune regime=few regime.k=16 seed=1

run(): check the config -> build the method -> load the task and draw the sample -> (now the
model loads) build the backbone -> method.run() -> metrics.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from shotlab import ShotlabError
from shotlab.config import (
    build_method,
    check_accelerator,
    check_config,
    check_paths,
    config_hash,
    task_config,
)
from shotlab.data.sampling import draw_sample
from shotlab.data.tasks import DEFAULT_PROMPT, load_task
from shotlab.runfolder import fail, make_folder, write_json, writes


def _identity(cfg: DictConfig, method) -> dict:
    return {
        "task": cfg.task.name, "prompt": cfg.task.get("prompt") or DEFAULT_PROMPT, "backbone": cfg.backbone.name,
        "method": cfg.method.name, "method_label": method.label,
        "regime": cfg.regime.name, "k": cfg.regime.k, "per_class": cfg.regime.per_class, "seed": cfg.seed,
        "init_from": cfg.backbone.get("init_from"), "config_hash": config_hash(cfg), "overrides": _overrides(),
    }


def _skip_reason(cfg: DictConfig, method) -> tuple[str, str] | None:
    """Why a (method, regime, seed) cell of a sweep is not worth running and what to run instead,
    or None. A sweep records the cell as skipped; a single run fails with both (main)."""
    k = cfg.regime.k
    if skip := method.skip_reason(k):
        return skip
    full_methods = cfg.get("full_methods")
    if k is None and full_methods is not None and method.name not in full_methods:
        return (f"full data runs only for full_methods={list(full_methods)} here (too slow for this sweep)",
                f"add {method.name} to full_methods, or set full_methods=null")
    if k in (None, 0) and cfg.seed != 0:  # nothing is sampled: every split seed gives the same run
        return "does not depend on the split seed; run once, as seed=0", "the same run is seed=0"
    return None


def _overrides() -> dict[str, str]:
    """This run's command-line overrides (key -> value), which the report's selection reads."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs}


def _eval_splits(names, task) -> dict:
    """The test split of each eval task (loaded like any task, its own test_size), for the run's
    final classifier to score with the training task's prompt. A task whose label names differ is
    one line: the classifier has no scores for its labels."""
    splits = {}
    for name in names:
        if name == task.name:
            raise ShotlabError(f"eval_tasks: {name} is the training task; its test split is scored already")
        other = load_task(task_config(name))
        if other.label_names != task.label_names:
            raise ShotlabError(f"eval_tasks: {name} has labels {list(other.label_names)}, but {task.name} has "
                               f"{list(task.label_names)}; a classifier scores only the labels it was built for")
        splits[name] = other.test
    return splits


def run(cfg: DictConfig) -> dict:
    """Do one run and return what it writes to metrics.json."""
    check_config(cfg)
    check_paths(cfg)
    check_accelerator(cfg)
    method = build_method(cfg.method)
    method.check(cfg)
    out = make_folder(Path(cfg.output_dir), "output_dir")
    metrics_file = out / "metrics.json"
    record = _identity(cfg, method)
    if metrics_file.exists() and not cfg.get("force", False):
        previous = json.loads(metrics_file.read_text())
        if previous.get("config_hash") == record["config_hash"] and previous.get("status") in ("ok", "skipped"):
            return previous

    skip = _skip_reason(cfg, method)
    if skip:
        result = {**record, "status": "skipped", "reason": skip[0], "instead": skip[1]}
        write_json(metrics_file, result)
        return result

    from shotlab.tracking import finish_logger, make_logger, peak_memory_mb, reset_peak_memory

    reset_peak_memory()
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True))
    sample = draw_sample(task, cfg.regime.k, cfg.seed, cfg.regime.per_class, cfg.heldout_size)
    sample = dataclasses.replace(sample, evals=_eval_splits(cfg.get("eval_tasks") or [], task))
    if cfg.get("force", False) and writes() and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")  # +force=true redoes the run from scratch
    write_json(out / "split.json", sample.record())
    # The prompt as the run read it (a generated format variant is only a name in the config).
    write_json(out / "prompt.json", {"name": task.prompt, "template": task.template,
                                     "verbalizer": dict(zip(task.label_names, map(list, task.verbalizer)))})

    # Everything a user can get wrong has been checked; only now do torch and the model load.
    from lightning.fabric.utilities.seed import seed_everything

    from shotlab.methods.base import Job
    from shotlab.models.backbone import build_backbone
    from shotlab.models.classifier import load_backbone_weights
    from shotlab.predictions import sample_metrics, write_predictions

    seed_everything(cfg.train_seed, workers=True, verbose=False)
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))
    if cfg.backbone.init_from:
        load_backbone_weights(backbone, cfg.backbone.init_from)
    logger = make_logger(cfg.get("logger"))
    outcome = method.run(Job(cfg, sample, backbone, out, logger))
    rows = write_predictions(out / "predictions.jsonl", sample, outcome.scores, outcome.columns)
    result = {**record, "status": "ok", **sample_metrics(sample, outcome.scores), **outcome.extra,
              "peak_memory_mb": peak_memory_mb()}
    write_json(metrics_file, result)
    finish_logger(logger, record, result, rows)
    return result


@hydra.main(version_base="1.3", config_path="pkg://shotlab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from shotlab.tracking import quiet_lightning

    quiet_lightning()
    single = HydraConfig.get().mode != RunMode.MULTIRUN
    try:
        result = run(cfg)
    except Exception as err:
        if single:
            if isinstance(err, ShotlabError):
                fail(err)
            raise
        # In a sweep one failed run must not stop the others; the report lists it.
        print(f"shotlab: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        with contextlib.suppress(ShotlabError):  # a run folder that cannot be created: the error is printed only
            out = make_folder(Path(cfg.output_dir), "output_dir")
            write_json(out / "metrics.json", {"status": "failed", "error": error})
        return None
    if single and result["status"] == "skipped":  # a sweep records the skip; one run asked for must run
        fail(ShotlabError(f"nothing to run: {result['reason']}; {result.get('instead', 'see metrics.json')}"))
    return result.get("test_acc")


if __name__ == "__main__":
    main()
