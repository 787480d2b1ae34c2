"""transformers' MoshiForConditionalGeneration checkpoints load as omnikit's Moshi: text and depth-decoder logits
equal for given text and both audio streams, greedy generation equal to transformers' ``generate``."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from references import hf_tiny_mimi_config, randomise_mimi  # noqa: E402

from omnikit.audio.layouts import delay_codes  # noqa: E402
from omnikit.convert import load_hf, save_hf  # noqa: E402
from omnikit.speech.moshi import Moshi  # noqa: E402

K, VOCAB, CODES = 3, 40, 16


def hf_tiny_moshi() -> torch.nn.Module:
    """A tiny random transformers Moshi (3 codebooks of 16, text vocab 40) with random norms and codebooks."""
    config = transformers.MoshiConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, ffn_dim=64, num_codebooks=K, sliding_window=64, max_position_embeddings=64,
        audio_encoder_config=hf_tiny_mimi_config(transformers).to_dict(),
        depth_decoder_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  head_dim=4, ffn_dim=48, sliding_window=8, max_position_embeddings=K),
    )
    torch.manual_seed(0)
    model = transformers.MoshiForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name or name.endswith("norm.weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif "flexible" in name or name.endswith(("projections.weight", "lm_heads.weight")) or ".linear." in name:
                param.mul_(0.3)
    return randomise_mimi(model)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    hf = hf_tiny_moshi()
    path = tmp_path_factory.mktemp("moshi")
    hf.save_pretrained(path, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").is_file()
    return hf, load_hf(path).eval(), path


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_text_and_depth_logits_equal_transformers(loaded):
    hf, moshi, _ = loaded
    assert isinstance(moshi, Moshi)
    g = torch.Generator().manual_seed(1)
    batch, steps = 2, 7
    text = torch.randint(0, VOCAB, (batch, steps), generator=g)
    frames, user_frames = (torch.randint(0, CODES, (batch, K, steps), generator=g) for _ in "au")
    assistant, user = (delay_codes(c, CODES, moshi.delays)[..., :steps] for c in (frames, user_frames))
    start = torch.full((batch, K, 1), CODES)
    with torch.no_grad():
        ours_text, ours_codes = moshi.split_logits(moshi(text, assistant, user))
        # transformers' position t reads the tokens of step t - 1 (the start column first) and its depth
        # decoder the step's text and delayed codes (audio_labels are delayed inside)
        ref = hf(input_ids=torch.cat((torch.full((batch, 1), VOCAB), text[:, :-1]), 1),
                 moshi_audio_codes=torch.cat((start, assistant[..., :-1]), 2),
                 user_audio_codes=torch.cat((start, user[..., :-1]), 2), text_labels=text, audio_labels=frames)
    assert _rel(ours_text, ref.logits) <= 1e-4
    assert _rel(ours_codes, ref.audio_logits.view(batch, steps, K, CODES)) <= 1e-4


def test_greedy_generation_equals_transformers(loaded):
    hf, moshi, _ = loaded
    g = torch.Generator().manual_seed(2)
    batch, prompt, new = 2, 3, 10
    text = torch.randint(0, VOCAB, (batch, prompt), generator=g)
    user, said = (torch.randint(0, CODES, (batch, K, prompt), generator=g) for _ in "us")
    ref = hf.generate(input_ids=text, user_audio_codes=user, moshi_audio_codes=said, max_new_tokens=new,
                      do_sample=False, return_audio_waveforms=False, return_audio_codes=True)
    out = moshi.generate(text, user, said, max_new_tokens=new)
    assert out.tokens.shape == (batch, new) and out.codes.shape == (batch, K, new - 1)
    assert torch.equal(out.tokens, ref.sequences[:, 1 + prompt :])
    # its text includes the start token and the prompt, its codes the prompt frames (the start frame's
    # codes are pad ids, which it filters out)
    assert torch.equal(out.codes, ref.audio_codes[:, :, prompt:])
    assert len(set(out.codes.flatten().tolist())) > 3  # not a degenerate constant stream


def test_mimi_part_and_save_hf_round_trip(loaded, tmp_path):
    hf, moshi, path = loaded
    wav = torch.randn(1, 1, 5 * moshi.audio_encoder.hop, generator=torch.Generator().manual_seed(3))
    codec = load_hf(path, part="audio_encoder")
    with torch.no_grad():
        ref = hf.audio_encoder.encode(wav, num_quantizers=K).audio_codes
        assert torch.equal(moshi.audio_encoder.encode(wav), ref)
        assert torch.equal(codec.encode(wav)[:, :K], ref)
    save_hf(moshi, tmp_path / "back", max_shard_size="20KB")
    back = type(hf).from_pretrained(tmp_path / "back")
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_created_moshi_saves_as_a_transformers_checkpoint(tmp_path):
    """``save_hf`` on a Moshi built by ``create_model`` writes a config and tensors transformers loads, and
    the logits agree."""
    import omnikit

    torch.manual_seed(0)
    moshi = omnikit.create_model("moshi_tiny").eval()
    save_hf(moshi, tmp_path, max_shard_size="20KB")
    hf = transformers.MoshiForConditionalGeneration.from_pretrained(tmp_path).eval()
    again = load_hf(tmp_path).eval()
    g = torch.Generator().manual_seed(4)
    text = torch.randint(0, 40, (1, 5), generator=g)
    codes = torch.randint(0, 16, (1, 3, 5), generator=g)
    start = torch.full((1, 3, 1), 16)
    with torch.no_grad():
        ours = moshi.split_logits(moshi(text, codes, codes))[0]
        ref = hf(input_ids=torch.cat((torch.full((1, 1), 40), text[:, :-1]), 1),
                 moshi_audio_codes=torch.cat((start, codes[..., :-1]), 2),
                 user_audio_codes=torch.cat((start, codes[..., :-1]), 2)).logits
        assert _rel(ours, ref) <= 1e-4
        assert torch.equal(again(text, codes, codes), moshi(text, codes, codes))


def test_published_preset_counts_equal_transformers_meta_model():
    """``moshi`` has the parameters of transformers' Moshi built from the published config values (moshiko)."""
    import omnikit

    config = transformers.MoshiConfig(
        vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, ffn_dim=22528,
        num_codebooks=8, sliding_window=3000, audio_encoder_config=transformers.MimiConfig().to_dict(),
        depth_decoder_config=dict(hidden_size=1024, num_hidden_layers=6, num_attention_heads=16, ffn_dim=5632),
    )
    with torch.device("meta"):
        hf = transformers.MoshiForConditionalGeneration(config)
    ours = omnikit.create_model("moshi", device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())


def test_unsupported_config_values_are_refused():
    from omnikit.convert.hub_moshi import MOSHI

    config = hf_tiny_moshi().config.to_dict()
    with pytest.raises(ValueError, match="hidden_act"):
        MOSHI({**config, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="ffn_dim"):
        MOSHI({**config, "ffn_dim": 63})
