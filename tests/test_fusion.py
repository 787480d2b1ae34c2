"""Early fusion (scatter, masks, packing) and cross-attention fusion (gates, FusionLayer, media masks, recipes)."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import (
    FusionLayer,
    MediaTokens,
    apply_recipe,
    fusion_attention_mask,
    media_attention_mask,
    media_item_ids,
    pack_sequences,
    parameter_groups,
    scatter_media,
    tmrope_position_ids,
)
from omnikit.fusion.models import QWEN2_5_OMNI_TINY, TINY_TOKENS
from omnikit.fusion.tmrope import VisualGrid
from omnikit.outputs import EncoderOutput

TOKENS = MediaTokens(image=1, video=2, audio=3)


def test_scatter_puts_media_at_placeholders_in_order() -> None:
    ids = torch.tensor([[9, 3, 3, 9, 1], [3, 9, 9, 9, 9]])
    embeds = torch.zeros(2, 5, 4)
    audio = EncoderOutput(torch.arange(24.0).view(2, 3, 4), torch.tensor([2, 1]))
    image = torch.full((1, 4), -1.0)
    out = scatter_media(embeds, ids, {"audio": audio, "image": image}, TOKENS)
    assert torch.equal(out[0, 1], audio.hidden_states[0, 0]) and torch.equal(out[0, 2], audio.hidden_states[0, 1])
    assert torch.equal(out[1, 0], audio.hidden_states[1, 0])
    assert torch.equal(out[0, 4], image[0]) and out[0, 0].abs().sum() == 0


def test_scatter_errors_name_modality_and_counts() -> None:
    ids = torch.tensor([[3, 3, 3, 9]])
    expected = r"audio: `input_ids` holds 3 audio placeholder tokens but the audio encoder gave 2"
    with pytest.raises(ValueError, match=expected):
        scatter_media(torch.zeros(1, 4, 4), ids, {"audio": torch.zeros(2, 4)}, TOKENS)
    with pytest.raises(ValueError, match=expected):  # padded media: the count is the lengths' sum, not the padding
        scatter_media(torch.zeros(1, 4, 4), ids, {"audio": EncoderOutput(torch.zeros(1, 3, 4), torch.tensor([2]))},
                      TOKENS)
    with pytest.raises(ValueError, match="no 'audio' entry"):
        scatter_media(torch.zeros(1, 4, 4), ids, {}, TOKENS)
    with pytest.raises(ValueError, match="width 4"):
        scatter_media(torch.zeros(1, 4, 4), ids, {"audio": torch.zeros(3, 5)}, TOKENS)
    # padding placeholders are ignored
    padded = scatter_media(torch.zeros(1, 4, 4), ids, {"audio": torch.ones(2, 4)}, TOKENS,
                           key_padding_mask=torch.tensor([[True, True, False, True]]))
    assert padded[0, 2].abs().sum() == 0


def test_fusion_mask_causal_text_bidirectional_items_block_diagonal_packing() -> None:
    modality = torch.tensor([[0, 1, 1, 0, 3, 3, 0]])
    assert media_item_ids(modality).tolist() == [[-1, 0, 0, -1, 1, 1, -1]]
    mask = fusion_attention_mask(modality)[0, 0]
    causal = torch.ones(7, 7).tril().bool()
    assert mask[1, 2] and mask[4, 5], "tokens of one item see each other"
    assert not mask[2, 4] and not mask[0, 1], "no look-ahead across items or from text"
    assert torch.equal(fusion_attention_mask(modality, bidirectional_media=False)[0, 0], causal)
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    packed = fusion_attention_mask(modality, segment_ids=seg)[0, 0]
    assert not packed[3:, :3].any() and not packed[:3, 3:].any()


def test_packed_thinker_equals_separate_samples() -> None:
    thinker = omnikit.create_model("thinker_tiny").eval()
    g = torch.Generator().manual_seed(0)
    samples = [torch.randint(8, 256, (n,), generator=g) for n in (5, 9, 3)]
    samples[1][2:6] = TINY_TOKENS.image  # an image of 1 x 2 x 2 tokens in the second sample
    media = torch.randn(4, 64, generator=g)
    positions = [tmrope_position_ids(s, TINY_TOKENS, images=[VisualGrid(1, 2, 2)] if i == 1 else [],
                                     scheme=QWEN2_5_OMNI_TINY)[0] for i, s in enumerate(samples)]
    packed = pack_sequences(samples, positions)
    with torch.no_grad():
        out = thinker(packed.input_ids, media={"image": media}, positions=packed.positions,
                      cu_seqlens=packed.cu_seqlens)
        for i, (s, p) in enumerate(zip(samples, positions)):
            alone = thinker(s[None], media={"image": media} if i == 1 else None, positions=p[:, None])
            a, b = packed.cu_seqlens[i], packed.cu_seqlens[i + 1]
            torch.testing.assert_close(out[:, a:b], alone, atol=1e-5, rtol=1e-4)


def _xattn_inputs(model, seed=0):
    return model.contract_inputs([12, 12], seed=seed).kwargs


def test_cross_attention_model_at_init_equals_text_only_decoder() -> None:
    torch.manual_seed(0)
    text_only = omnikit.create_model("decoder_tiny", mrope_sections=None).eval()
    fused = omnikit.create_model("omni_xattn_tiny").eval()
    fused.lm.load_state_dict(text_only.state_dict(), strict=False)
    kwargs = _xattn_inputs(fused)
    with torch.no_grad():
        reference = text_only(kwargs["input_ids"])
        torch.testing.assert_close(fused(**kwargs), reference, atol=1e-6, rtol=1e-5)
        for layer in fused.modules():
            if isinstance(layer, FusionLayer):
                layer.fusion.attn_gate.fill_(0.5)
        assert not torch.allclose(fused(**kwargs), reference, atol=1e-4), "open gates must let media in"


def test_fusion_layer_keeps_the_wrapped_layers_state_dict_keys() -> None:
    text_only = omnikit.create_model("decoder_tiny", mrope_sections=None)
    fused = omnikit.create_model("omni_xattn_tiny")
    text_keys, fused_keys = set(text_only.state_dict()), set(fused.lm.state_dict())
    assert text_keys <= fused_keys
    assert all(".fusion." in k for k in fused_keys - text_keys)
    assert any(isinstance(b, FusionLayer) for b in fused.lm.decoder.blocks)
    result = fused.lm.load_state_dict(text_only.state_dict(), strict=False)
    assert not result.unexpected_keys and all(".fusion." in k for k in result.missing_keys)
    assert torch.equal(fused.lm.decoder.blocks[1].layer.attn.qkv.weight, text_only.decoder.blocks[1].attn.qkv.weight)


def test_media_mask_each_text_token_sees_the_media_before_it() -> None:
    offsets = torch.tensor([[2, 5], [0, -1]])
    mask = media_attention_mask(offsets, torch.arange(7), tokens_per_item=2)[:, 0]
    assert mask.shape == (2, 7, 4)
    assert not mask[0, :2].any() and mask[0, 2, :2].all() and not mask[0, 4, 2:].any() and mask[0, 6].all()
    assert mask[1, :, :2].all() and not mask[1, :, 2:].any(), "a missing item (-1) is never seen"
    latest = media_attention_mask(offsets, torch.arange(7), tokens_per_item=2, only_latest=True)[:, 0]
    assert latest[0, 6, 2:].all() and not latest[0, 6, :2].any()


def test_cross_attention_text_before_media_ignores_it() -> None:
    model = omnikit.create_model("omni_xattn_tiny").eval()
    for layer in model.modules():
        if isinstance(layer, FusionLayer):
            layer.fusion.attn_gate.data.fill_(1.0)
    kwargs = _xattn_inputs(model)
    other = {**kwargs, "audio_features": kwargs["audio_features"] + 1.0}
    with torch.no_grad():
        a, b = model(**kwargs), model(**other)
    assert torch.equal(a[:, :4], b[:, :4]), "tokens before the audio marker (position 4) must not see the audio"
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_cross_attention_marker_errors() -> None:
    model = omnikit.create_model("omni_xattn_tiny")
    kwargs = _xattn_inputs(model)
    kwargs["input_ids"][0, 6] = TINY_TOKENS.audio
    with pytest.raises(ValueError, match="more audio markers than the 2 audio item"):
        model(**kwargs)


@pytest.mark.parametrize("name, kwargs", [("omni_xattn_tiny", {}), ("omni_xattn_tiny", {"num_latents": 4}),
                                          ("omni_early_tiny", {})])
def test_freeze_recipes_select_the_right_parameters(name: str, kwargs: dict) -> None:
    model = omnikit.create_model(name, **kwargs)
    groups = parameter_groups(model)
    assert groups["lm"] and groups["encoders"] and groups["adapters"]
    trainable = apply_recipe(model, "adapters")
    assert set(trainable) == set(groups["adapters"])
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in groups["lm"] + groups["encoders"])
    assert not any("lm_head" in n or ".layer." in n for n in trainable)
    if name == "omni_xattn_tiny":
        assert any("fusion.attn_gate" in n for n in trainable)
        assert model.resampler is None or any("resampler" in n for n in trainable)
        gates = apply_recipe(model, "gates")
        assert gates and all(n.endswith(("attn_gate", "ff_gate")) for n in gates)
    else:
        assert all("projector" in n for n in trainable)
    everything = apply_recipe(model, "full")
    assert len(everything) == len(list(model.parameters()))
    frozen_lm = set(apply_recipe(model, "freeze_lm"))
    assert frozen_lm == set(everything) - set(groups["lm"])
    with pytest.raises(ValueError, match="recipe"):
        apply_recipe(model, "unknown")


def test_text_lm_loss_skips_media_targets_and_padding() -> None:
    from omnikit.fusion import text_lm_loss

    ids = torch.tensor([[9, 3, 3, 9, 8]])
    logits = torch.zeros(1, 5, 16)
    logits[0, 2, 9] = 50.0  # predicts the text target after the audio run: near-zero loss
    logits[0, 3, 8] = 50.0
    full = text_lm_loss(logits, ids, media_tokens=TOKENS)
    assert full < 1e-3, "only text targets (positions 3 and 4) count"
    assert text_lm_loss(logits, ids) > 1.0, "without the modality mask, audio targets are counted"
    padded = text_lm_loss(logits, ids, media_tokens=TOKENS, key_padding_mask=torch.tensor([[1, 1, 1, 1, 0]]).bool())
    assert padded < 1e-3


def test_cross_attention_item_outputs_do_not_depend_on_the_rest_of_the_batch() -> None:
    """Open gates (attention and feed-forward): a batch of a video+audio item, a text-only item and
    a video-only item gives each row what the item gives alone; the text-only row is the text decoder's."""
    torch.manual_seed(0)
    model = omnikit.create_model("omni_xattn_tiny").eval()
    for layer in model.modules():
        if isinstance(layer, FusionLayer):
            layer.fusion.attn_gate.data.fill_(0.7)
            layer.fusion.ff_gate.data.fill_(-0.9)
    full = model.contract_inputs([12] * 3, seed=1).kwargs
    ids = full["input_ids"].clone()
    ids[1, [0, 4]] = 9  # item 1: text only
    ids[2, 4] = 9  # item 2: video only
    items = [
        {"input_ids": ids[:1], "frames": full["frames"][:1], "audio_features": full["audio_features"][:1],
         "audio_lengths": full["audio_lengths"][:1]},
        {"input_ids": ids[1:2]},
        {"input_ids": ids[2:], "frames": full["frames"][2:]},
    ]
    batch = {"input_ids": ids, "frames": full["frames"][[0, 2]], "audio_features": full["audio_features"][:1],
             "audio_lengths": full["audio_lengths"][:1]}
    with torch.no_grad():
        together = model(**batch)
        alone = [model(**item)[0] for item in items]
        text_only = model.lm.lm_head(model.lm.decoder(model.lm.embed(ids[1:2])))[0]
    for row, out in enumerate(alone):
        torch.testing.assert_close(together[row], out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[1], text_only, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(together[0], model.lm.lm_head(model.lm.decoder(model.lm.embed(ids[:1])))[0], atol=1e-3)
