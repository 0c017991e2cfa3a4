"""The `prompt` method: classify by the LM itself, zero-shot or in-context (GPT-3 style).

score(label) = log P(" " + word | prompt) for the label's verbalizer word, summed (or averaged,
`token_reduce="mean"`) over the word's tokens; several words of one label combine by
logsumexp, the probability of saying any of them. The prediction is the best-scoring label.

A prompt is cut in three pieces, each tokenised on its own (exact for byte-level BPE
tokenizers such as GPT-2's, Llama-3's and SmolLM2's):

    shared   demonstrations + the template before {text}   run once, its KV cache reused
    rest     " " + text + the template after {text}         run once per example (batched)
    word     " " + label word                               one row per (example, word)

When every label word is one token, only each prompt's last state is needed, and a batch's
prompts run packed (several in a row, each seeing the prefix and itself: backbone.Packing),
so short prompts next to long ones compute no padding.

A space that ends the template head moves to `rest`, so the text's first word keeps its
leading-space token ("Review:" + " great", not "Review: " + "great").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from shotlab import ShotlabError
from shotlab.data.batching import pad_right
from shotlab.models.backbone import eval_mode, plan_packing
from shotlab.models.shared_prefix import SharedPrefix, Unsupported, own_mask

# Contextual calibration's content-free inputs (Zhao et al. 2021, "Calibrate before use").
CONTENT_FREE = ("N/A", "", "[MASK]")


def format_prompt(template: str, text: str) -> str:
    """The task prompt for one text; the label word follows it after a space."""
    return template.format(text=text)


def demonstrations(
    texts: Sequence[str], labels: Sequence[int], template: str, verbalizer, seed: int
) -> list[str]:
    """In-context demonstrations `prompt + " " + gold word` (a label's first verbalizer word),
    in an order fixed by `seed`. Which examples to show is the caller's choice (the k-shot sampler)."""
    order = np.random.default_rng(seed).permutation(len(texts))
    return [demonstration(template, verbalizer, texts[i], labels[i]) for i in order]


def demonstration(template: str, verbalizer, text: str, label: int) -> str:
    """One demonstration: the prompt of `text` and the first verbalizer word of its label."""
    return f"{format_prompt(template, text)} {verbalizer[int(label)][0]}"


def demonstration_prefix(demos: Sequence[str]) -> str:
    """Demonstrations joined by blank lines, and a blank line before the test prompt."""
    return "".join(d + "\n\n" for d in demos)


def split_prompt(template: str, text: str, prefix: str = "") -> tuple[str, str]:
    """(shared, rest) with shared + rest == prefix + format_prompt(template, text)."""
    head = format_prompt(template, "\0").split("\0")[0]  # the template before {text}, unescaped
    shared = head.rstrip(" ")
    return prefix + shared, format_prompt(template, text)[len(shared) :]


def calibrate_scores(scores: torch.Tensor, content_free_scores: torch.Tensor) -> torch.Tensor:
    """Contextual calibration: (N, C) label scores and (K, C) scores of content-free inputs ->
    (N, C) log(p / p_cf), p the label probabilities (normalised over labels), p_cf their mean
    over the content-free inputs; W = diag(p_cf)^-1, so the argmax is the calibrated prediction."""
    p_cf = content_free_scores.float().softmax(-1).mean(0)  # (C,)
    return scores.float().log_softmax(-1) - p_cf.log()


@dataclass(frozen=True)
class LabelScores:
    scores: torch.Tensor  # (N, C) label scores; log(p / p_cf) when calibrated
    predictions: torch.Tensor  # (N,) argmax label indices
    num_demonstrations: int | list[int]  # demonstrations kept after the context-length policy (per text: score_each)


class LMScorer:
    """Scores every label of every text with a backbone's LM head, sharing KV caches.

    Context-length policy: one demonstration prefix serves the whole test set. When it, the
    longest test prompt and the longest label word need more than `max_length` tokens (default:
    the backbone's context), whole demonstrations are dropped from the front (the first shown)
    until it fits. A test text is never truncated: if it does not fit even with no
    demonstrations, a ShotlabError names the limit. Texts longer than `text_tokens` (the run's
    `max_length`, where the gradient methods cut them) are scored whole too, and `score` says
    how many there are and how long the longest is, in one line.
    """

    def __init__(self, backbone, template: str, verbalizer, token_reduce: str = "sum",
                 batch_size: int = 16, max_length: int | None = None, text_tokens: int | None = None,
                 shared_prefix: bool = True):
        if token_reduce not in ("sum", "mean"):
            raise ShotlabError(f"token_reduce must be 'sum' or 'mean', got {token_reduce!r}")
        self.backbone, self.template, self.token_reduce = backbone, template, token_reduce
        self.batch_size = batch_size
        self.max_length = max_length or backbone.max_positions
        self.text_tokens = text_tokens
        self.word_ids, self.word_label = verbalizer_words(backbone.tokenizer, verbalizer)
        self.num_classes = len(verbalizer)
        # True: rows attend to the one prefix K/V (models.shared_prefix); False: the reference
        # path, the prefix cache expanded to every row
        self.shared_prefix = shared_prefix

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def fit_prefix(self, demos: Sequence[str], rest_lengths: Sequence[int]) -> tuple[list[int], int]:
        """Token ids of the shared prefix under the context-length policy, and how many demos it keeps."""
        need = max(rest_lengths) + max(map(len, self.word_ids))
        for start in range(len(demos) + 1):
            shared = split_prompt(self.template, "", demonstration_prefix(demos[start:]))[0]
            ids = self.backbone.tokenizer(shared).input_ids  # special tokens (a BOS) only here
            if len(ids) + need <= self.max_length:
                return ids, len(demos) - start
        raise ShotlabError(
            f"a test prompt plus its label word takes {len(ids) + need} tokens, more than the backbone's "
            f"context of {self.max_length}; shorten the texts or the template (texts are never truncated)"
        )

    @torch.inference_mode()
    def score(self, texts: Sequence[str], demos: Sequence[str] = (), calibrate: bool = False) -> LabelScores:
        """Label scores of `texts` after the `demos` (formatted demonstrations; none = zero-shot)."""
        tok = self.backbone.tokenizer
        if self.text_tokens and texts:  # a note, not an error: prompting reads the whole text by design
            # (one more pass of the Rust tokenizer: the note counts tokens as max_length does elsewhere)
            lengths = [len(ids) for ids in tok(list(texts), add_special_tokens=False).input_ids]
            longer = [n for n in lengths if n > self.text_tokens]
            if longer:
                print(f"shotlab: {len(longer)} of {len(lengths)} texts are longer than max_length={self.text_tokens} "
                      f"tokens (longest {max(longer)}); prompting scores them whole", file=sys.stderr)
        texts = list(texts) + (list(CONTENT_FREE) if calibrate else [])
        rests = [tok(split_prompt(self.template, t)[1], add_special_tokens=False).input_ids for t in texts]
        shared, kept = self.fit_prefix(list(demos), [len(r) for r in rests])
        if kept < len(demos):  # many-shot: as many as the context holds, the latest ones
            print(f"shotlab: {kept} of {len(demos)} demonstrations fit the backbone's context of {self.max_length} "
                  f"tokens with the longest test prompt; the first {len(demos) - kept} shown are left out",
                  file=sys.stderr)
        if not shared and min(map(len, rests)) == 0:
            raise ShotlabError("a prompt is empty: nothing to condition the label words on; fix task.template")
        with eval_mode(self.backbone):
            scores = self._score(shared, rests)
        if calibrate:
            scores = calibrate_scores(scores[: -len(CONTENT_FREE)], scores[-len(CONTENT_FREE) :])
        return LabelScores(scores, scores.argmax(-1), kept)

    @torch.inference_mode()
    def score_each(self, texts: Sequence[str], demos: Sequence[Sequence[str]]) -> LabelScores:
        """Label scores of `texts`, each after demonstrations of its own (`demos[i]`, formatted;
        nearest-neighbour demonstrations). No prefix is shared: each prompt runs whole, under the
        same context-length policy, one text at a time; `num_demonstrations` is a list, per text."""
        tok = self.backbone.tokenizer
        prompts, kept = [], []
        for text, shown in zip(texts, demos):
            rest = tok(split_prompt(self.template, text)[1], add_special_tokens=False).input_ids
            shared, n = self.fit_prefix(list(shown), [len(rest)])
            prompts.append(shared + rest)
            kept.append(n)
        with eval_mode(self.backbone):
            scores = self._score([], prompts)
        return LabelScores(scores, scores.argmax(-1), kept)

    def _score(self, shared: list[int], rests: list[list[int]]) -> torch.Tensor:
        bb, dev, P = self.backbone, self.device, len(shared)
        # 1. The shared prefix, once: its per-layer keys/values (1, nh, P, hs) and last state (1, H).
        prefix_kv, prefix_last = [], None
        if P:
            cache = DynamicCache()
            ids = torch.tensor([shared], device=dev)  # (1, P)
            hidden, _ = bb.states(ids, torch.ones_like(ids), cache=cache)  # (1, P, H)
            prefix_kv, prefix_last = [(layer.keys, layer.values) for layer in cache.layers], hidden[:, -1]
        words = pad_right(self.word_ids, bb.tokenizer.pad_token_id, dev)  # (J, M) ids and mask
        out = torch.empty(len(rests), self.num_classes)
        order = sorted(range(len(rests)), key=lambda i: -len(rests[i]))  # similar lengths share a batch
        from tqdm.auto import tqdm

        shared = SharedPrefix(prefix_kv) if P and self.shared_prefix else None
        for start in tqdm(range(0, len(order), self.batch_size), desc="prompt scoring", unit="batch", leave=False):
            index = order[start : start + self.batch_size]
            batch = [rests[i] for i in index]
            try:
                out[index] = self._score_batch(prefix_kv, prefix_last, P, batch, words, shared)
            except Unsupported as err:  # a model outside transformers' attention registry: the reference path
                print(f"shotlab: {err}; scoring with the prefix cache copied to every row", file=sys.stderr)
                self.shared_prefix, shared = False, None
                out[index] = self._score_batch(prefix_kv, prefix_last, P, batch, words, None)
        return out

    def _score_batch(self, prefix_kv, prefix_last, P, rests, words, shared=None) -> torch.Tensor:
        bb, dev = self.backbone, self.device
        B, (word_ids, word_mask) = len(rests), words
        J, M = word_ids.shape
        # 2. Each prompt once, right-padded, after the prefix: attending to its one K/V (`shared`),
        # or over the prefix cache expanded (not copied) to B rows and concatenated per layer.
        ids, mask = pad_right(rests, bb.tokenizer.pad_token_id, dev)  # (B, L)
        lengths = mask.sum(1)  # (B,)
        L = ids.shape[1]
        packing = plan_packing(mask) if M == 1 and bb.packs and int(lengths.min()) > 0 else None
        if packing is not None:  # one-token words need only each prompt's last state: pack the prompts
            last = self._packed_last_states(prefix_kv, P, ids, lengths, packing, shared)
            return self._word_scores(last.repeat_interleave(J, 0)[:, None], B, words)
        positions = P + torch.arange(L, device=dev).expand(B, L)  # pads sit after the text, masked out
        dtype = bb.lm.get_input_embeddings().weight.dtype
        if shared is not None:
            cache = DynamicCache() if M > 1 else None  # the rows' own keys, for their label words
            hidden, _ = bb.states(ids, own_mask(mask, dtype=dtype), cache=cache, position_ids=positions,
                                  shared_prefix=shared)
        else:
            cache = DynamicCache(ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1))
                                                 for k, v in prefix_kv])  # empty when P == 0
            mask = torch.cat([torch.ones(B, P, dtype=torch.long, device=dev), mask], 1)  # (B, P+L)
            hidden, _ = bb.states(ids, mask, cache=cache, position_ids=positions)  # (B, L, H)
        # The state that predicts a word's first token: the last real one of prefix + prompt.
        first = prefix_last.expand(B, 1, -1) if P else hidden.new_zeros(B, 1, hidden.shape[-1])
        last = torch.cat([first, hidden], 1)[torch.arange(B, device=dev), lengths]  # (B, H)
        prev = last.repeat_interleave(J, 0)[:, None]  # (B*J, 1, H)

        # 3. All (example, word) rows in one forward over the prompt cache. A word's last token
        # predicts nothing we need, so only tokens 0..M-2 are fed (no forward when all M == 1).
        if M > 1:
            cache.batch_repeat_interleave(J)  # (B*J, nh, [P+]L, hs): row b*J + j is example b, word j
            rows_mask = word_mask[:, :-1].repeat(B, 1)  # (B*J, M-1)
            full_mask = torch.cat([mask.repeat_interleave(J, 0), rows_mask], 1)  # (B*J, [P+]L+M-1)
            positions = P + lengths.repeat_interleave(J)[:, None] + torch.arange(M - 1, device=dev)
            inputs = word_ids[:, :-1].repeat(B, 1)  # (B*J, M-1)
            if shared is not None:
                word_hidden, _ = bb.states(inputs, own_mask(full_mask, past=L, dtype=dtype), cache=cache,
                                           position_ids=positions, shared_prefix=shared)
            else:
                word_hidden, _ = bb.states(inputs, full_mask, cache=cache, position_ids=positions)
            prev = torch.cat([prev, word_hidden], 1)  # (B*J, M, H): the state before each word token
        return self._word_scores(prev, B, words)

    def _packed_last_states(self, prefix_kv, P, ids, lengths, packing, shared=None) -> torch.Tensor:
        """(B, H) last state of each prompt, run packed (backbone.Packing) after the shared prefix:
        a slot sees the whole prefix and the earlier slots of its own prompt."""
        bb, dev = self.backbone, self.device
        B, T = ids.shape
        R, C = packing.segment.shape
        own = packing.attention_mask(bb.lm.get_input_embeddings().weight.dtype)  # (R, 1, C, C)
        packed = packing.pack(ids, bb.tokenizer.pad_token_id)
        if shared is not None:
            hidden, _ = bb.states(packed, own, position_ids=P + packing.positions, shared_prefix=shared)
        else:
            mask = torch.cat([own.new_zeros(R, 1, C, P), own], -1)  # (R, 1, C, P + C): the prefix is seen
            cache = DynamicCache(ddp_cache_data=[(k.expand(R, -1, -1, -1), v.expand(R, -1, -1, -1))
                                                 for k, v in prefix_kv])
            hidden, _ = bb.states(packed, mask, cache=cache, position_ids=P + packing.positions)
        slot = torch.full((B * T,), -1, dtype=torch.long, device=dev)
        slot[packing.src] = packing.dst  # where each real token of the padded batch sits in the packing
        last = slot[torch.arange(B, device=dev) * T + lengths - 1]
        return hidden.reshape(R * C, -1)[last]

    def _word_scores(self, prev: torch.Tensor, B: int, words) -> torch.Tensor:
        """(B, C) label scores from prev (B*J, M, H), the state before each word token."""
        bb, dev = self.backbone, self.device
        word_ids, word_mask = words
        J, M = word_ids.shape
        # Only the real word positions go through the LM head: (R, H) -> (R, V), never T x V.
        real = word_mask.repeat(B, 1).bool()  # (B*J, M)
        logp = F.log_softmax(bb.lm_logits(prev[real]).float(), -1)
        token_lp = torch.zeros(B * J, M, device=dev)
        token_lp[real] = logp.gather(1, word_ids.repeat(B, 1)[real][:, None]).squeeze(1)
        word_lp = token_lp.sum(1).view(B, J)  # (B, J)
        if self.token_reduce == "mean":
            word_lp = word_lp / word_mask.sum(1)
        return words_to_labels(word_lp.cpu(), self.word_label, self.num_classes)


