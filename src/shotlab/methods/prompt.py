"""`prompt`: classify with the LM itself, zero-shot (k=0) or in-context (the k-shot sample as
demonstrations, GPT-3 style), optionally with contextual calibration. No weight changes.

Demonstrations (`method.demonstrations`):
    random    the k-shot sample in an order seeded by the split seed; one prefix for every
              example, so its keys and values are computed once and shared (models.shared_prefix)
    nearest   per example, the sample's examples ordered by the cosine similarity of their pooled
              backbone features (the feature cache's) to the example's, most similar last
              (Liu et al. 2022; OpenICL's TopK retriever); `method.num_nearest` keeps only the
              closest n. Each example has a prefix of its own, so nothing is shared: every prompt
              runs whole (packed, several to a row, when the label words are one token each),
              about (prefix + prompt) / prompt times zero-shot's cost. predictions.jsonl
              records the demonstrations each example saw (their ids, in the order shown).
"""

from __future__ import annotations

import time

import numpy as np

from shotlab import ShotlabError
from shotlab.config import check_value
from shotlab.methods.base import Job, Method, Outcome

DEMONSTRATIONS = ("random", "nearest")


class Prompt(Method):
    runs_on_full = False

    def __init__(self, name: str = "prompt", calibrate: bool = False, token_reduce: str = "sum",
                 demonstrations: str = "random", num_nearest: int | None = None):
        super().__init__(name)
        if token_reduce not in ("sum", "mean"):
            raise ShotlabError(f"method.token_reduce must be 'sum' or 'mean', got {token_reduce!r}")
        if demonstrations not in DEMONSTRATIONS:
            raise ShotlabError(f"method.demonstrations must be one of {DEMONSTRATIONS}, got {demonstrations!r}")
        check_value("method.num_nearest", num_nearest, 1, integer=True, none_ok=True)
        if calibrate and demonstrations == "nearest":
            raise ShotlabError("method.demonstrations=nearest gives every example a prefix of its own; contextual "
                               "calibration needs one prefix for its content-free inputs (use demonstrations=random)")
        self.calibrate, self.token_reduce = calibrate, token_reduce
        self.demonstrations, self.num_nearest = demonstrations, num_nearest

    @property
    def label(self) -> str:
        label = f"{self.name} (calibrated)" if self.calibrate else self.name
        return f"{label} (nearest)" if self.demonstrations == "nearest" else label

    def run(self, job: Job) -> Outcome:
        from omegaconf import OmegaConf

        from shotlab.models.backbone import scoring_placement
        from shotlab.models.scorer import LMScorer, demonstration, demonstrations

        sample, task = job.sample, job.sample.task
        job.backbone.place(*scoring_placement(job.cfg.backbone, OmegaConf.to_container(job.cfg.trainer)))
        scorer = LMScorer(job.backbone, task.template, task.verbalizer, token_reduce=self.token_reduce,
                          batch_size=job.cfg.eval_batch_size, text_tokens=job.cfg.max_length)
        t0 = time.perf_counter()
        # Every split in one call: one demonstration prefix (and its KV cache) and one calibration
        # serve them all, so the dev sample, the held-out pool and the eval tasks score exactly the
        # test's classifier (this task's prompt, new texts).
        parts = sample.scored()
        texts = [t for split in parts.values() for t in split.texts]
        columns = {}
        if self.demonstrations == "nearest" and len(sample.train):
            order = self.nearest(job, texts)  # (N, n) sample positions, most similar last
            formatted = [demonstration(task.template, task.verbalizer, t, y)
                         for t, y in zip(sample.train.texts, sample.train.labels)]
            scored = scorer.score_each(texts, [[formatted[i] for i in row] for row in order])
            shown = [[sample.train.ids[i] for i in row[len(row) - kept:]] for row, kept in
                     zip(order, scored.num_demonstrations)]
            kept = int(min(scored.num_demonstrations))
        else:
            demos = demonstrations(sample.train.texts, sample.train.labels, task.template, task.verbalizer,
                                   seed=sample.seed)
            scored = scorer.score(texts, demos, calibrate=self.calibrate)
            shown, kept = None, scored.num_demonstrations
        scores, start = {}, 0
        for name, split in parts.items():
            scores[name] = scored.scores[start : start + len(split)]
            if shown is not None:
                columns[name] = [{"demonstrations": ids} for ids in shown[start : start + len(split)]]
            start += len(split)
        return Outcome(scores, {"train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0,
                                "num_demonstrations": kept, "demonstrations": self.demonstrations}, columns)

    def nearest(self, job: Job, texts: list[str]) -> np.ndarray:
        """(len(texts), n): per text, the positions in the k-shot sample of its n nearest examples
        (all of them unless num_nearest), by cosine similarity of pooled backbone features (the
        raw texts, cut to max_length, as the feature cache holds them), most similar last; ties
        by sample position, so the order is deterministic."""
        import torch

        from shotlab.models.features import FeatureCache

        cache = FeatureCache.for_config(job.backbone, job.cfg)
        tok = job.backbone.tokenizer

        def features(split: str, items: list[str]) -> torch.Tensor:
            ids = tok(list(items), truncation=True, max_length=job.cfg.max_length).input_ids
            return torch.nn.functional.normalize(cache(split, ids).float(), dim=-1)

        pool = features("train", job.sample.train.texts)
        similarity = (features("scored", texts) @ pool.T).numpy()  # (N, 2k)
        n = min(self.num_nearest or pool.shape[0], pool.shape[0])
        # ascending similarity (a stable sort: the earlier sample position first among equals); the last n
        return np.argsort(similarity, axis=1, kind="stable")[:, -n:]
