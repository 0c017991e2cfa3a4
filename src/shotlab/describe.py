"""Print each task's splits and class sizes, or its prompts: python -m shotlab.describe [--prompts] [task ...]"""

from __future__ import annotations

import sys

from shotlab.config import task_config
from shotlab.data.tasks import BUILTIN_TASKS, DEFAULT_PROMPT, Task, load_task


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


def prompts(cfg: dict, variants: int = 3) -> str:
    """A task's prompts: its own, its named ones, and its first format variants, as a markdown table."""
    from shotlab.data.tasks import FORMAT, choose_prompt

    names = [DEFAULT_PROMPT, *(cfg.get("prompts") or {}), *(f"{FORMAT}{i}" for i in range(1, variants + 1))]
    lines = [f"{cfg['name']} prompts (task.prompt=<name>)", "| name | template | verbalizer |", "|---|---|---|"]
    for name in names:
        _, template, verbalizer = choose_prompt({**cfg, "prompt": name})
        words = ", ".join(f"{k}: {'/'.join(v)}" for k, v in (verbalizer or {}).items()) or "the label names"
        lines.append(f"| {name} | `{template!r}` | {words} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """python -m shotlab.describe [--prompts] [task ...]: splits and class sizes, or prompts."""
    args = sys.argv[1:] if argv is None else argv
    show_prompts = "--prompts" in args
    for name in [a for a in args if a != "--prompts"] or list(BUILTIN_TASKS):
        cfg = task_config(name)
        print((prompts(cfg) if show_prompts else describe(load_task(cfg))) + "\n")


if __name__ == "__main__":
    main()
