"""Qwen3-Omni MoE Talker and code predictor: logits equal transformers' given the same inputs (teacher forcing)."""

from __future__ import annotations

import pytest
import torch
from qwen3_omni_reference import randomise, rel_err

from omnikit.convert import from_transformers

pytest.importorskip("transformers")
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTalkerConfig
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoeTalkerForConditionalGeneration,
)

K = 4


def tiny_config() -> Qwen3OmniMoeTalkerConfig:
    text = dict(vocab_size=48, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                num_experts=6, num_experts_per_tok=2, norm_topk_prob=True, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                 "interleaved": True})
    predictor = dict(vocab_size=20, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8, num_code_groups=K, rms_norm_eps=1e-6,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    cfg = Qwen3OmniMoeTalkerConfig(text_config=text, code_predictor_config=predictor, num_code_groups=K,
                                   thinker_hidden_size=24, codec_bos_id=41, spatial_merge_size=2)
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.code_predictor_config._attn_implementation = "eager"
    return cfg


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    hf = randomise(Qwen3OmniMoeTalkerForConditionalGeneration(tiny_config()).eval(), scale=0.3)
    return hf, from_transformers(hf).eval()


def test_talker_logits_match_with_mrope_positions(pair) -> None:
    hf, ours = pair
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(2, 9, 32, generator=g)
    t = torch.arange(9).expand(2, 9)
    positions = torch.stack([t, t // 2 + 1, t % 3 + 2])  # distinct t/h/w ids, as for visual prompt tokens
    with torch.no_grad():
        ref = hf(inputs_embeds=embeds, position_ids=positions).logits
        logits, _ = ours.codec_logits(embeds, positions)
    assert rel_err(logits, ref) < 1e-5


def test_code_predictor_logits_match_teacher_forced(pair) -> None:
    hf, ours = pair
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(5, 32, generator=g)
    codes = torch.randint(0, 20, (5, K), generator=g)
    pred = hf.code_predictor
    # transformers' generation input: [talker state, talker codec embedding of code 0, predictor embeddings ...]
    fed = [hf.model.codec_embedding(codes[:, 0])] + [pred.model.codec_embedding[k - 1](codes[:, k]) for k in
                                                        range(1, K - 1)]
    seq = torch.stack([hidden, *fed], dim=1)
    with torch.no_grad():
        states = pred.model(inputs_embeds=seq).last_hidden_state
        ref = torch.stack([pred.lm_head[k](states[:, k + 1]) for k in range(K - 1)], dim=1)
        prefill = pred(inputs_embeds=seq[:, :2]).logits[:, -1]  # transformers' own prefill step
        logits = ours.residual_logits(hidden, codes)
    assert rel_err(logits, ref) < 1e-5
    assert rel_err(logits[:, 0], prefill) < 1e-5


def test_greedy_residual_codes_equal_transformers_generate(pair) -> None:
    hf, ours = pair
    g = torch.Generator().manual_seed(6)
    hidden = torch.randn(3, 32, generator=g)
    first = torch.randint(0, 20, (3,), generator=g)
    prompt = torch.stack([hidden, hf.model.codec_embedding(first)], dim=1)
    with torch.no_grad():
        ref = hf.code_predictor.generate(inputs_embeds=prompt, max_new_tokens=K - 1, do_sample=False)
    codes = ours.sample_residual(hidden, first)
    assert torch.equal(codes[:, 0], first)
    assert torch.equal(codes[:, 1:], ref[:, -(K - 1):])


def test_frame_embedding_is_the_sum_transformers_feeds_back(pair) -> None:
    hf, ours = pair
    codes = torch.randint(0, 20, (2, K, 3), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf.model.codec_embedding(codes[:, 0]) + sum(
            hf.code_predictor.model.codec_embedding[k - 1](codes[:, k]) for k in range(1, K))
        assert rel_err(ours.embed_frames(codes), ref) < 1e-6


def test_projections_match(pair) -> None:
    hf, ours = pair
    x = torch.randn(3, 24)
    with torch.no_grad():
        assert rel_err(ours.text_projection(x), hf.text_projection(x)) < 1e-6
        assert rel_err(ours.hidden_projection(x), hf.hidden_projection(x)) < 1e-6


def test_teacher_forced_scores_are_consistent(pair) -> None:
    _, ours = pair
    g = torch.Generator().manual_seed(4)
    codes = torch.randint(0, 20, (1, K, 5), generator=g)
    reply = torch.randn(1, 5, 24, generator=g)
    with torch.no_grad():
        scores = ours(codes, reply)
        logits, _ = ours.codec_logits(ours.text_projection(reply) + torch.cat(
            [ours.codec_embedding.weight[41][None, None], ours.embed_frames(codes[:, :, :-1])], dim=1))
    torch.testing.assert_close(scores.logits, logits)
    expected = logits.log_softmax(-1)[0, torch.arange(5), codes[0, 0]]
    torch.testing.assert_close(scores.log_probs[0, :, 0], expected)
