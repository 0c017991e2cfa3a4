"""One fine-tuning run through shotlab against a plain PyTorch loop doing the same optimizer
steps (same backbone, sample, batches, head, fused AdamW, GPT-1's LM loss at lambda = 0.5, grad
clip 1), on the CPU. Each arm runs in a fresh process of its own, so that its peak RSS (Linux
VmHWM) is its own; each measures the fp32 matmul peak (2048^2, 2 threads) right before and after
its work, and the best of those is the peak its % is of (this machine's speed drifts by tens of
% within minutes, so ratios of seconds across processes are printed next to the ratio of the
two arms' % of peak, which drift does not move).

    .venv/bin/python scripts/bench_finetune.py --k 16 --steps 10 [--padded] [--checkpointing]

--padded adds the plain loop with backbone.pack=false (every batch padded to its longest text):
the step before packing. --checkpointing adds the shotlab run and the plain loop with
backbone.gradient_checkpointing=true: the memory activation checkpointing saves and the time it costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

ARMS = ("shotlab", "loop", "loop-padded", "shotlab-checkpointed", "loop-checkpointed")


def compose_cfg(k: int, steps: int, test_size: int, out: str, pack: bool = True, checkpointing: bool = False):
    from hydra import compose, initialize_config_module

    from shotlab.config import CONF_MODULE

    with initialize_config_module(CONF_MODULE, version_base="1.3"):
        return compose("train", overrides=[
            "method=finetune", f"regime.k={k}", "seed=0", f"task.test_size={test_size}", f"regime.min_steps={steps}",
            "epochs=1", "logger=none", "trainer.enable_progress_bar=false", f"backbone.pack={str(pack).lower()}",
            f"backbone.gradient_checkpointing={str(checkpointing).lower()}", f"output_dir={out}"])


def plain_loop(cfg, steps: int) -> tuple[float, int]:
    """Seconds for `steps` optimizer steps and the real tokens they saw: the loop shotlab's finetune runs."""
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from shotlab.data.datamodule import ShotDataModule
    from shotlab.data.sampling import draw_sample
    from shotlab.data.tasks import load_task
    from shotlab.models.backbone import build_backbone
    from shotlab.models.heads import LinearHead

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
    return time.perf_counter() - start, tokens


def arm(name: str, k: int, steps: int, test_size: int) -> dict:
    """One arm, in this process: its seconds, tokens, matmul peak and peak RSS, as a dict."""
    import torch

    from shotlab.tracking import matmul_peak, peak_memory_mb, reset_peak_memory
    from shotlab.train import run

    torch.set_num_threads(2)
    peak = matmul_peak()
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg(k, steps, test_size, out, pack=name != "loop-padded", checkpointing="checkpointed" in name)
        reset_peak_memory()
        if name.startswith("shotlab"):
            result = run(cfg)
            seconds, steps = result["train_seconds"], result["train_steps"]
            tokens = None
        else:
            seconds, tokens = plain_loop(cfg, steps)
        rss = peak_memory_mb()
    n_params = None
    if tokens is not None:
        from omegaconf import OmegaConf

        from shotlab.models.backbone import build_backbone

        n_params = sum(p.numel() for p in build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True)).parameters())
    return {"arm": name, "seconds": seconds, "steps": steps, "tokens": tokens, "params": n_params,
            "peak": max(peak, matmul_peak()), "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16, help="examples per class")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--padded", action="store_true", help="also the plain loop with backbone.pack=false")
    parser.add_argument("--checkpointing", action="store_true",
                        help="also shotlab and the plain loop with backbone.gradient_checkpointing=true")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one arm, in a child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args.k, args.steps, args.test_size)))
        return

    results = {}
    names = ["shotlab", "loop"] + (["loop-padded"] if args.padded else [])
    names += ["shotlab-checkpointed", "loop-checkpointed"] if args.checkpointing else []
    for name in names:
        cmd = [sys.executable, __file__, "--arm", name, f"--k={args.k}", f"--steps={args.steps}",
               f"--test-size={args.test_size}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"arm {name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])

    loop = results["loop"]
    per_token = 6 * loop["params"]  # training FLOPs per token, 6 x parameters

    def pct(r: dict, seconds: float) -> float:
        return 100 * per_token * loop["tokens"] / seconds / 1e9 / r["peak"]

    print(f"fine-tuning smollm2-135m, k={args.k}/class, {loop['steps']} optimizer steps, "
          f"{loop['tokens']} real tokens, LM loss lambda=0.5; 2 threads")
    print(f"\n| {'arm':<44} | {'seconds':>7} | {'tok/s':>6} | {'GFLOP/s':>7} | {'matmul peak':>11} | "
          f"{'% of peak':>9} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 46}|{'-' * 8}:|{'-' * 7}:|{'-' * 8}:|{'-' * 12}:|{'-' * 10}:|{'-' * 12}:|")
    labels = {"shotlab": "shotlab run (train_seconds: + setup, validations, best weights)",
              "loop": "plain loop, packed batches",
              "loop-padded": "plain loop, padded batches (backbone.pack=false)",
              "shotlab-checkpointed": "shotlab run, backbone.gradient_checkpointing",
              "loop-checkpointed": "plain loop, backbone.gradient_checkpointing"}
    for name, r in results.items():
        tok_s = loop["tokens"] / r["seconds"]
        print(f"| {labels[name]:<44} | {r['seconds']:>7.1f} | {tok_s:>6.0f} | {per_token * tok_s / 1e9:>7.0f} | "
              f"{r['peak']:>11.0f} | {pct(r, r['seconds']):>8.0f}% | {r['rss_mb']:>11.0f} |")
    s = results["shotlab"]
    print(f"\nratio shotlab / plain loop: {s['seconds'] / loop['seconds']:.2f}x in seconds, "
          f"{pct(loop, loop['seconds']) / pct(s, s['seconds']):.2f}x in % of each process's peak (goal <= 1.2x)")
    print(f"plain loop step at {pct(loop, loop['seconds']):.0f} % of the matmul peak (goal >= 80 %); "
          f"shotlab peak RSS {s['rss_mb']:.0f} MB (goal <= 3500 MB)")
    if "loop-checkpointed" in results:
        c, sc = results["loop-checkpointed"], results["shotlab-checkpointed"]
        print(f"activation checkpointing: plain loop step {c['seconds'] / loop['seconds']:.2f}x in seconds, "
              f"{pct(loop, loop['seconds']) / pct(c, c['seconds']):.2f}x in % of peak; peak RSS "
              f"{c['rss_mb']:.0f} MB vs {loop['rss_mb']:.0f} MB ({c['rss_mb'] - loop['rss_mb']:+.0f} MB); shotlab run "
              f"{sc['rss_mb']:.0f} MB vs {s['rss_mb']:.0f} MB ({sc['rss_mb'] - s['rss_mb']:+.0f} MB), "
              f"train {sc['seconds'] / s['seconds']:.2f}x (goal: finetune k=16 <= 3500 MB)")
    if "loop-padded" in results:
        p = results["loop-padded"]
        print(f"packing: padded / packed step time {p['seconds'] / loop['seconds']:.2f}x in seconds, "
              f"{pct(loop, loop['seconds']) / pct(p, p['seconds']):.2f}x in % of peak")


if __name__ == "__main__":
    main()
