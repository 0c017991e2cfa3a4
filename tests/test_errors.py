"""What a new user hits: each mistake is one line on stderr and a non-zero exit (a ShotlabError,
raised before any model loads where it can be), never a traceback; a checkpoint runs no code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shotlab import ShotlabError
from shotlab.config import check_config, check_paths, flat_dirname
from shotlab.train import run
from tests.conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]


def fails(cfg, message: str) -> str:
    with pytest.raises(ShotlabError, match=message) as err:
        run(cfg)
    assert "\n" not in str(err.value)
    return str(err.value)


# --- one test per row of the table ------------------------------------------------------


def test_a_run_that_cannot_run_says_why_and_what_to_run_instead(tmp_path):
    # run() returns the skipped record (a sweep records it); main() turns it into the error,
    # and the subprocess test below checks that.
    result = run(make_cfg(tmp_path, "method=finetune", "regime=zero"))
    assert result["status"] == "skipped" and "k=0" in result["reason"]
    assert "method=prompt" in result["instead"]
    assert json.loads((tmp_path / "metrics.json").read_text())["instead"] == result["instead"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("epochs=0", "epochs"), ("validations=0", "validations"), ("batch_size=0", "batch_size"),
        ("eval_batch_size=0", "eval_batch_size"), ("max_length=0", "max_length"), ("task.test_size=0", "task.test_size"),
        ("trainer.devices=0", "trainer.devices"), ("++trainer.num_nodes=0", "trainer.num_nodes"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps"),
        ("++trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
        ("head=mlp head.hidden=0", "head.hidden"), ("backbone.random_init.n_head=0", "backbone.random_init.n_head"),
        ("backbone.random_init.n_layer=0", "backbone.random_init.n_layer"),
    ],
)
def test_a_count_below_one_is_refused_at_config_check(tmp_path, override, key):
    cfg = make_cfg(tmp_path, *override.split())
    with pytest.raises(ShotlabError, match=rf"^{key} must be an integer in \[\d+, ") as err:
        check_config(cfg)
    assert "\n" not in str(err.value)


def test_devices_may_still_mean_every_device(tmp_path):
    check_config(make_cfg(tmp_path, "trainer.devices=-1"))
    check_config(make_cfg(tmp_path, "trainer.devices=auto"))


def test_an_output_folder_under_a_file_names_the_folder(tmp_path):
    (tmp_path / "file").write_text("")
    fails(make_cfg(tmp_path / "file" / "sub"), rf"cannot create the folder {tmp_path / 'file' / 'sub'} \(Not a directory\)")


@pytest.mark.parametrize("path", ["/does/not/exist", "./no/model", "~/no-such-shotlab-model", "some/deep/folder"])
def test_a_backbone_path_that_is_not_there_is_no_such_folder(tmp_path, path):
    cfg = make_cfg(tmp_path, "backbone=hf", f"backbone.name_or_path='{path}'")
    fails(cfg, f"backbone.name_or_path={path}: no such folder")
    assert not (tmp_path / "split.json").exists()  # before the task, let alone the model, loads


def test_a_hub_name_is_not_taken_for_a_path(tmp_path):
    for name in ("gpt2", "EleutherAI/pythia-160m"):
        check_paths(make_cfg(tmp_path, "backbone=hf", f"backbone.name_or_path={name}"))


def test_init_from_a_missing_folder_fails_before_the_model(tmp_path):
    fails(make_cfg(tmp_path, f"backbone.init_from={tmp_path / 'nope'}"), "backbone.init_from=.*: no such folder")


def test_a_malformed_jsonl_line_is_named_by_file_and_number(tmp_path):
    lines = [json.dumps({"text": f"line {i}", "label": "ab"[i % 2]}) for i in range(20)]
    lines[6] = '{"text": "broken, "label": "a"}'
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = make_cfg(tmp_path / "run", "task=jsonl", f"task.files.train={data}")
    fails(cfg, rf"{data} line 7 is not valid JSON")
    data.write_text("\n".join([*lines[:6], "[1, 2]", *lines[7:]]) + "\n")
    fails(cfg, rf"{data} line 7 is not a JSON object")
    data.write_bytes("\n".join(lines[:6]).encode() + b'\n{"text": "caf\xe9", "label": "a"}\n')
    fails(cfg, rf"{data} line 7 is not valid JSON \(not UTF-8 text\)")


# --- the command line: one stderr line, exit code 2 ---------------------------------------

TINY = ["backbone=tiny-gpt2", "logger=none", "task.test_size=48", "max_length=24", "trainer.enable_progress_bar=false"]


def train(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "shotlab.train", *TINY, *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_command_line_error_is_one_line_and_exit_2(tmp_path):
    done = train("epochs=0", f"output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["shotlab: error: epochs must be an integer in [1, inf], got 0"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["method=finetune", "regime=zero"], ["nothing to run: finetune trains, and k=0", "e.g. method=prompt"]),
        (["validations=0"], ["validations must be an integer in [1, inf], got 0"]),
        (["output_dir={file}/sub"], ["cannot create the folder {file}/sub (Not a directory); set output_dir"]),
        (["hydra.run.dir={file}/sub"], ["cannot create the folder {file}/sub (Not a directory); set hydra.run.dir"]),
        (["backbone=hf", "backbone.name_or_path=/does/not/exist"], ["backbone.name_or_path=/does/not/exist: no such folder"]),
        (["task=jsonl", "task.files.train={jsonl}"], ["{jsonl} line 2 is not valid JSON"]),
    ],
    ids=["skip", "count", "output_dir", "run_dir", "backbone_path", "jsonl"],
)
def test_every_table_row_is_one_line_and_exit_2(tmp_path, overrides, says):
    file, jsonl = tmp_path / "a_file", tmp_path / "bad.jsonl"
    file.write_text("")
    jsonl.write_text('{"text": "fine", "label": "a"}\n{"text": oops}\n')
    overrides = [o.format(file=file, jsonl=jsonl) for o in overrides]
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
    done = train(*overrides, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("shotlab: error: ")
    for part in says:
        assert part.format(file=file, jsonl=jsonl) in lines[0]


# --- head swap loads data, never code -----------------------------------------------------

MARKER = "marker-created-on-load"


class _ActsOnLoad:
    """Unpickling this calls Path.touch(marker): what a hostile checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_init_from_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    import torch

    from shotlab.models.classifier import load_backbone_weights
    from tests.conftest import tiny

    marker = tmp_path / MARKER
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    state = {f"backbone.{k}": v for k, v in tiny().state_dict().items()}
    torch.save({"state_dict": state, "extra": _ActsOnLoad(marker)}, tmp_path / "run" / "checkpoints" / "best.ckpt")
    with pytest.raises(ShotlabError, match="holds more than weights and plain values") as err:
        load_backbone_weights(tiny(), str(tmp_path / "run"))
    assert "\n" not in str(err.value)
    assert not marker.exists()
    torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)  # the check works:
    assert marker.exists()  # the unsafe load would have acted


