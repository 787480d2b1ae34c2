"""KV-cached decoding for any :class:`omnikit.models.CausalLM`: one step per generated token.

The prompt is run once inside ``with lm.streaming(B):`` (prefill; the LM head reads its last
position only), then each new token is fed alone; the caller sees every token as soon as it exists,
with its input embedding and the final hidden state (what a Talker consumes). Ids are validated once,
at the prompt: a generated token comes from the model's own vocabulary, so the decode steps make no
host syncs for checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from omnikit.models.decode_cache import CacheKind, CompileOption, RepeatedSteps, check_cache_settings, compiled_step
from omnikit.models.prefill import prefill
from omnikit.models.sampling import GREEDY, Sampling, check_stream_settings, sample_next, sampling_from_hf
from omnikit.utils.checks import OmnikitValueError, check_int_in_range, check_positive, check_tensor

if TYPE_CHECKING:
    from omnikit.models.language_model import CausalLM

__all__ = ["GenerationOutput", "GenerationStep", "generate", "stream_generate"]


@dataclass
class GenerationStep:
    """One generated token per item, with what a Talker needs from it.

    Attributes:
        tokens: ``(B,)`` the new token ids.
        embeds: ``(B, D)`` their input embeddings.
        hidden: ``(B, D)`` the model's final hidden state at the new token.
        finished: ``(B,)`` bool, True for items that have emitted ``eos_token_id``.
    """

    tokens: torch.Tensor
    embeds: torch.Tensor
    hidden: torch.Tensor
    finished: torch.Tensor


@dataclass
class GenerationOutput:
    """``tokens (B, N)``, ``embeds``/``hidden (B, N, D)`` of all generated steps."""

    tokens: torch.Tensor
    embeds: torch.Tensor
    hidden: torch.Tensor

    @classmethod
    def stack(cls, steps: list[GenerationStep]) -> GenerationOutput:
        if not steps:
            raise OmnikitValueError("no generation steps to stack")
        return cls(*(torch.stack([getattr(s, f) for s in steps], dim=1) for f in ("tokens", "embeds", "hidden")))


@torch.no_grad()
def stream_generate(
    lm: CausalLM,
    input_ids: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    next_position: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    sampling: Sampling = GREEDY,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    cache: CacheKind = "dynamic",
    max_len: int | None = None,
    compile: CompileOption = False,
    prefill_chunk: int | None = None,
    **prompt_kwargs: Any,
) -> Iterator[GenerationStep]:
    """Prefill ``input_ids (B, T)`` once, then yield one :class:`GenerationStep` per generated token.

    Args:
        lm: the language model; ``lm(input_ids, positions=, key_padding_mask=, logits_to_keep=1, **prompt_kwargs)``
            runs the prompt, ``lm.decode_step`` each new token and ``lm.restrict_logits`` removes ids
            it must never generate.
        input_ids, positions, key_padding_mask: the prompt (left padding allowed with a mask and
            matching positions); ``positions`` ``(B, T)`` or ``(3, B, T)`` for M-RoPE.
        next_position: ``(B,)`` position id of the first generated token; default: the prompt length.
        max_new_tokens: upper bound on generated tokens.
        sampling: temperature / top-k / top-p / repetition penalty (default greedy).
        eos_token_id: items stop at this token (then repeat it) and the loop ends when all items
            have stopped.
        generator: random source for sampling.
        cache: ``"dynamic"`` (a growable KV cache) or ``"static"`` (preallocated for ``max_len``
            positions: every decode step has the same shapes, see :class:`~omnikit.layers.StaticKVCache`).
        max_len: positions a static cache holds, at least prompt + ``max_new_tokens`` (the default).
        compile: run each decode step through ``torch.compile(fullgraph=True)``: ``True``, a compile
            mode such as ``"reduce-overhead"`` (CUDA graphs) or a mapping of ``torch.compile``
            arguments; needs ``cache="static"``. Dynamo keeps the traced step, so later calls with the
            same batch and ``max_len`` reuse it.
        prefill_chunk: run the prompt through the cache this many positions at a time (see
            :func:`.prefill.prefill`): the same logits, activation memory bounded by the chunk. Text
            prompts only (media in ``prompt_kwargs`` are scattered over the whole prompt).
        prompt_kwargs: more keyword arguments of the prompt's forward (``media`` for a Thinker);
            transformers' ``do_sample`` / ``temperature`` / ``top_k`` / ``top_p`` /
            ``repetition_penalty`` are read as ``sampling`` (see :func:`.sampling.sampling_from_hf`).
    """
    sampling = sampling_from_hf(sampling, prompt_kwargs)
    check_stream_settings(max_new_tokens=max_new_tokens, sampling=sampling)
    if eos_token_id is not None:
        check_int_in_range(eos_token_id, "eos_token_id", 0, lm.config.vocab_size)
    check_tensor(input_ids, "input_ids", ndim=2, floating=False)
    batch, length = input_ids.shape
    if length == 0:
        raise OmnikitValueError(f"`input_ids` expected a prompt of at least one token but got shape {(batch, 0)}")
    max_len = check_cache_settings(cache, max_len, compile, needed=length + max_new_tokens)
    if prefill_chunk is not None:
        check_positive(prefill_chunk, "prefill_chunk")
    if prefill_chunk is not None and prompt_kwargs:
        raise OmnikitValueError(
            f"`prefill_chunk` runs text prompts only but got more prompt arguments {sorted(prompt_kwargs)}"
        )
    device = input_ids.device
    start = torch.full((batch,), length, device=device) if next_position is None else next_position
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    generated: list[torch.Tensor] = []
    decode_step = lm.decode_step if compile is False else RepeatedSteps(compiled_step(lm.decode_step, compile))
    step_padding = None
    if max_len is not None and key_padding_mask is not None:  # one mask over every slot, the same each step
        step_padding = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        step_padding[:, :length] = key_padding_mask
    # The model runs under inference mode (less per-operator work than no_grad: no version counters or
    # view tracking, which a decode step of small operators feels); each step is handed out as clones
    # made outside it, ordinary tensors the caller may use with autograd or modify in place.
    inference = torch.inference_mode()  # one context object, entered once per step (a new one costs more)
    penalised = sampling.repetition_penalty != 1.0  # only the penalty reads the tokens generated so far
    mrope = lm.uses_mrope
    with lm.streaming(batch, max_len=max_len):
        with inference:
            if prefill_chunk is None:
                logits = lm(input_ids, positions=positions, key_padding_mask=key_padding_mask, logits_to_keep=1,
                            **prompt_kwargs)[:, -1]
            else:
                logits = prefill(lm, input_ids, chunk=prefill_chunk, positions=positions,
                                 key_padding_mask=key_padding_mask, logits_to_keep=1)
        key_padding_mask = step_padding if max_len is not None else key_padding_mask
        for step in range(max_new_tokens):
            with inference:
                previous = torch.stack(generated, dim=1) if penalised and generated else None
                tokens = sample_next(lm.restrict_logits(logits), sampling, generator=generator, previous=previous)
                if eos_token_id is not None:
                    tokens = torch.where(finished, torch.full_like(tokens, eos_token_id), tokens)
                generated.append(tokens)
                pos = (start + step)[:, None].to(start.dtype)
                if mrope:
                    pos = pos.expand(3, batch, 1)
                if key_padding_mask is not None and max_len is None:
                    key_padding_mask = torch.cat((key_padding_mask, torch.ones_like(finished)[:, None]), dim=1)
                out, hidden = decode_step(tokens[:, None], positions=pos, key_padding_mask=key_padding_mask)
                if eos_token_id is not None:
                    finished = finished | (tokens == eos_token_id)
                embeds = lm.embed(tokens)
            yield GenerationStep(tokens.clone(), embeds.clone(), hidden[:, -1].clone(), finished.clone())
            if eos_token_id is not None and bool(finished.all()):
                return
            logits = out[:, -1]


def generate(
    steps: Iterator[GenerationStep], on_token: Callable[[GenerationStep], None] | None = None
) -> GenerationOutput:
    """Run a :func:`stream_generate` loop to the end; ``on_token`` sees every step as it is made."""
    collected = []
    for step in steps:
        if on_token is not None:
            on_token(step)
        collected.append(step)
    return GenerationOutput.stack(collected)
