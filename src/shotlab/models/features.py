"""Pooled features of a frozen backbone, cached on disk per example id.

A linear probe never changes the backbone, so its pooled state of an example is a fixed
function of (backbone, task, split, max_length, pooling): computed once, every later run
of a sweep (other k, other seeds) reads it back instead of running the backbone again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from shotlab.assets import cache_dir
from shotlab.data.batching import pad_right
from shotlab.models.backbone import Backbone, eval_mode

# Task keys that do not change a pooled feature of an example: a fixed test subset, and the
# prompt parts (the template a feature is pooled over, if any, is a key of its own).
_NOT_FEATURE_KEYS = ("test_size", "template", "verbalizer")
# Backbone keys that change only how a batch runs (packed or padded), not the features.
_NOT_FEATURE_BACKBONE_KEYS = ("pack",)


def cache_key(backbone_cfg: Mapping, task_cfg: Mapping, max_length: int, template: str | None = None) -> str:
    """Same key <=> the same pooled feature for every example id: the backbone (and the
    modification time of a local folder's weights, which may be re-trained in place), the
    task's data, max_length, and the prompt template the text is formatted with (None: raw text)."""
    local = Path(str(backbone_cfg.get("name_or_path")))
    stamp = max((f.stat().st_mtime_ns for f in local.glob("*.safetensors")), default=0) if local.is_dir() else 0
    task = {k: v for k, v in task_cfg.items() if k not in _NOT_FEATURE_KEYS}
    backbone = {k: v for k, v in backbone_cfg.items() if k not in _NOT_FEATURE_BACKBONE_KEYS}
    key = {"backbone": backbone, "task": task, "max_length": max_length, "weights_mtime": stamp}
    if template is not None:
        key["template"] = template
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class FeatureCache:
    def __init__(self, backbone: Backbone, folder: Path, batch_size: int = 32):
        self.backbone, self.folder, self.batch_size = backbone, Path(folder), batch_size
        self.folder.mkdir(parents=True, exist_ok=True)
        self.computed = 0  # examples run through the backbone by this cache (the rest were read)

    @classmethod
    def for_run(cls, backbone: Backbone, backbone_cfg: Mapping, task_cfg: Mapping, max_length: int,
                template: str | None = None, batch_size: int = 32) -> FeatureCache:
        """The cache a run's features live in: one store per cache_key under $SHOTLAB_FEATURES
        (default: the asset cache's features/), shared by every k, seed and test_size."""
        root = Path(os.environ.get("SHOTLAB_FEATURES") or cache_dir() / "features")
        return cls(backbone, root / cache_key(backbone_cfg, task_cfg, max_length, template), batch_size)

    def _file(self, split: str) -> Path:
        return self.folder / f"{split}.pt"

    @torch.no_grad()
    def __call__(self, split: str, ids: Sequence[str], tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N, H) pooled features of the given examples, computing only those not cached yet."""
        file = self._file(split)
        store: dict[str, torch.Tensor] = torch.load(file) if file.exists() else {}
        # Longest first, so each batch pads to a similar length (padding is wasted compute).
        missing = sorted((i for i, rid in enumerate(ids) if rid not in store), key=lambda i: -len(tokens[i]))
        if missing:
            pad = self.backbone.tokenizer.pad_token_id
            from tqdm.auto import tqdm

            starts = range(0, len(missing), self.batch_size)
            with eval_mode(self.backbone):
                for start in tqdm(starts, desc=f"features {split}", unit="batch", leave=False):
                    chunk = missing[start : start + self.batch_size]
                    input_ids, mask = pad_right([tokens[i] for i in chunk], pad)
                    pooled = self.backbone(input_ids, mask)  # (b, H)
                    for row, i in enumerate(chunk):
                        store[ids[i]] = pooled[row].clone()
            self.computed += len(missing)
            tmp = file.with_suffix(f".{os.getpid()}.tmp")
            torch.save(store, tmp)
            os.replace(tmp, file)  # parallel jobs: last writer wins, nothing is half-written
        return torch.stack([store[rid] for rid in ids])
