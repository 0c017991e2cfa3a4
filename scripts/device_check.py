"""The paths a GPU run takes, checked on the embedded default (smollm2-135m, movie_sentiment) in
one command, a table printed and written as JSON:

    .venv/bin/python scripts/device_check.py           # on a CUDA GPU, a few minutes
    .venv/bin/python scripts/device_check.py --cpu     # the same checks, smaller, on the CPU (the suite runs it)

(a) scoring in the device's dtype (backbone.dtype=auto: bf16 on CUDA; --cpu: bf16 on the CPU)
    against fp32 CPU scores of the same examples, zero-shot and in-context k=4: prediction
    agreement and the largest score difference. Pass: every score within BF16_SCORE_TOLERANCE, and
    predictions differ only where fp32's two best labels were within twice that of each other.
(b) `trainer=gpu` (--cpu: trainer=cpu) prompt_finetune and finetune runs at k=16 complete: their
    tokens/s over the optimizer steps alone (models.classifier.TrainThroughput), % of a matmul
    peak measured here (bf16 on CUDA, fp32 on the CPU) at 6 x parameters FLOPs per token, peak
    memory (torch.cuda.max_memory_allocated; on the CPU the run's peak RSS).
(c) packed against padded batches of the same prompts on the device, in mixed-length batches
    as training has them: the same pooled states within tolerance (relative to their largest
    value), and the time ratio.
(d) on CUDA only: trainer=fsdp (one process) fine-tunes and writes its predictions once.

It exits 1 when a check fails, after writing everything it measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from shotlab.config import CONF_MODULE

    with initialize_config_module(CONF_MODULE, version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def texts_and_demos(cfg, n: int):
    from omegaconf import OmegaConf

    from shotlab.data.sampling import draw_sample
    from shotlab.data.tasks import load_task
    from shotlab.models.scorer import demonstrations

    task = load_task(OmegaConf.to_container(cfg.task, resolve=True))
    sample = draw_sample(task, 4, 0, heldout_size=0)
    demos = demonstrations(sample.train.texts, sample.train.labels, task.template, task.verbalizer, seed=0)
    return task, list(task.test.texts[:n]), demos


def timed_score(backbone, task, texts, demos, batch_size: int):
    from shotlab.models.scorer import LMScorer

    scorer = LMScorer(backbone, task.template, task.verbalizer, batch_size=batch_size)
    sync(backbone.device)
    start = time.perf_counter()
    scores = scorer.score(texts, demos).scores.float()
    sync(backbone.device)
    return scores, time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def agreement(reference: torch.Tensor, other: torch.Tensor, tolerance: float) -> dict:
    """How far `other` is from `reference` (fp32) and whether within `tolerance` (see the docstring)."""
    top2 = reference.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    differ = reference.argmax(-1) != other.argmax(-1)
    diff = float((reference - other).abs().max())
    ok = diff <= tolerance and bool((margin[differ] <= 2 * tolerance).all())
    return {"examples": len(reference), "agreement": float(1 - differ.float().mean()), "max_score_diff": diff,
            "tolerance": tolerance, "ok": ok}


def check_scoring(cfg, device, dtype, n: int, batch_size: int) -> list[dict]:
    from omegaconf import OmegaConf

    from shotlab.models.backbone import BF16_SCORE_TOLERANCE, build_backbone

    task, texts, demos = texts_and_demos(cfg, n)
    reference = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True)).eval()
    placed = copy.deepcopy(reference).place(device, dtype)
    rows = []
    for name, shown in (("zero-shot", []), ("in-context k=4", demos)):
        fp32, fp32_s = timed_score(reference, task, texts, shown, batch_size)
        other, other_s = timed_score(placed, task, texts, shown, batch_size)
        rows.append({"check": f"(a) scoring {name}: {_dtype(dtype)} on {device.type} vs fp32 on cpu",
                     **agreement(fp32, other, BF16_SCORE_TOLERANCE if dtype != torch.float32 else 1e-4),
                     "seconds_fp32_cpu": fp32_s, "seconds_device": other_s})
    rows.append(check_packing(placed, task, texts, batch_size, dtype, device))
    return rows


def check_packing(backbone, task, texts, batch_size: int, dtype, device) -> dict:
    """(c) Pooled states of prompt-formatted texts in batches of mixed lengths (the order a
    training batch has), run packed (the default) and padded (backbone.pack=false)."""
    from shotlab.data.batching import pad_right
    from shotlab.models.backbone import BF16_SCORE_TOLERANCE

    ids = backbone.tokenizer([task.template.format(text=t) for t in texts]).input_ids
    batches = [pad_right(ids[i : i + batch_size], backbone.tokenizer.pad_token_id, device)
               for i in range(0, len(ids), batch_size)]
    padded = copy.copy(backbone)  # the same modules, another packing switch
    padded.pack = False
    out, seconds = {}, {}
    with torch.inference_mode():
        for name, b in (("packed", backbone), ("padded", padded)):
            b(*batches[0])  # warm-up
            sync(device)
            start = time.perf_counter()
            out[name] = torch.cat([b(*batch).float() for batch in batches]).cpu()
            sync(device)
            seconds[name] = time.perf_counter() - start
    diff = float((out["packed"] - out["padded"]).abs().max())
    scale = float(out["padded"].abs().max())
    tolerance = 1e-3 if dtype == torch.float32 else BF16_SCORE_TOLERANCE / 10
    return {"check": f"(c) packed vs padded pooled states, mixed-length batches, {_dtype(dtype)} on {device.type}",
            "examples": len(texts), "max_state_diff": diff, "relative": diff / scale, "tolerance": tolerance,
            "ok": diff / scale <= tolerance, "seconds_packed": seconds["packed"], "seconds_padded": seconds["padded"],
            "padded_over_packed": seconds["padded"] / seconds["packed"]}


def _dtype(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_runs(trainer: str, cuda: bool, steps: int, test_size: int, peak: float, out: Path) -> list[dict]:
    from omegaconf import OmegaConf

    from shotlab.models.backbone import build_backbone
    from shotlab.train import run

    rows = []
    arms = [("prompt_finetune", trainer), ("finetune", trainer)] + ([("finetune", "fsdp")] if cuda else [])
    for method, which in arms:
        extra = ["trainer.devices=1"] if which == "fsdp" else []
        cfg = compose(f"method={method}", "regime.k=16", "seed=0", f"task.test_size={test_size}", "heldout_size=0",
                      "logger=none", f"trainer={which}", *extra, "trainer.enable_progress_bar=false",
                      f"method.min_steps={steps}", "epochs=1", "validations=1",
                      "+callbacks.throughput._target_=shotlab.models.classifier.TrainThroughput",
                      f"output_dir={out / f'{method}-{which}'}")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        row = {"check": f"(b) trainer={which} {method} k=16, {steps} steps", "ok": False}
        try:
            result = run(cfg)
        except Exception as err:  # a failure is a finding: record it, go on with the others
            rows.append({**row, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})
            continue
        throughput = json.loads((Path(cfg.output_dir) / "throughput.json").read_text())
        params = sum(p.numel() for p in build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True)).parameters())
        tok_s = throughput["tokens_per_s"]
        lines = (Path(cfg.output_dir) / "predictions.jsonl").read_text().splitlines()
        test_rows = sum(json.loads(line)["split"] == "test" for line in lines)
        rows.append({**row, "ok": result["status"] == "ok" and test_rows == result["num_test"],
                     "train_steps": result["train_steps"], "train_seconds": result["train_seconds"],
                     "step_seconds": throughput["seconds"], "train_tokens": throughput["tokens"],
                     "tokens_per_s": tok_s, "pct_of_peak": 100 * 6 * params * tok_s / 1e9 / peak,
                     "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else result["peak_memory_mb"],
                     "memory": "cuda max_memory_allocated" if cuda else "peak RSS", "test_acc": result["test_acc"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU, smaller (bf16 scoring checked on the CPU)")
    parser.add_argument("--examples", type=int, help="test examples scored (default 500 on CUDA, 32 with --cpu)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 20 on CUDA, 2 with --cpu)")
    parser.add_argument("--out", type=Path, default=Path("outputs/device_check.json"))
    args = parser.parse_args(argv)
    cuda = not args.cpu
    if cuda and not torch.cuda.is_available():
        sys.exit("device_check: no CUDA GPU here; --cpu runs the same checks on the CPU")
    from shotlab.tracking import matmul_peak, quiet_lightning

    quiet_lightning()
    device = torch.device("cuda" if cuda else "cpu")
    n = args.examples or (500 if cuda else 32)
    steps = args.steps or (20 if cuda else 2)
    peak = matmul_peak(8192, device="cuda", dtype=torch.bfloat16) if cuda else matmul_peak()
    report = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "matmul_peak_gflops": peak, "matmul_peak": "bf16 8192^2" if cuda else "fp32 2048^2", "rows": []}
    cfg = compose("task.test_size=null")
    rows = report["rows"]
    rows += check_scoring(cfg, device, torch.bfloat16, n, batch_size=32 if cuda else 16)
    with tempfile.TemporaryDirectory() as out:
        rows += check_runs("gpu" if cuda else "cpu", cuda, steps, 64 if cuda else 16, peak, Path(out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    print(f"device check on {report['device']}, {report['date']}, torch {report['torch']}; "
          f"matmul peak {peak:.0f} GFLOP/s ({report['matmul_peak']})\n")
    print("| check | ok | agreement | max score diff (tol) | time | tokens/s | % of peak | peak memory MB |")
    print("|---|---|--:|--:|---|--:|--:|--:|")
    for r in rows:
        time_col = (f"{r['seconds_device']:.1f} s vs {r['seconds_fp32_cpu']:.1f} s fp32 cpu" if "seconds_device" in r
                    else f"padded {r['padded_over_packed']:.2f}x packed" if "padded_over_packed" in r
                    else f"{r['step_seconds']:.1f} s in {r['train_steps']} steps ({r['train_seconds']:.0f} s train)"
                    if "train_seconds" in r else r.get("error", ""))
        agree = f"{r['agreement']:.3f} of {r['examples']}" if "agreement" in r else ""
        diff = (f"{r['max_score_diff']:.4f} ({r['tolerance']})" if "max_score_diff" in r
                else f"{r['relative']:.1e} relative ({r['tolerance']})" if "relative" in r else "")
        tok = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else ""
        pct = f"{r['pct_of_peak']:.0f} %" if "pct_of_peak" in r else ""
        mem = f"{r['peak_memory_mb']:.0f} ({r['memory']})" if "peak_memory_mb" in r else ""
        print(f"| {r['check']} | {'yes' if r['ok'] else 'NO'} | {agree} | {diff} | {time_col} | {tok} | {pct} | {mem} |")
    print(f"\nwritten: {args.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
