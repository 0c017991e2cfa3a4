"""Pooled features of a frozen backbone, cached on disk by the tokens they were pooled over.

A linear probe never changes the backbone, so the pooled state of a token sequence is a fixed
function of (backbone, tokens): computed once, every later run of a sweep (other k, other seeds,
other test sizes) reads it back instead of running the backbone again.

What makes an entry: its key is a digest of the token ids themselves, which already hold the
text as read from the data file, the prompt template and the max_length cut. A CSV edited in
place therefore gives new tokens and new entries, never its old features. The folder is one per
backbone (its config, the modification time of a local folder's weights, which may be
re-trained in place) and FORMAT, which changes when the code changes what a feature is.

Layout, for many writers at once (a SLURM array shares one cache): a folder of shards, each
written by one process with the entries it computed (safetensors: `keys` (n, 16) uint8 digests,
`features` (n, H)), under a temporary name renamed into place once complete, so a reader never
sees half a shard and no writer replaces another's. A shard that cannot be read is reported once,
removed, and its entries computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from shotlab.assets import cache_dir
from shotlab.data.batching import pad_right
from shotlab.files import write_whole
from shotlab.models.backbone import Backbone, eval_mode

FORMAT = 2  # 1: one {example id: feature} file per split, keyed by the task's config
# Backbone keys that change only how a batch runs (packed or padded; checkpointed in training),
# not the features.
_NOT_FEATURE_BACKBONE_KEYS = ("pack", "gradient_checkpointing")
DIGEST_BYTES = 16


def cache_key(backbone_cfg: Mapping, placement: tuple[torch.device, torch.dtype] | None = None) -> str:
    """Same key <=> the same pooled feature of every token sequence: the backbone, the modification
    time of a local folder's weights, where and in which dtype it encodes (bf16 features, or a
    GPU's fp32 ones, differ from a CPU's fp32 ones in their last bits), and the cache's FORMAT."""
    local = Path(str(backbone_cfg.get("name_or_path")))
    stamp = max((f.stat().st_mtime_ns for f in local.glob("*.safetensors")), default=0) if local.is_dir() else 0
    backbone = {k: v for k, v in backbone_cfg.items() if k not in _NOT_FEATURE_BACKBONE_KEYS}
    device, dtype = placement or (torch.device("cpu"), torch.float32)
    backbone["dtype"] = f"{str(dtype).removeprefix('torch.')}-{device.type}"
    blob = json.dumps({"backbone": backbone, "weights_mtime": stamp, "format": FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def digest(tokens: Sequence[int]) -> bytes:
    """The entry key of a token sequence."""
    return hashlib.blake2b(torch.tensor(tokens, dtype=torch.int64).numpy().tobytes(), digest_size=DIGEST_BYTES).digest()


class FeatureCache:
    """Callable as a DataModule encoder: (split, tokens) -> (N, H) pooled features."""

    def __init__(self, backbone: Backbone, folder: Path, batch_size: int = 32,
                 placement: tuple[torch.device, torch.dtype] | None = None):
        self.backbone, self.folder, self.batch_size = backbone, Path(folder), batch_size
        self.placement = placement  # where and in which dtype to encode (None: where the backbone is)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.computed = 0  # sequences run through the backbone by this cache (the rest were read)

    @classmethod
    def for_run(cls, backbone: Backbone, backbone_cfg: Mapping, batch_size: int = 32,
                trainer_cfg: Mapping | None = None) -> FeatureCache:
        """The cache a run's features live in: one folder per cache_key under $SHOTLAB_FEATURES
        (default: the asset cache's features/), shared by every task, k, seed and test_size. The
        backbone encodes where and in which dtype `scoring_placement` says."""
        from shotlab.models.backbone import scoring_placement

        placement = scoring_placement(backbone_cfg, trainer_cfg)
        root = Path(os.environ.get("SHOTLAB_FEATURES") or cache_dir() / "features")
        return cls(backbone, root / cache_key(backbone_cfg, placement), batch_size, placement)

    @classmethod
    def for_config(cls, backbone: Backbone, cfg) -> FeatureCache:
        """`for_run` from a run's config: its backbone and trainer groups, its eval_batch_size."""
        from omegaconf import OmegaConf

        return cls.for_run(backbone, OmegaConf.to_container(cfg.backbone, resolve=True), cfg.eval_batch_size,
                           OmegaConf.to_container(cfg.trainer))

    def _read(self, wanted: set[bytes]) -> dict[bytes, torch.Tensor]:
        """The cached features of the wanted digests, from every complete shard that holds some."""
        from safetensors import SafetensorError, safe_open

        found: dict[bytes, torch.Tensor] = {}
        for shard in sorted(self.folder.glob("*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    keys = [row.tobytes() for row in f.get_tensor("keys").numpy()]
                    rows = [i for i, k in enumerate(keys) if k in wanted and k not in found]
                    if rows:
                        features = f.get_tensor("features")
                        found.update((keys[i], features[i]) for i in rows)
            except (SafetensorError, OSError, RuntimeError, ValueError) as err:
                print(f"shotlab: warning: feature cache shard {shard} is unreadable ({err}); "
                      "removed, its features are computed again", file=sys.stderr)
                shard.unlink(missing_ok=True)
        return found

    def _write(self, keys: list[bytes], features: torch.Tensor) -> None:
        """One new shard, complete before it has its name."""
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        tensors = {"keys": torch.tensor([list(k) for k in keys], dtype=torch.uint8), "features": features.contiguous()}

        def save(part: Path) -> None:
            try:
                save_file(tensors, str(part))
            except SafetensorError as err:  # e.g. "... I/O error: No space left on device (os error 28)"
                code = re.search(r"os error (\d+)", str(err))
                raise (OSError(int(code[1]), os.strerror(int(code[1]))) if code else OSError(str(err))) from None

        write_whole(self.folder / f"{uuid.uuid4().hex}.safetensors", save)

    @torch.no_grad()
    def __call__(self, split: str, tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N, H) pooled features of the given token sequences, computing only those not cached yet."""
        keys = [digest(t) for t in tokens]
        store = self._read(set(keys))
        todo = {k: i for i, k in enumerate(keys) if k not in store}  # one row per distinct sequence
        # Longest first, so each batch pads to a similar length (padding is wasted compute).
        missing = sorted(todo.values(), key=lambda i: -len(tokens[i]))
        if missing:
            pad = self.backbone.tokenizer.pad_token_id
            from tqdm.auto import tqdm

            pooled = []
            if self.placement is not None:  # the frozen backbone is used for nothing else after its features
                self.backbone.place(*self.placement)
            device = self.backbone.device
            with eval_mode(self.backbone):
                for start in tqdm(range(0, len(missing), self.batch_size), desc=f"features {split}", unit="batch",
                                  leave=False):
                    chunk = missing[start : start + self.batch_size]
                    batch = pad_right([tokens[i] for i in chunk], pad, device)
                    pooled.append(self.backbone(*batch).float().cpu())  # (b, H), stored as float32
            new = torch.cat(pooled)
            self._write([keys[i] for i in missing], new)
            store.update(zip((keys[i] for i in missing), new))
            self.computed += len(missing)
        return torch.stack([store[k] for k in keys])
