"""The fast paths of the performance round (issue 30) keep behaviour: generation's outputs are ordinary
tensors, and the rewritten shared layers give the same numbers as the reference formulas."""

from __future__ import annotations

import pytest
import torch

import omnikit


def test_generated_steps_are_ordinary_tensors_usable_with_autograd() -> None:
    torch.manual_seed(0)
    lm = omnikit.create_model("decoder_tiny").eval()
    ids = torch.randint(0, lm.config.vocab_size, (2, 5))
    steps = list(lm.stream_generate(ids, max_new_tokens=3))
    for step in steps:
        for tensor in (step.tokens, step.embeds, step.hidden, step.finished):
            assert not tensor.is_inference()
    out = lm.generate(ids, max_new_tokens=3)
    assert torch.equal(out.tokens, torch.stack([s.tokens for s in steps], dim=1))
    # the generated ids and states feed a training step, and may be modified in place
    loss = lm(torch.cat((ids, out.tokens), dim=1)).logsumexp(-1).mean() + out.hidden.sum() * 0
    loss.backward()
    out.hidden.add_(1.0)


@pytest.mark.parametrize("steps", [3, 64])  # one mirrored layer norm for all rows; above MIRRORED_MAX_NUMEL, one by one
def test_norms_over_rows_equal_the_norms_one_by_one(steps: int) -> None:
    from omnikit.layers.norm import RMSNorm, rms_norm_rows

    torch.manual_seed(0)
    cases = ((False, torch.float32, 1e-5), (True, torch.float32, 1e-5), (False, torch.bfloat16, 1e-5),
             (False, torch.float32, 1e-3))  # the last: the two norms' eps differ
    for zero_centered, dtype, second_eps in cases:
        norms = [RMSNorm(16, eps, zero_centered=zero_centered) for eps in (1e-5, second_eps)]
        for norm in norms:
            torch.nn.init.normal_(norm.weight)
        x = torch.randn(2, steps, 5, 16).to(dtype)
        joint = rms_norm_rows(x, norms, (3, 2))
        separate = torch.cat((norms[0](x[:, :, :3]), norms[1](x[:, :, 3:])), dim=2)
        assert joint.dtype == dtype
        torch.testing.assert_close(joint, separate, rtol=1e-6, atol=1e-6)


def test_attention_rotating_queries_and_keys_together_equals_one_by_one() -> None:
    """``rope_heads=num_heads`` takes the one-by-one path and rotates every head: the same attention."""
    from omnikit.layers import Attention, RotaryEmbedding

    torch.manual_seed(0)
    joint = Attention(32, 4, 2, qk_norm=True, causal=True)
    for norm in (joint.q_norm, joint.k_norm):
        torch.nn.init.normal_(norm.weight)
    single = Attention(32, 4, 2, qk_norm=True, causal=True, rope_heads=4)
    single.load_state_dict(joint.state_dict())
    x = torch.randn(2, 7, 32, requires_grad=True)
    rope = RotaryEmbedding(8)(torch.arange(7))
    out = joint(x, rope=rope)
    torch.testing.assert_close(out, single(x, rope=rope), rtol=1e-6, atol=1e-6)
    grad_joint = torch.autograd.grad(out.square().sum(), [x, joint.q_norm.weight, joint.k_norm.weight])
    grad_single = torch.autograd.grad(single(x, rope=rope).square().sum(),
                                      [x, single.q_norm.weight, single.k_norm.weight])
    for a, b in zip(grad_joint, grad_single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad(), joint.streaming(2), single.streaming(2):  # decoding through the KV cache
        for t in range(7):
            step_rope = tuple(r[:, t : t + 1] for r in rope)
            torch.testing.assert_close(joint(x[:, t : t + 1], rope=step_rope), single(x[:, t : t + 1], rope=step_rope),
                                       rtol=1e-6, atol=1e-6)
