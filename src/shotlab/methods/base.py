"""The interface every method implements, and what a run hands it.

A method is built from its yaml by Hydra (`_target_`) right after the config checks, before any
data or model loads, so its constructor is where its own keys are checked. `skip_reason` says
which cells of a sweep it does not run; `run` does the work on a loaded backbone and returns
label scores for the test split and the dev sample, from which train.run() computes every
number it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shotlab.data.sampling import Sample


@dataclass(frozen=True)
class Job:
    """What one run hands its method: the whole config (head, optimizer, trainer, batch sizes,
    `epochs`, `validations`), the sample, the loaded backbone, the run folder and the logger."""

    cfg: Any  # DictConfig
    sample: Sample
    backbone: Any  # shotlab.models.backbone.Backbone
    out: Path
    logger: Any = False  # a Lightning logger, or False


@dataclass
class Outcome:
    """Label scores (N, C) per split ("test", and "dev" when the run has a dev sample), in the
    split's order; the prediction is the argmax. `extra` goes into metrics.json as is; `columns`
    (split -> one dict per example) adds fields to that split's predictions.jsonl rows."""

    scores: dict[str, Any]
    extra: dict = field(default_factory=dict)
    columns: dict[str, list[dict]] = field(default_factory=dict)


class Method:
    """Base class: a named method; by default it runs at every k."""

    runs_at_zero = True  # False: k=0 leaves it nothing to do (a new head would stay random)
    runs_on_full = True  # False: all training examples do not fit how it uses them

    def __init__(self, name: str):
        self.name = name

    @property
    def label(self) -> str:
        """Its row in the report (a variant that changes what the method is gets its own row)."""
        return self.name

    def check(self, cfg) -> None:
        """Raise a one-line ShotlabError for a run config this method cannot use (before any model loads)."""

    def skip_reason(self, k: int | None) -> tuple[str, str] | None:
        """Why a cell with this k is not worth running and what to run instead, or None."""
        if k == 0 and not self.runs_at_zero:
            return (f"{self.name} trains, and k=0 gives it nothing to train on",
                    f"zero-shot needs a method that uses no labels (e.g. method=prompt), or give {self.name} "
                    "labels: regime=one, or regime=few regime.k=16")
        if k is None and not self.runs_on_full:
            return (f"{self.name} puts its examples in the context; all of them do not fit (use a few-shot k)",
                    "run it few-shot instead, e.g. regime=few regime.k=16")
        return None

    def run(self, job: Job) -> Outcome:
        raise NotImplementedError
