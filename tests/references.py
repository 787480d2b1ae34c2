"""Plain reference implementations the tests compare omnikit's fast paths against."""

from __future__ import annotations

import torch


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Float64 softmax attention with a bool mask (True = attend); ``k``/``v`` may have fewer heads (GQA)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1).double(), v.repeat_interleave(groups, 1).double()
    scores = q.double() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v).float()


def randomise_norms_and_biases(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Norm weights around 1 and biases around 0 instead of transformers' constant inits; returns ``model.eval()``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=g))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn(param.shape, generator=g))
    return model.eval()


def randomise_hybrid(model: torch.nn.Module) -> torch.nn.Module:
    """A Qwen3-Next / Qwen3.5 transformers model with norms, biases, ``A_log``, ``dt_bias`` and gates
    randomised and projections scaled up (gates and decays far from their initial values), so a layout
    mistake shows; returns ``model.eval()``."""
    model = randomise_norms_and_biases(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("A_log", "dt_bias")):
                param.copy_(torch.randn(param.shape, generator=g))
            elif name.endswith(("shared_expert_gate.weight", "mlp.gate.weight")):
                param.copy_(0.5 * torch.randn(param.shape, generator=g))
            elif "q_proj" in name or "in_proj" in name:
                param.mul_(10)
    return model


def hf_tiny_mimi_config(transformers, **overrides):
    """A tiny transformers ``MimiConfig`` (800 Hz, 50 frames/s, hop 16, 3 codebooks of 16, window 5)."""
    values = dict(
        hidden_size=16, num_filters=4, upsampling_ratios=[4, 2], num_hidden_layers=2, intermediate_size=32,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, codebook_size=16, codebook_dim=8,
        vector_quantization_hidden_dimension=8, num_quantizers=3, upsample_groups=16, sampling_rate=800,
        frame_rate=50, sliding_window=5,
    )
    return transformers.MimiConfig(**{**values, **overrides})


def randomise_mimi(model: torch.nn.Module) -> torch.nn.Module:
    """A transformers Mimi (or a model holding one) with random norms, layer scales, biases and codebooks."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "scale" in name:
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn_like(param))
        for name, buffer in model.named_buffers():
            if name.endswith("embed_sum"):
                buffer.normal_()
            elif name.endswith("cluster_usage"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()

def left_padded_batch(vocab: int, batch: int = 3, length: int = 9, seed: int = 1,
                      low: int = 0) -> dict[str, torch.Tensor]:
    """A processor-style text batch: ``input_ids`` in ``[low, vocab)`` and an ``attention_mask`` left-padding
    items 0 (4 steps) and 2 (1 step)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    return {"input_ids": ids, "attention_mask": mask}


def max_rel_error(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """``max |ours - ref| / max |ref|`` over the valid (``mask``) positions."""
    valid = mask.bool()
    return float((ours[valid] - ref[valid]).abs().max() / ref[valid].abs().max())


def assert_loads_and_round_trips(hf: torch.nn.Module, directory, batch: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``hf`` saved in 20KB shards loads with ``load_hf`` to its logits on ``batch`` (rel. error <= 1e-4 on valid
    positions), and ``save_hf`` -> ``from_pretrained`` gives them back; returns the loaded omnikit model."""
    from omnikit.convert import hf_inputs, load_hf, save_hf

    hf.save_pretrained(directory / "hf", max_shard_size="20KB")
    assert (directory / "hf" / "model.safetensors.index.json").is_file()
    model = load_hf(directory / "hf")
    with torch.no_grad():
        ref = hf(**batch).logits
        assert max_rel_error(model(**hf_inputs(model, batch)), ref, batch["attention_mask"]) <= 1e-4
    save_hf(model, directory / "back", max_shard_size="20KB")
    assert (directory / "back" / "model.safetensors.index.json").is_file()
    again = type(hf).from_pretrained(directory / "back").eval()
    with torch.no_grad():
        assert max_rel_error(again(**batch).logits, ref, batch["attention_mask"]) <= 1e-4
    return model


def greedy_reference(hf: torch.nn.Module, batch: dict[str, torch.Tensor], new: int = 8) -> tuple[torch.Tensor, dict]:
    """transformers' greedy ``generate`` tokens ``(B, new)`` for a left-padded ``batch``, and the keyword
    arguments of omnikit's ``generate`` that match it (its mask, and the positions ``generate`` uses)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ref = hf.generate(**batch, max_new_tokens=new, do_sample=False, pad_token_id=0)[:, ids.shape[1]:]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ref, dict(key_padding_mask=mask.bool(), positions=positions, next_position=mask.sum(-1), max_new_tokens=new)
