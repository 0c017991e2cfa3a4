"""Up-stream pre-training: train a causal LM from scratch, or further (domain-adaptive), on
the next-token loss over a text corpus. The result is a backbone like any other.

    python -m shotlab.pretrain backbone=gpt2-mini tokenizer.train=true max_minutes=18
    python -m shotlab.train backbone=hf backbone.name_or_path=outputs/pretrain/gpt2-mini/model

The run folder gets `model/` (Hugging Face format: weights + tokenizer), `init/` (the same
architecture and tokenizer untrained, for random_init backbones: the control in an
ablation), `checkpoints/last.ckpt` (resume with ckpt_path=...) and `pretrain_metrics.json`.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from itertools import chain
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from shotlab import ShotlabError
from shotlab.config import check_number
from shotlab.files import write_text

log = logging.getLogger(__name__)
EOS = "<|endoftext|>"  # the end-of-text token of a trained tokenizer, as in GPT-2
HOLDOUT_SEED = 0  # the held-out blocks are the same for every training seed


# --- corpus: a list of documents --------------------------------------------------------


def _text_files(cfg: Mapping) -> list[str]:
    patterns = cfg.get("files") or []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise ShotlabError("corpus=text_files: set corpus.files to a list of text files or globs")
    docs = []
    for pattern in patterns:
        paths = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        paths = [p for p in paths if Path(p).is_file()]
        if not paths:
            raise ShotlabError(f"corpus.files: {pattern!r} matches no file")
        for path in paths:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
            docs += text.splitlines() if cfg["unit"] == "line" else [text]
    return docs


def _hf_texts(cfg: Mapping) -> list[str]:
    import datasets

    if not cfg.get("path"):
        raise ShotlabError("corpus=hf: set corpus.path to a Hugging Face dataset name, e.g. corpus.path=wikitext")
    try:
        data = datasets.load_dataset(cfg["path"], cfg.get("subset"), split=cfg["split"])
    except (ConnectionError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ShotlabError(
            f"corpus=hf: cannot load {cfg['path']!r} split {cfg['split']!r} ({first}); "
            "without network, use corpus=text_files with local files"
        ) from None
    if cfg["text_column"] not in data.column_names:
        raise ShotlabError(
            f"corpus=hf: {cfg['path']} has no column {cfg['text_column']!r} "
            f"(columns: {', '.join(data.column_names)}); set corpus.text_column"
        )
    if cfg.get("max_documents"):
        data = data.select(range(min(len(data), cfg["max_documents"])))
    return [t for t in data[cfg["text_column"]] if isinstance(t, str)]


def _task_texts(task_cfg: Mapping, exclude_eval_of: list[str]) -> list[str]:
    """The training texts of a task, labels dropped, minus every validation and test text of
    the built-in tasks in `exclude_eval_of` (their sentences overlap: review_domain's train
    split holds movie_sentiment's test sentences)."""
    from shotlab.data.tasks import load_task

    task = load_task(task_cfg)
    unseen = set()
    for name in [task_cfg["name"], *exclude_eval_of]:
        other = task if name == task_cfg["name"] else load_task({"name": name, "source": "builtin"})
        unseen.update(other.validation.texts, other.test.texts)
    return [t for t in task.train.texts if t not in unseen]


def load_corpus(cfg: Mapping, task_cfg: Mapping | None = None) -> list[str]:
    """The documents of the `corpus` config group (empty ones dropped)."""
    source = cfg.get("source")
    if source == "text_files":
        docs = _text_files(cfg)
    elif source == "hf":
        docs = _hf_texts(cfg)
    elif source == "task":
        docs = _task_texts(task_cfg, list(cfg.get("exclude_eval_of") or []))
    else:
        raise ShotlabError(f"unknown corpus.source {source!r}; use corpus=text_files, corpus=hf or corpus=task")
    docs = [d.strip() for d in docs if d.strip()]
    if cfg.get("max_documents"):
        docs = docs[: cfg["max_documents"]]
    if not docs:
        raise ShotlabError(f"corpus {cfg.get('name', source)} has no non-empty document")
    return docs


# --- tokens: a trained tokenizer, packed blocks, a held-out slice -------------------------


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE (GPT-2's scheme: any text round-trips, no unknown token) with
    `vocab_size` entries, one of them EOS, trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def pack(texts: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """Tokenise, join the documents with EOS and cut the stream into (N, block_size) blocks;
    the last partial block is dropped."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ShotlabError("the tokenizer has no EOS token to join documents with; set backbone.tokenizer")
    encoded = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    stream = np.fromiter(chain.from_iterable([*e.ids, eos] for e in encoded), dtype=np.int64)
    n = len(stream) // block_size
    return torch.from_numpy(stream[: n * block_size].reshape(n, block_size))


def split_blocks(blocks: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) blocks: a fixed random `fraction` of them is held out."""
    n_holdout = max(1, round(len(blocks) * fraction))
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return blocks[order[n_holdout:]], blocks[order[:n_holdout]]


# --- the run ---------------------------------------------------------------------------


def check_pretrain_config(cfg: DictConfig) -> None:
    """Raise a one-line ShotlabError for a value a user may have mistyped."""
    check_number(cfg, "block_size", 2, 1_000_000, integer=True)
    check_number(cfg, "holdout_fraction", 1e-6, 0.5)
    check_number(cfg, "batch_size", 1, integer=True)
    check_number(cfg, "eval_batch_size", 1, integer=True)
    check_number(cfg, "max_steps", 1, integer=True, none_ok=True)
    check_number(cfg, "max_minutes", 1e-6, none_ok=True)
    check_number(cfg, "val_every_n_steps", 1, integer=True)
    check_number(cfg, "optimizer.lr", 1e-12)
    check_number(cfg, "optimizer.weight_decay", 0)
    check_number(cfg, "optimizer.warmup_steps", 0, integer=True)
    check_number(cfg, "optimizer.min_lr_ratio", 0, 1)
    if cfg.max_steps is None and cfg.max_minutes is None:
        raise ShotlabError("set max_steps=N or max_minutes=M (or both) to bound the run")
    if cfg.optimizer.schedule not in ("cosine", "linear"):
        raise ShotlabError(f"optimizer.schedule must be 'cosine' or 'linear', got {cfg.optimizer.schedule!r}")
    if cfg.corpus.source == "text_files" and cfg.corpus.unit not in ("line", "file"):
        raise ShotlabError(f"corpus.unit must be 'line' or 'file', got {cfg.corpus.unit!r}")
    if cfg.tokenizer.train:
        check_number(cfg, "tokenizer.vocab_size", 258, integer=True)  # 256 bytes + EOS + a merge
        if not cfg.backbone.random_init:
            raise ShotlabError(
                "tokenizer.train=true needs a backbone built from scratch (random_init, e.g. backbone=gpt2-mini); "
                f"{cfg.backbone.name} has learned embeddings for its own tokenizer"
            )
    if not cfg.backbone.name_or_path and not cfg.backbone.random_init:
        raise ShotlabError("set backbone.name_or_path (a hub name or folder) or backbone.random_init")
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise ShotlabError(f"ckpt_path={cfg.ckpt_path} is not a file; point it at <run dir>/checkpoints/last.ckpt")


def _save(lm, tokenizer, folder: Path) -> None:
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def pretrain(cfg: DictConfig) -> dict:
    """Do one pre-training run and return what it writes to pretrain_metrics.json."""
    check_pretrain_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True) if cfg.get("task") else None
    texts = load_corpus(OmegaConf.to_container(cfg.corpus, resolve=True), task_cfg)
    log.info("corpus %s: %d documents", cfg.corpus.name, len(texts))

    from shotlab.models.backbone import build_backbone
    from shotlab.models.causal_lm import CausalLM, mean_token_loss

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone_cfg = OmegaConf.to_container(cfg.backbone, resolve=True)
    if cfg.tokenizer.train:
        tokenizer_dir = out / "tokenizer"
        if not (cfg.ckpt_path and tokenizer_dir.is_dir()):  # a resumed run keeps its tokenizer
            tok = train_tokenizer(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
            tok.save_pretrained(tokenizer_dir)
        backbone_cfg["tokenizer"] = str(tokenizer_dir)
    backbone = build_backbone(backbone_cfg)
    lm, tokenizer = backbone.lm, backbone.tokenizer
    if cfg.block_size > backbone.max_positions:
        raise ShotlabError(f"block_size={cfg.block_size} exceeds {cfg.backbone.name}'s {backbone.max_positions} positions")
    # A config built for GPT-2's vocabulary still names GPT-2's token ids; name this tokenizer's.
    lm.config.bos_token_id = lm.config.eos_token_id = tokenizer.eos_token_id
    if backbone_cfg.get("random_init"):
        _save(lm, tokenizer, out / "init")

    train_blocks, holdout = split_blocks(pack(texts, tokenizer, cfg.block_size), cfg.holdout_fraction)
    if len(train_blocks) < cfg.batch_size:
        raise ShotlabError(
            f"the corpus gives {len(train_blocks)} training blocks of {cfg.block_size} tokens, fewer than "
            f"batch_size={cfg.batch_size}; use a bigger corpus or a smaller block_size/batch_size"
        )
    loss_before = mean_token_loss(lm, holdout, cfg.eval_batch_size)
    log.info("held-out perplexity before: %.2f (%d blocks)", math.exp(loss_before), len(holdout))

    opt = cfg.optimizer
    max_seconds = cfg.max_minutes * 60 if cfg.max_minutes else None
    model = CausalLM(
        lm, lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas), warmup_steps=opt.warmup_steps,
        schedule=opt.schedule, min_lr_ratio=opt.min_lr_ratio, max_steps=cfg.max_steps, max_seconds=max_seconds,
    )
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=cfg.val_every_n_steps,
                                 save_last=True, save_top_k=1)
    trainer = instantiate(
        cfg.trainer, max_steps=cfg.max_steps or -1, max_epochs=-1,
        max_time=timedelta(seconds=max_seconds) if max_seconds else None,
        callbacks=[checkpoint], logger=instantiate(cfg.logger) if cfg.get("logger") else False,
        default_root_dir=str(out), num_sanity_val_steps=0, check_val_every_n_epoch=None,
        val_check_interval=cfg.val_every_n_steps,
    )
    start_step = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False)["global_step"] if cfg.ckpt_path else 0
    train_loader = DataLoader(train_blocks, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    holdout_loader = DataLoader(holdout, batch_size=cfg.eval_batch_size)
    t0 = time.perf_counter()
    trainer.fit(model, train_loader, holdout_loader, ckpt_path=cfg.ckpt_path)
    train_seconds = time.perf_counter() - t0
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")  # also when max_time stopped it mid-interval

    loss_after = mean_token_loss(lm, holdout, cfg.eval_batch_size)
    log.info("held-out perplexity after: %.2f", math.exp(loss_after))
    _save(lm, tokenizer, out / "model")
    steps = trainer.global_step
    tokens_per_step = cfg.batch_size * cfg.block_size
    result = {
        "backbone": cfg.backbone.name,
        "corpus": cfg.corpus.name,
        "documents": len(texts),
        "tokenizer": "trained" if cfg.tokenizer.train else (cfg.backbone.tokenizer or cfg.backbone.name),
        "vocab_size": len(tokenizer),
        "block_size": cfg.block_size,
        "train_blocks": len(train_blocks),
        "holdout_blocks": len(holdout),
        "holdout_loss_before": loss_before,
        "holdout_ppl_before": math.exp(loss_before),
        "holdout_loss_after": loss_after,
        "holdout_ppl_after": math.exp(loss_after),
        "steps": steps,
        "steps_this_run": steps - start_step,
        "tokens_seen": steps * tokens_per_step,
        "epochs": steps * cfg.batch_size / len(train_blocks),
        "train_seconds": train_seconds,
        "tokens_per_second": (steps - start_step) * tokens_per_step / train_seconds,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "model_dir": str(out / "model"),
    }
    write_text(out / "pretrain_metrics.json", json.dumps(result, indent=2))
    return result


@hydra.main(version_base="1.3", config_path="pkg://shotlab.conf", config_name="pretrain")
def main(cfg: DictConfig) -> float | None:
    try:
        result = pretrain(cfg)
    except ShotlabError as err:
        print(f"shotlab: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"held-out perplexity {result['holdout_ppl_before']:.1f} -> {result['holdout_ppl_after']:.1f} after "
        f"{result['steps']} steps ({result['tokens_per_second']:.0f} tokens/s); model: {result['model_dir']}"
    )
    return result["holdout_ppl_after"]


if __name__ == "__main__":
    main()
