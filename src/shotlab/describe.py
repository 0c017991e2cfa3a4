"""Print each task's splits and class sizes: python -m shotlab.describe [task ...]"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from shotlab.data.tasks import Task, load_task

CONF = Path(__file__).resolve().parents[2] / "conf"


def describe(task: Task) -> str:
    """A markdown table: one row per split, one column per class."""
    lines = [
        f"{task.name}: {task.num_classes} classes, template {task.template!r}",
        "| split | " + " | ".join(task.label_names) + " | total |",
        "|---" * (task.num_classes + 2) + "|",
    ]
    for name in ("train", "validation", "test"):
        split = task.split(name)
        counts = split.class_counts(task.num_classes)
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + f" | {len(split)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    names = (sys.argv[1:] if argv is None else argv) or ["movie_sentiment", "review_domain", "rt_review_or_plot"]
    for name in names:
        cfg = OmegaConf.to_container(OmegaConf.load(CONF / "task" / f"{name}.yaml"), resolve=True)
        print(describe(load_task(cfg)) + "\n")


if __name__ == "__main__":
    main()
