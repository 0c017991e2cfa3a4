"""shotlab's prompt scorer against lm-evaluation-harness on identical prompts, in one process:
the same backbone folder (smollm2-135m as cached), the same movie_sentiment test sentences, the
same in-context prefix (k demonstrations per class in shotlab's seeded order, or none), and the
same label words. lm-evaluation-harness scores each (prompt, " " + word) pair with its HFLM
`loglikelihood`; shotlab with LMScorer. Each side runs at every batch size given, and the ratio
that counts is fastest against fastest: lm-evaluation-harness's batch size decides its speed
(full-vocabulary logits for every position of every row: a large batch of long in-context prompts
writes gigabytes), and shotlab's best batch depends on the machine. Prints seconds per side and
batch size, the speed ratio against shotlab's fastest, prediction agreement and the largest score
difference, per k.

lm-evaluation-harness is not a dependency of shotlab; install it to run this:

    .venv/bin/pip install lm-eval
    .venv/bin/python scripts/bench_lmeval.py --n 100 --ks 0,4,16 --lmeval-batch-sizes 1,8 --batch-sizes 16,32
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

TASK = {
    "name": "movie_sentiment", "source": "builtin", "label_names": ["negative", "positive"],
    "template": "Review: {text}\nSentiment:",
    "verbalizer": {"negative": ["negative"], "positive": ["positive"]},
}


def print_row(k: int, side: str, run: tuple, best: tuple) -> None:
    """One table row: a (seconds, batch, scores) run against shotlab's fastest run at this k."""
    seconds, batch, scores = run
    same = int((best[2].argmax(-1) == scores.argmax(-1)).sum())
    print(f"| {k} | {side} | {batch} | {seconds:.1f} | {seconds / best[0]:.2f}x | "
          f"{same} of {len(scores)} | {(best[2] - scores).abs().max():.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="test sentences")
    parser.add_argument("--ks", default="0,4,16", help="demonstrations per class, e.g. 0,4,16")
    parser.add_argument("--batch-sizes", default="16,32",
                        help="shotlab batch sizes to run, e.g. 16,32 (32 is the run default eval_batch_size)")
    parser.add_argument("--lmeval-batch-sizes", default="1,8",
                        help="lm-evaluation-harness batch sizes to run, e.g. 1,8,32 (1 is its default)")
    args = parser.parse_args()
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        sys.exit("bench_lmeval: lm-evaluation-harness is not installed (.venv/bin/pip install lm-eval)")
    torch.set_num_threads(2)

    from shotlab.data.sampling import sample_k
    from shotlab.data.tasks import load_task
    from shotlab.models.backbone import build_backbone, smollm2_folder
    from shotlab.models.scorer import LMScorer, demonstration_prefix, demonstrations, format_prompt

    task = load_task({**TASK, "test_size": args.n})
    texts = list(task.test.texts)
    words = [ws[0] for ws in task.verbalizer]
    backbone = build_backbone({"name_or_path": "smollm2-135m"}).eval()
    harness_batches = [int(b) for b in args.lmeval_batch_sizes.split(",")]
    our_batches = [int(b) for b in args.batch_sizes.split(",")]
    harness = HFLM(pretrained=str(smollm2_folder()), device="cpu", batch_size=harness_batches[0], dtype="float32")
    print(f"smollm2-135m, movie_sentiment, {len(texts)} test sentences, shotlab batch {args.batch_sizes}, "
          f"lm-eval batch {args.lmeval_batch_sizes}, torch threads {torch.get_num_threads()}, label words {words}")
    warm = [Instance(request_type="loglikelihood", doc={}, idx=0, arguments=(format_prompt(task.template, texts[0]),
                                                                          " " + words[0]))]
    harness.loglikelihood(warm, disable_tqdm=True)  # first-call allocations, both sides
    LMScorer(backbone, task.template, task.verbalizer).score(texts[:2])
    print("\n| k/class | side | batch | seconds | against shotlab's fastest | same predictions | max |Δ score| |")
    print("|--:|--|--:|--:|--:|--:|--:|")
    summary = []
    for k in [int(k) for k in args.ks.split(",")]:
        demos = []
        if k:
            picked = sample_k(task.train.labels, k, 0)
            demos = demonstrations([task.train.texts[i] for i in picked], task.train.labels[picked], task.template,
                                   task.verbalizer, 0)
        prefix = demonstration_prefix(demos)
        ours = []
        for batch in our_batches:
            scorer = LMScorer(backbone, task.template, task.verbalizer, batch_size=batch)
            start = time.perf_counter()
            scores = scorer.score(texts, demos).scores
            ours.append((time.perf_counter() - start, batch, scores))
        best = min(ours, key=lambda run: run[0])
        for run in ours:
            print_row(k, "shotlab", run, best)
        requests = [Instance(request_type="loglikelihood", doc={}, idx=i * len(words) + j,
                             arguments=(prefix + format_prompt(task.template, t), " " + w))
                    for i, t in enumerate(texts) for j, w in enumerate(words)]
        theirs = []
        for batch in harness_batches:
            harness.batch_size_per_gpu = batch
            start = time.perf_counter()
            scores = torch.tensor([lp for lp, _ in harness.loglikelihood(requests, disable_tqdm=True)])
            theirs.append((time.perf_counter() - start, batch, scores.view(len(texts), -1)))
            print_row(k, "lm-eval", theirs[-1], best)
        summary.append((k, min(theirs, key=lambda run: run[0]), best))
    print("\nlm-evaluation-harness at its fastest batch size against shotlab at its fastest, per k/class: "
          + "; ".join(f"k={k}: {t / o:.1f}x ({t:.1f} s at its batch {b} against {o:.1f} s at batch {ob})"
                      for k, (t, b, _), (o, ob, _) in summary))


if __name__ == "__main__":
    main()
