"""Print each task's splits and class sizes: python -m shotlab.describe [task ...]"""

from __future__ import annotations

import sys

from shotlab.config import task_config
from shotlab.data.tasks import BUILTIN_TASKS, Task, load_task


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
    for name in (sys.argv[1:] if argv is None else argv) or list(BUILTIN_TASKS):
        print(describe(load_task(task_config(name))) + "\n")


if __name__ == "__main__":
    main()
