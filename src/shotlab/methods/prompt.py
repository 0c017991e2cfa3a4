"""`prompt`: classify with the LM itself, zero-shot (k=0) or in-context (the k-shot sample as
demonstrations, GPT-3 style), optionally with contextual calibration. No weight changes."""

from __future__ import annotations

import time

from shotlab import ShotlabError
from shotlab.methods.base import Job, Method, Outcome


class Prompt(Method):
    runs_on_full = False

    def __init__(self, name: str = "prompt", calibrate: bool = False, token_reduce: str = "sum"):
        super().__init__(name)
        if token_reduce not in ("sum", "mean"):
            raise ShotlabError(f"method.token_reduce must be 'sum' or 'mean', got {token_reduce!r}")
        self.calibrate, self.token_reduce = calibrate, token_reduce

    @property
    def label(self) -> str:
        return f"{self.name} (calibrated)" if self.calibrate else self.name

    def run(self, job: Job) -> Outcome:
        from omegaconf import OmegaConf

        from shotlab.models.backbone import scoring_placement
        from shotlab.models.scorer import LMScorer, demonstrations

        sample, task = job.sample, job.sample.task
        job.backbone.place(*scoring_placement(job.cfg.backbone, OmegaConf.to_container(job.cfg.trainer)))
        demos = demonstrations(sample.train.texts, sample.train.labels, task.template, task.verbalizer, seed=sample.seed)
        scorer = LMScorer(job.backbone, task.template, task.verbalizer, token_reduce=self.token_reduce,
                          batch_size=job.cfg.eval_batch_size, text_tokens=job.cfg.max_length)
        t0 = time.perf_counter()
        # Every split in one call: one demonstration prefix (and its KV cache) and one calibration
        # serve them all, so the dev sample, the held-out pool and the eval tasks score exactly the
        # test's classifier (this task's prompt, new texts).
        parts = sample.scored()
        scored = scorer.score([t for split in parts.values() for t in split.texts], demos, calibrate=self.calibrate)
        scores, start = {}, 0
        for name, split in parts.items():
            scores[name], start = scored.scores[start : start + len(split)], start + len(split)
        return Outcome(scores, {"train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0,
                                "num_demonstrations": scored.num_demonstrations})
