"""The README and docs/ say only what is there: every shotlab command in a shell block composes
(its config groups, keys and values exist, its method builds), every script, make target,
module and repository path they name exists, and every link lands on a file and a heading.
`make docs-check` runs this file alone."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from shotlab.config import build_method, check_config, conf_dir

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRY_POINTS = {"shotlab.train": "train", "shotlab-train": "train", "shotlab.pretrain": "pretrain",
                "shotlab-pretrain": "pretrain"}


def shell_commands(page: Path) -> list[str]:
    """The commands of a page's ```bash blocks: continuations joined, comments dropped, simple
    VAR="..." assignments of the block expanded."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        variables = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if not line or line.startswith("#"):
                continue
            if assignment := re.fullmatch(r'(\w+)="([^"]*)"', line):
                variables[assignment[1]] = assignment[2]
                continue
            commands.append(re.sub(r"\$(\w+)", lambda m, known=variables: known.get(m[1], m[0]), line))
    return commands


COMMANDS = [(page.relative_to(ROOT).as_posix(), cmd) for page in PAGES for cmd in shell_commands(page)]


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """A sweep's first cell: `k=1,16` -> `k=1` (what one run of the sweep composes)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line
            for o in parsed]


def test_the_pages_have_shell_commands_to_check():
    assert len(COMMANDS) > 20 and {page for page, _ in COMMANDS} >= {"README.md", "docs/slurm.md", "docs/report.md"}


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_command_names_what_exists(page, command):
    words = shlex.split(command)
    program = next((w for w in words if w in ENTRY_POINTS or w.startswith("shotlab")), None)
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert set(words[1:]) <= set(targets), f"{page}: make {words[1:]}: no such target"
    elif any(w.startswith("scripts/") for w in words):
        script = next(w for w in words if w.startswith("scripts/"))
        assert (ROOT / script).exists(), f"{page}: {script} is not there"
        text = (ROOT / script).read_text()
        for flag in (w for w in words if w.startswith("--")):
            assert f'"{flag}"' in text, f"{page}: {script} takes no {flag}"
    elif program and words[words.index(program) - 1] == "-m" and program not in ENTRY_POINTS:
        module = ROOT / "src" / Path(*program.split("."))
        assert module.with_suffix(".py").exists() or (module / "__main__.py").exists(), (
            f"{page}: python -m {program}: no such module")
    elif program in ENTRY_POINTS:
        args = words[words.index(program) + 1:]
        if "--config-dir" in args:
            pytest.skip("composes with a folder of the user's")
        overrides = first_of_sweeps([a for a in args if not a.startswith("-")])
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose(ENTRY_POINTS[program], overrides=overrides, return_hydra_config=True)
        if ENTRY_POINTS[program] == "train":
            check_config(cfg)
            build_method(cfg.method)
    else:
        pytest.fail(f"{page}: a shell command this check does not know: {command}")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_link_and_named_path_exists(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: link to {target}: no such heading"
    for name in re.findall(r"`((?:src|conf|tests|scripts|docs)/[\w./-]*)`", text):
        assert (ROOT / name).exists(), f"{page.name}: `{name}` is not in the repository"