# --- run folders of a sweep ---------------------------------------------------------------


def test_flat_dirname_keeps_plain_names_and_flattens_paths():
    plain = "method=linear_probe,regime.k=2,seed=0"
    assert flat_dirname(plain) == plain  # folders of existing sweeps keep their names (resume)
    a = flat_dirname("seed=0,task.files.test=/data/a/test.csv,task=csv")
    b = flat_dirname("seed=0,task.files.test=/data/b/test.csv,task=csv")
    assert "/" not in a and a.startswith("seed=0,task.files.test=test.csv,task=csv-")
    assert a != b  # same file name, other folder: other run folder
    long = flat_dirname(",".join(f"key{i}=value{i}" for i in range(40)))
    assert len(long.encode()) < 255 and "/" not in long


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine without a CUDA GPU")
@pytest.mark.parametrize(("overrides", "says"), [
    (["trainer=gpu"], "trainer.accelerator=gpu, but this machine has no CUDA GPU"),
    (["trainer=fsdp"], "trainer=fsdp (Lightning's FSDP runs on CUDA GPUs only), but this machine has no CUDA GPU"),
    (["trainer=fsdp", "trainer.accelerator=cpu"], "trainer=fsdp"),
])
def test_a_gpu_trainer_without_a_gpu_is_one_line_before_the_model(tmp_path, overrides, says):
    cfg = make_cfg(tmp_path, "method=finetune", "regime.k=2", *overrides)
    assert "trainer=cpu" in fails(cfg, rf"^{re.escape(says)}")
    assert not (tmp_path / "split.json").exists()  # before the data, so before any model


def test_backbone_dtype_and_checkpointing_values_are_checked(tmp_path):
    fails(make_cfg(tmp_path, "backbone.dtype=fp8"), r"^backbone.dtype must be one of \('auto', 'float32'")
    fails(make_cfg(tmp_path, "backbone.gradient_checkpointing=maybe"), "^backbone.gradient_checkpointing must be true")
