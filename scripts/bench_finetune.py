"""One fine-tuning run through shotlab against a plain PyTorch loop doing the same optimizer
steps (same backbone, sample, batches, head, fused AdamW, GPT-1's LM loss at lambda = 0.5, grad
clip 1), in one process on the CPU. Prints the ratio of shotlab's training time to the loop's,
the loop's tokens/s and GFLOP/s (6 x parameters x tokens) as % of a 2048^2 fp32 matmul peak
measured here, and the peak RSS of each (Linux VmHWM, reset before each).

    .venv/bin/python scripts/bench_finetune.py --k 16 --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from shotlab.config import CONF_MODULE
from shotlab.data.datamodule import ShotDataModule
from shotlab.data.sampling import draw_sample
from shotlab.data.tasks import load_task
from shotlab.models.backbone import build_backbone
from shotlab.models.heads import LinearHead
from shotlab.tracking import peak_memory_mb, reset_peak_memory
from shotlab.train import run


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n matmul on this process's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_loop(cfg, steps: int) -> tuple[float, int, float]:
    """Seconds for `steps` optimizer steps, tokens seen, parameters: the loop shotlab's finetune runs."""
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True))
    sample = draw_sample(task, cfg.regime.k, cfg.seed)
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))
    head = LinearHead(backbone.hidden_size, task.num_classes)
    data = ShotDataModule(sample, backbone.tokenizer, max_length=cfg.max_length, batch_size=cfg.batch_size)
    data.setup()
    params = [{"params": list(head.parameters()), "lr": cfg.optimizer.lr},
              {"params": list(backbone.parameters()), "lr": cfg.optimizer.lr * cfg.method.backbone_lr_scale}]
    optimizer = torch.optim.AdamW(params, weight_decay=cfg.optimizer.weight_decay, fused=True)
    batches, tokens = [], 0
    while len(batches) < steps:
        batches += list(data.train_dataloader())
    start = time.perf_counter()
    for batch in batches[:steps]:
        hidden, _ = backbone.states(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(head(backbone.pool(hidden, batch["attention_mask"])), batch["labels"])
        loss = loss + cfg.method.lm_loss_weight * backbone.lm_loss(hidden, batch["input_ids"], batch["attention_mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 1.0)
        optimizer.step()
        tokens += int(batch["attention_mask"].sum())
    return time.perf_counter() - start, tokens, sum(p.numel() for p in backbone.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16, help="examples per class")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--test-size", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(2)
    peak = matmul_peak()
    with tempfile.TemporaryDirectory() as out, initialize_config_module(CONF_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=[
            "method=finetune", f"regime.k={args.k}", "seed=0", f"task.test_size={args.test_size}",
            f"regime.min_steps={args.steps}", "epochs=1", "logger=none", "trainer.enable_progress_bar=false",
            f"output_dir={out}"])
        reset_peak_memory()
        result = run(cfg)
        shotlab_rss = peak_memory_mb()
    reset_peak_memory()
    loop_seconds, tokens, n_params = plain_loop(cfg, result["train_steps"])
    loop_rss = peak_memory_mb()
    gflops = 6 * n_params * tokens / loop_seconds / 1e9
    print(f"matmul peak (2048^2 fp32, 2 threads): {peak:.0f} GFLOP/s")
    print(f"shotlab finetune: {result['train_steps']} steps, train_seconds {result['train_seconds']:.1f} s "
          f"(with data setup, {cfg.validations} validations, best checkpoint), peak RSS {shotlab_rss:.0f} MB")
    print(f"plain loop:       {result['train_steps']} steps, {loop_seconds:.1f} s, {tokens / loop_seconds:.0f} tok/s, "
          f"{gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f} % of peak, peak RSS {loop_rss:.0f} MB")
    print(f"ratio shotlab / plain loop: {result['train_seconds'] / loop_seconds:.2f}x")


if __name__ == "__main__":
    main()
