"""Every shipped yaml composes (and, where cheap, instantiates); mistyped values fail early."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from shotlab import ShotlabError
from shotlab.config import build_method, check_config, config_hash
from tests.conftest import CONF, make_cfg

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment", "corpus"))
# Options named _* are bases, composed through the options that start from them.
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml")) if not f.stem.startswith("_")]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_option_composes_and_checks(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group == "regime" and option == "zero":
        overrides.append("method=linear_probe")
    cfg = make_cfg(tmp_path, *overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    check_config(cfg)
    if group == "method":  # the class its _target_ names, with this yaml's keys
        assert build_method(cfg.method).name == cfg.method.name
    if group == "head":
        head = instantiate(cfg.head, hidden_size=8, num_classes=3)
        assert head[-1].out_features == 3
    import torch

    gpu_only = group == "trainer" and cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available()
    if group == "optimizer":  # a partial that takes the param groups TransferClassifier builds
        weight = torch.nn.Parameter(torch.zeros(2))
        optimizer = instantiate(cfg.optimizer.optim)([{"params": [weight], "lr": 0.5}])
        assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.param_groups[0]["lr"] == 0.5
    if group == "trainer" and not gpu_only:
        assert instantiate(cfg.trainer).gradient_clip_val == 1.0  # GPT-1's clip, in every trainer
    if group == "logger" and cfg.get("logger"):
        logger = instantiate(cfg.logger)
        assert str(tmp_path) in str(logger.save_dir)  # logs land in the run folder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("regime.k=-1", "regime.k must be an integer"),
        ("regime.k=2.5", "regime.k must be an integer"),
        ("batch_size=0", "batch_size must be an integer"),
        ("optimizer.lr=0", "optimizer.lr must be > 0"),
        ("method.layer_decay=1.5", r"method.layer_decay must be a number in \[0, 1\]"),
        ("method.trains=everything", "method.trains must be one of"),
        ("method=prompt method.token_reduce=max", "method.token_reduce must be 'sum' or 'mean'"),
        ("epochs=0", r"epochs must be an integer in \[1, inf\]"),
        ("validations=0", r"validations must be an integer in \[1, inf\]"),
        ("backbone.pooling=max", "backbone.pooling must be 'last' or 'mean'"),
        ("method.lm_loss_weight=-1", "method.lm_loss_weight must be a number"),
    ],
)
def test_mistyped_values_fail_with_one_line(tmp_path, override, message):
    cfg = make_cfg(tmp_path, *override.split())
    with pytest.raises(ShotlabError, match=message) as err:
        check_config(cfg)
        build_method(cfg.method)  # a method checks its own keys when it is built
    assert "\n" not in str(err.value)


def test_regime_name_follows_k(tmp_path):
    names = [make_cfg(tmp_path, "regime=few", f"regime.k={k}").regime.name for k in (0, 1, 4, "null")]
    assert names == ["zero", "one", "few", "full"]
    assert make_cfg(tmp_path, "regime=full").regime.name == "full"


def test_config_hash_ignores_where_a_run_is_recorded(tmp_path):
    a = make_cfg(tmp_path / "a")
    b = make_cfg(tmp_path / "b", "+force=true")
    c = make_cfg(tmp_path / "a", "seed=1")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


EXPERIMENTS = sorted(f.stem for f in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_with_its_sweep(tmp_path, name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", f"output_dir={tmp_path}"], return_hydra_config=True)
    check_config(cfg)
    for key, values in (cfg.hydra.sweeper.params or {}).items():  # each swept key exists
        first = values.split(",")[0]
        with initialize_config_dir(str(CONF), version_base="1.3"):
            check_config(compose("train", overrides=[f"experiment={name}", f"{key}={first}", f"output_dir={tmp_path}"]))


def test_compare_regimes_covers_every_regime_and_method(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=compare_regimes", f"output_dir={tmp_path}"],
                      return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    ks = params["regime.k"].split(",")
    assert {"0", "1", "null"} <= set(ks) and len([k for k in ks if k not in ("0", "1", "null")]) >= 2
    assert set(params["method"].split(",")) == {"prompt", "prompt_calibrated", "prompt_probe", "linear_probe",
                                                "prompt_finetune", "finetune", "lora"}
    assert len(params["seed"].split(",")) >= 3
