"""from_transformers(Qwen3DecoderLayer): same forward and gradients as transformers in float32."""

from __future__ import annotations

import pytest
import torch

from omnikit.convert import from_transformers, supported_transformers_classes

transformers = pytest.importorskip("transformers")
from transformers import Qwen3Config  # noqa: E402
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding  # noqa: E402


def build_pair(seed: int, **config_kwargs):
    torch.manual_seed(seed)
    config = Qwen3Config(attn_implementation="sdpa", **config_kwargs)
    hf = Qwen3DecoderLayer(config, 0)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    return config, hf, from_transformers(hf)


CONFIGS = [
    dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=32),
    dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=6, head_dim=8,
         attention_bias=True, rope_theta=1e6),
    dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=16),
]


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_forward_and_gradients_match(index: int) -> None:
    config, hf, ours = build_pair(index, **CONFIGS[index])
    length = 17 + 6 * index
    x = torch.randn(2, length, config.hidden_size)
    rope = Qwen3RotaryEmbedding(config)(x, torch.arange(length)[None].expand(2, -1))
    x_hf, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_hf = hf(x_hf, attention_mask=None, position_embeddings=rope)
    y_ours = ours(x_ours)
    torch.testing.assert_close(y_ours, y_hf, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(y_hf)
    (y_hf * weight).sum().backward()
    (y_ours * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_hf.grad, atol=1e-5, rtol=1e-4)
    attn = hf.self_attn
    q_rows = config.num_attention_heads * attn.head_dim
    grads = ours.attn.qkv.weight.grad
    torch.testing.assert_close(grads[:q_rows], attn.q_proj.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[q_rows:], torch.cat([attn.k_proj.weight.grad, attn.v_proj.weight.grad]),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.attn.q_norm.weight.grad, attn.q_norm.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.mlp.down.weight.grad, hf.mlp.down_proj.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.norm1.weight.grad, hf.input_layernorm.weight.grad, atol=1e-4, rtol=1e-4)


def test_unsupported_class_is_named() -> None:
    assert "Qwen3DecoderLayer" in supported_transformers_classes()
    with pytest.raises(TypeError, match="Linear"):
        from_transformers(torch.nn.Linear(2, 2))
