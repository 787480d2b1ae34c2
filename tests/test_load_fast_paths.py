"""The fast load paths of issue 30: the finite-weights check by sums, and a
second load of unchanged files that skips the check but still refuses files rewritten with bad values."""

from __future__ import annotations

import pytest
import torch
import transformers

from omnikit.checkpoint_checks import check_finite
from omnikit.convert import load_hf


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_finite_check_by_sums_decides_as_the_elementwise_check(dtype: torch.dtype) -> None:
    big = torch.finfo(dtype).max
    cases = {
        "overflowing sum": torch.tensor([big, big, -1.0]).to(dtype),  # finite values whose sum is inf: accepted
        "plain": torch.randn(7, 3).to(dtype),
        "empty": torch.zeros(0, dtype=dtype),
    }
    check_finite(cases, "t")
    check_finite({"clip": torch.tensor([float("-inf"), 0.0, float("inf")]).to(dtype)}, "t", inf_allowed=["clip"])
    for bad in (float("nan"), float("inf"), float("-inf")):
        values = torch.randn(64).to(dtype)
        values[17] = bad
        with pytest.raises(ValueError, match=r"hold NaN or inf: \['w'\]"):
            check_finite({"w": values, "ids": torch.arange(3)}, "t")
    nan_clip = torch.tensor([float("inf"), float("nan")]).to(dtype)
    with pytest.raises(ValueError, match=r"hold NaN or inf: \['clip'\]"):
        check_finite({"clip": nan_clip}, "t", inf_allowed=["clip"])


def _save(directory, nan: bool = False) -> transformers.PreTrainedModel:
    config = transformers.Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, head_dim=16, vocab_size=64)
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(config).eval()
    if nan:
        with torch.no_grad():
            hf.model.layers[0].self_attn.k_proj.weight[3, 5] = float("nan")
    hf.save_pretrained(directory, max_shard_size="20KB")
    return hf


def test_second_load_of_unchanged_files_equals_the_first_and_a_rewritten_file_is_checked_again(tmp_path) -> None:
    hf = _save(tmp_path)
    first, second = load_hf(tmp_path), load_hf(tmp_path)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 64, (2, 5))
    torch.testing.assert_close(second(ids), hf(ids).logits, rtol=1e-4, atol=1e-5)
    _save(tmp_path, nan=True)  # the same files rewritten: their identity changes, the check runs again
    with pytest.raises(ValueError, match=r"hold NaN or inf: \['decoder.blocks.0.attn.qkv.weight'\]"):
        load_hf(tmp_path)

