"""Benchmark the `prompt` method's scorer on the embedded backbone (SmolLM2-135M) and
movie_sentiment, in one process on the CPU:

- naive scoring (prompt + word re-run from scratch per (example, word)) vs shotlab's
  KV-cached scoring, zero-shot: examples/s and speed-up (target >= 4x);
- zero-shot vs in-context with k per class demonstrations: cost per test example relative
  to zero-shot (target <= 2x), and naive in-context for reference;
- shotlab's zero-shot scoring in GFLOP/s (2 x block parameters x prompt tokens; the LM head
  runs at one position per example) as % of an fp32 matmul peak measured right before and
  after it in this process (the best of the two);
- with --ks, in-context learning at each k per class: cost per test example as a multiple of
  zero-shot's and peak RSS (reset before each arm), with shared-prefix attention (the default,
  models/shared_prefix.py) and with the prefix cache copied to every row (the reference), and
  the largest score difference between the two.

    .venv/bin/python scripts/bench_prompt.py --n 64 --k 4
    .venv/bin/python scripts/bench_prompt.py --n 64 --ks 4,16,64 --skip-naive
"""

from __future__ import annotations

import argparse
import time

import torch

from shotlab.data.sampling import sample_k
from shotlab.data.tasks import load_task
from shotlab.models.backbone import build_backbone
from shotlab.models.scorer import LMScorer, demonstrations, naive_scores
from shotlab.tracking import matmul_peak, peak_memory_mb, reset_peak_memory

TASK = {
    "name": "movie_sentiment", "source": "builtin", "label_names": ["negative", "positive"],
    "template": "Review: {text}\nSentiment:",
    "verbalizer": {"negative": ["negative"], "positive": ["positive"]},
}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="test examples")
    parser.add_argument("--naive-icl-n", type=int, default=32, help="test examples for naive in-context")
    parser.add_argument("--k", type=int, default=4, help="demonstrations per class")
    parser.add_argument("--batch-size", type=int, default=32, help="eval_batch_size (the run default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ks", help="in-context k per class to compare, shared prefix vs copied, e.g. 4,16,64")
    parser.add_argument("--skip-naive", action="store_true", help="only the --ks table")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.ks:
        in_context_costs(args, [int(k) for k in args.ks.split(",")])
    if args.skip_naive:
        return

    task = load_task({**TASK, "test_size": args.n})
    backbone = build_backbone({"name_or_path": "smollm2-135m"})
    texts = task.test.texts
    picked = sample_k(task.train.labels, args.k, args.seed)
    demos = demonstrations([task.train.texts[i] for i in picked], task.train.labels[picked],
                           task.template, task.verbalizer, args.seed)
    scorer = LMScorer(backbone, task.template, task.verbalizer, batch_size=args.batch_size)
    scorer.score(texts[:4], demos)  # warm-up: first-call allocations and kernels
    naive_scores(backbone, texts[:2], task.template, task.verbalizer)

    tok = backbone.tokenizer
    prompt_tokens = sum(len(tok(task.template.format(text=t)).input_ids) for t in texts) / len(texts)
    prefix_tokens = len(tok("".join(d + "\n\n" for d in demos)).input_ids)
    print(f"backbone smollm2-135m, movie_sentiment: {len(texts)} test examples, {prompt_tokens:.1f} prompt "
          f"tokens on average; in-context prefix: {len(demos)} demonstrations, {prefix_tokens} tokens; "
          f"torch threads {torch.get_num_threads()}")

    m = args.naive_icl_n
    naive0, t_naive0 = timed(lambda: naive_scores(backbone, texts, task.template, task.verbalizer))
    peak = matmul_peak()
    cached0, t_cached0 = timed(lambda: scorer.score(texts).scores)
    peak = max(peak, matmul_peak())
    cached_k, t_cached_k = timed(lambda: scorer.score(texts, demos).scores)
    naive_k, t_naive_k = timed(lambda: naive_scores(backbone, texts[:m], task.template, task.verbalizer, demos))

    per0 = t_cached0 / len(texts)
    rows = [  # name, examples, seconds, max |cached - naive|
        ("naive zero-shot", len(texts), t_naive0, None),
        ("shotlab zero-shot", len(texts), t_cached0, (cached0 - naive0).abs().max().item()),
        (f"naive in-context k={args.k}/class", m, t_naive_k, None),
        (f"shotlab in-context k={args.k}/class", len(texts), t_cached_k, (cached_k[:m] - naive_k).abs().max().item()),
    ]
    print(f"\n| {'scorer':<28} | {'examples':>8} | {'seconds':>7} | {'examples/s':>10} | {'cost vs shotlab 0-shot':>22} | {'max |Δ| vs naive':>16} |")
    print(f"|{'-' * 30}|{'-' * 10}:|{'-' * 8}:|{'-' * 11}:|{'-' * 23}:|{'-' * 17}:|")
    for name, n, seconds, diff in rows:
        delta = f"{diff:.1e}" if diff is not None else "-"
        print(f"| {name:<28} | {n:>8} | {seconds:>7.2f} | {n / seconds:>10.2f} | {seconds / n / per0:>21.2f}x | {delta:>16} |")
    print(f"\nspeed-up of caching, zero-shot:  {t_naive0 / t_cached0:.1f}x (target >= 4x)")
    print(f"speed-up of caching, in-context: {(t_naive_k / m) / (t_cached_k / len(texts)):.1f}x")
    print(f"in-context cost per example vs zero-shot: {t_cached_k / t_cached0:.2f}x (target <= 2x)")
    blocks = sum(p.numel() for p in backbone.parameters()) - backbone.lm.get_input_embeddings().weight.numel()
    gflops = 2 * blocks * prompt_tokens * len(texts) / t_cached0 / 1e9
    print(f"shotlab zero-shot scoring: {prompt_tokens * len(texts) / t_cached0:.0f} tok/s, {gflops:.0f} GFLOP/s = "
          f"{100 * gflops / peak:.0f} % of the matmul peak ({peak:.0f} GFLOP/s, 2048^2 fp32; target >= 75 %)")
    print(f"accuracy on these {len(texts)}: zero-shot {(cached0.argmax(-1).numpy() == task.test.labels).mean():.3f}, "
          f"in-context {(cached_k.argmax(-1).numpy() == task.test.labels).mean():.3f}")


