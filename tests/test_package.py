"""The package as users meet it: the configs travel in the wheel, entry points find them from
any folder, and importing the entry point loads no model library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from shotlab.config import conf_dir

ROOT = Path(__file__).resolve().parents[1]


def test_importing_train_loads_no_model_library():
    code = "import sys, shotlab.train; print(sorted(m for m in ('torch', 'transformers', 'lightning', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_import_cycles_and_data_does_not_import_models():
    import ast

    package = ROOT / "src" / "shotlab"
    edges: dict[str, set[str]] = {}
    for file in package.rglob("*.py"):
        name = ".".join(("shotlab", *file.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shotlab"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("shotlab")}
        # shotlab modules only (`from shotlab import ShotlabError` names the package's __init__)
        edges[name] = {m for m in imported if m != "shotlab" and (package / Path(*m.split(".")[1:])).with_suffix(".py").exists()}
    assert not any(m.startswith("shotlab.models") for n, ms in edges.items() if n.startswith("shotlab.data") for m in ms)
    assert edges["shotlab.assets"] == set()  # a leaf

    def reach(start, seen):
        for m in edges.get(start, ()):
            if m not in seen:
                seen.add(m)
                reach(m, seen)
        return seen

    cycles = [n for n in edges if n in reach(n, set())]
    assert not cycles, cycles


@pytest.mark.slow
def test_wheel_carries_every_config_and_its_entry_points_run_from_elsewhere(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "outputs", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("shotlab-*.whl"))
    shipped = {n.removeprefix("shotlab/conf/") for n in zipfile.ZipFile(wheel).namelist() if n.startswith("shotlab/conf/")}
    expected = {str(p.relative_to(conf_dir())) for p in conf_dir().rglob("*.yaml")}
    assert expected and expected <= shipped

    # Installed on its own (no editable finder in front of it), run from a folder outside the clone.
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import shotlab; print(shotlab.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))
    job = subprocess.run([str(target / "bin" / "shotlab-train"), "--cfg", "job", "method=prompt"], cwd=elsewhere,
                         env=env, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "_target_: shotlab.methods.prompt.Prompt" in job.stdout and "movie_sentiment" in job.stdout
    report = subprocess.run([str(target / "bin" / "shotlab-report"), "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert report.returncode == 0 and "usage" in (report.stdout + report.stderr).lower()