def verbalizer_words(tokenizer, verbalizer) -> tuple[list[list[int]], torch.Tensor]:
    """Every verbalizer word of every label as one continuation j = 0..J-1: the token ids of
    " " + word, and the label each belongs to (J,)."""
    words = [(c, w) for c, ws in enumerate(verbalizer) for w in ws]
    ids = [tokenizer(" " + w, add_special_tokens=False).input_ids for _, w in words]
    return ids, torch.tensor([c for c, _ in words])


def words_to_labels(word_lp: torch.Tensor, word_label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, J) word scores -> (N, C): logsumexp over each label's words (P(any of its words))."""
    own = word_label[None, :] == torch.arange(num_classes, device=word_label.device)[:, None]  # (C, J)
    return torch.logsumexp(word_lp[:, None, :].masked_fill(~own, float("-inf")), -1)


@torch.inference_mode()
def naive_scores(backbone, texts: Sequence[str], template: str, verbalizer, demos: Sequence[str] = (),
                 token_reduce: str = "sum") -> torch.Tensor:
    """Reference (N, C) label scores: prefix + prompt + word re-run from scratch for every
    (example, label, word), a full forward and full T x V logits; no cache, no padding."""
    tok, dev = backbone.tokenizer, next(backbone.parameters()).device
    out = torch.empty(len(texts), len(verbalizer))
    with eval_mode(backbone):
        for i, text in enumerate(texts):
            shared, rest = split_prompt(template, text, demonstration_prefix(demos))
            context = tok(shared).input_ids + tok(rest, add_special_tokens=False).input_ids
            for c, label_words in enumerate(verbalizer):
                word_scores = []
                for w in label_words:
                    word = tok(" " + w, add_special_tokens=False).input_ids
                    ids = torch.tensor([context + word], device=dev)
                    logits = backbone.lm(input_ids=ids).logits[0]  # (T, V)
                    logp = F.log_softmax(logits.float(), -1)[len(context) - 1 : -1]  # (m, V)
                    lp = logp.gather(1, torch.tensor(word, device=dev)[:, None]).sum()
                    word_scores.append(lp / len(word) if token_reduce == "mean" else lp)
                out[i, c] = torch.logsumexp(torch.stack(word_scores), 0)
    return out