def in_context_costs(args, ks: list[int]) -> None:
    """Per-example cost of in-context k (shared prefix and copied prefix) against zero-shot, side by side."""
    task = load_task({**TASK, "test_size": args.n})
    backbone = build_backbone({"name_or_path": "smollm2-135m"})
    texts, tok = task.test.texts, backbone.tokenizer
    shared = LMScorer(backbone, task.template, task.verbalizer, batch_size=args.batch_size)
    copied = LMScorer(backbone, task.template, task.verbalizer, batch_size=args.batch_size, shared_prefix=False)
    shared.score(texts[:4])  # warm-up
    peak = matmul_peak()
    reset_peak_memory()
    _, zero = timed(lambda: shared.score(texts).scores)
    zero_rss = peak_memory_mb()
    peak = max(peak, matmul_peak())
    blocks = sum(p.numel() for p in backbone.parameters()) - backbone.lm.get_input_embeddings().weight.numel()
    prompt_tokens = sum(len(tok(task.template.format(text=t)).input_ids) for t in texts)
    print(f"smollm2-135m, movie_sentiment, {len(texts)} test examples, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}; matmul peak {peak:.0f} GFLOP/s (2048^2 fp32, best of before and after zero-shot)")
    print(f"zero-shot: {zero:.2f} s, {zero / len(texts) * 1e3:.0f} ms/example, "
          f"{100 * 2 * blocks * prompt_tokens / zero / 1e9 / peak:.0f} % of the peak, peak RSS {zero_rss:.0f} MB\n")
    print("| k/class | prefix tokens | kept | shared: s | × zero-shot | peak RSS MB | copied: s | × zero-shot | "
          "peak RSS MB | copied / shared | max |Δ score| |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for k in ks:
        picked = sample_k(task.train.labels, k, args.seed)
        demos = demonstrations([task.train.texts[i] for i in picked], task.train.labels[picked], task.template,
                               task.verbalizer, args.seed)
        prefix = len(tok("".join(d + "\n\n" for d in demos)).input_ids)
        arms = {}
        for name, scorer in (("shared", shared), ("copied", copied)):
            reset_peak_memory()
            result, seconds = timed(lambda s=scorer, d=demos: s.score(texts, d))
            arms[name] = (result, seconds, peak_memory_mb())
        (a, ts, rs), (b, tc, rc) = arms["shared"], arms["copied"]
        diff = (a.scores - b.scores).abs().max().item()
        print(f"| {k} | {prefix} | {a.num_demonstrations} of {len(demos)} | {ts:.2f} | {ts / zero:.2f} | {rs:.0f} | "
              f"{tc:.2f} | {tc / zero:.2f} | {rc:.0f} | {tc / ts:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
