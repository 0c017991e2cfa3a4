"""ShotDataModule: a run's sample (sampling.draw_sample), its tokenizer, and optionally a
prompt template and a feature encoder -> loaders. It is built whole, by the method.

Truncation policy: a text keeps its first `max_length` tokens. Padding is per batch, on the
right, with an attention mask; the backbone derives position ids from the mask.
Model selection: the "validation" loader is the run's dev sample (see Sample). The test split
is always the task's test split (or its fixed subset, `task.test_size`), the same for every
regime and seed. Every batch carries `index`, each example's position in its split, so
predictions made in length-sorted order go back to the split's order.
Batch order: epoch e's order is a function of (shuffle_seed, e) alone, not of the global RNG, and
e is saved in checkpoints, so a run resumed from one (requeue.py) sees the batches the
uninterrupted run saw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from shotlab.data.batching import pad_right
from shotlab.data.sampling import Sample
from shotlab.data.tasks import Split

# (split name, example ids, token id lists) -> pooled features (N, H); see models/features.py
Encoder = Callable[[str, Sequence[Sequence[int]]], torch.Tensor]  # (split name, token ids) -> (N, H)


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) for each epoch, a function of (seed, epoch) alone. It counts its
    epochs itself and is saved with the datamodule: Lightning's epoch count (set_epoch) comes
    back one short after some resumes (seen after a resume from a save at a validation step)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # a generator: an iterator Lightning makes but never reads counts for nothing
        order = list(range(self.n))
        # A str seed is hashed whole (sha512); torch.Generator would keep only 32 bits of an int.
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        self.epoch += 1
        yield from order


class ShotDataModule(L.LightningDataModule):
    def __init__(
        self,
        sample: Sample,
        tokenizer,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        template: str | None = None,
        encoder: Encoder | None = None,
        shuffle_seed: int | None = None,
    ):
        super().__init__()
        self.sample, self.tokenizer, self.template, self.encoder = sample, tokenizer, template, encoder
        self.max_length, self.batch_size, self.eval_batch_size = max_length, batch_size, eval_batch_size
        self.shuffle_seed = sample.seed if shuffle_seed is None else shuffle_seed  # orders the training batches
        self.splits: dict[str, Split] = {"train": sample.train, "test": sample.test}
        if sample.dev is not None:
            self.splits["validation"] = sample.dev
        self.splits.update(sample.extra_scored())  # the held-out pool and the eval tasks' test splits
        self._data: dict[str, list[dict]] = {}
        self.train_order = EpochShuffle(len(sample.train), self.shuffle_seed)

    def state_dict(self) -> dict:  # in every checkpoint: a resumed run goes on with the next epoch's order
        return {"train_epochs": self.train_order.epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_order.epoch = state_dict["train_epochs"]

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (its first max_length tokens); with a template, the text is
        cut first and then formatted, so the template's tail (before the label word) stays."""
        if self.template is None:
            return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        texts = [
            t if len(i) <= self.max_length else self.tokenizer.decode(i[: self.max_length], clean_up_tokenization_spaces=False)
            for t, i in zip(texts, ids)
        ]
        return self.tokenizer([self.template.format(text=t) for t in texts])["input_ids"]

    def setup(self, stage: str | None = None) -> None:
        for name, split in self.splits.items():  # tokenise once per split
            if name in self._data or len(split) == 0:
                continue
            tokens = self.tokenize(split.texts)
            rows = [{"input_ids": t, "label": int(y), "index": i} for i, (t, y) in enumerate(zip(tokens, split.labels))]
            if self.encoder is not None:
                feats = self.encoder(name, tokens)
                rows = [{"features": f, "label": r["label"], "index": r["index"]} for f, r in zip(feats, rows)]
            elif name != "train":  # evaluation order is free: batch similar lengths, pad little
                rows.sort(key=lambda r: -len(r["input_ids"]))
            self._data[name] = rows

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {"labels": torch.tensor([r["label"] for r in rows]), "index": torch.tensor([r["index"] for r in rows])}
        if "features" in rows[0]:
            return {"features": torch.stack([r["features"] for r in rows]), **batch}
        ids, mask = pad_right([r["input_ids"] for r in rows], self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, **batch}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        size = self.batch_size if shuffle else self.eval_batch_size
        rows = self._data[name]
        sampler = self.train_order if shuffle else None
        # Its own generator: each new iterator would draw a base seed from the global RNG
        # (dropout's), and a resumed run makes a different number of them.
        # num_workers=0: worker processes only add start-up cost on a 2-core machine.
        return DataLoader(rows, batch_size=size, sampler=sampler, collate_fn=self.collate, num_workers=0,
                          generator=torch.Generator().manual_seed(self.shuffle_seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", shuffle=False) if "validation" in self._data else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def scoring_dataloader(self, name: str) -> DataLoader:
        """Another split the run scores (Sample.scored): the validation split's held-out pool, which
        only the report's selection regret reads, or an eval task's test split."""
        return self._loader(name, shuffle=False)
