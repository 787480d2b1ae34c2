"""Published-checkpoint parity between an earlier revision and this checkout (used by parity_before_after.py).

Tiny random transformers models of every ``load_hf`` architecture are saved once; both revisions'
``load_hf`` load each part, ``from_transformers`` converts each supported transformers class, and
``save_hf`` exports the presets that have a config. Rows give the largest |old - new| over the
state dict and over a forward on the model's contract inputs (0: bit-identical), and for exports
the config.json keys that differ.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

import omnikit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
transformers = importlib.import_module("transformers")


def _randomised(model: nn.Module) -> nn.Module:
    from references import randomise_norms_and_biases

    with torch.no_grad():
        for param in model.parameters():  # some experts start as torch.empty (NaN, huge values)
            if not torch.isfinite(param).all() or param.abs().max() > 1e3:
                param.normal_(0, 0.2)
    return randomise_norms_and_biases(model).eval()


def _qwen_lm(kind: str) -> nn.Module:
    extra = dict(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1]) \
        if kind == "qwen3_moe" else {}
    config = transformers.AutoConfig.for_model(kind, vocab_size=96, hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=8, **extra)
    return transformers.AutoModelForCausalLM.from_config(config)


def _whisper() -> nn.Module:
    return transformers.WhisperModel(transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, max_source_positions=150,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))


def _mimi() -> nn.Module:
    return transformers.MimiModel(transformers.MimiConfig(
        hidden_size=16, num_filters=4, upsampling_ratios=[4, 2], num_hidden_layers=2, intermediate_size=32,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, codebook_size=16, codebook_dim=8,
        vector_quantization_hidden_dimension=8, num_quantizers=3, upsample_groups=16, sampling_rate=800,
        frame_rate=50, sliding_window=5))


def _qwen2_5_omni() -> nn.Module:
    from test_convert_hub_qwen2_5_omni import THINKER

    config = transformers.Qwen2_5OmniThinkerConfig(**THINKER)
    return transformers.Qwen2_5OmniThinkerForConditionalGeneration(config)


def _qwen3_omni() -> nn.Module:
    from qwen3_omni_reference import TINY_FULL

    return transformers.Qwen3OmniMoeForConditionalGeneration(transformers.Qwen3OmniMoeConfig(**TINY_FULL))


def _qwen2_5_omni_full() -> nn.Module:
    from test_convert_hub_qwen2_5_omni import TALKER, THINKER
    from test_token2wav import TOKEN2WAV

    return transformers.Qwen2_5OmniForConditionalGeneration(transformers.Qwen2_5OmniConfig(
        thinker_config=THINKER, talker_config=TALKER, token2wav_config=TOKEN2WAV))


def _from_test(module: str, builder: str, *args: str) -> Callable[[], nn.Module]:
    return lambda: getattr(importlib.import_module(module), builder)(*args)



def _gemma4_omni() -> nn.Module:
    from test_convert_hub_gemma4_omni import _hf_model

    return _hf_model()


def _gemma4_media(model: nn.Module, convert: ModuleType) -> dict:
    """Images and audio at their placeholders (the contract batch of the whole model is text only)."""
    from test_convert_hub_gemma4_omni import _inputs

    return convert.hf_inputs(model, _inputs())


#: Forward inputs of the loaded model where its contract batch would not reach the media path.
MEDIA_INPUTS: dict[str, Callable[[nn.Module, ModuleType], dict]] = {"Gemma4ForConditionalGeneration": _gemma4_media}

#: (label, builder, parts loaded with load_hf)
CHECKPOINTS: list[tuple[str, Callable[[], nn.Module], tuple[str | None, ...]]] = [
    ("Qwen3ForCausalLM", lambda: _qwen_lm("qwen3"), (None,)),
    ("Qwen2ForCausalLM", lambda: _qwen_lm("qwen2"), (None,)),
    ("Qwen3MoeForCausalLM", lambda: _qwen_lm("qwen3_moe"), (None,)),
    ("WhisperModel", _whisper, ("audio_encoder",)),
    ("MimiModel", _mimi, (None,)),
    ("Qwen2_5OmniThinker", _qwen2_5_omni, ("thinker", "audio_encoder", "vision_encoder", "text_model")),
    ("Qwen3OmniMoe", _qwen3_omni,
     ("thinker", "text_model", "audio_encoder", "vision_encoder", "talker", "code2wav")),
    ("Qwen2_5Omni", _qwen2_5_omni_full, ("talker", "token2wav")),
    ("DacModel", _from_test("test_convert_hub_dac", "_hf_dac"), (None,)),
    ("Wav2Vec2Model", _from_test("test_convert_hub_wav2vec2", "_hf_wav2vec2", "large"), (None,)),
    ("Wav2Vec2ForCTC", _from_test("test_convert_hub_wav2vec2", "_hf_wav2vec2", "base", "Wav2Vec2ForCTC"), (None,)),
    ("MoshiForConditionalGeneration", _from_test("test_convert_hub_moshi", "hf_tiny_moshi"), (None, "audio_encoder")),

    ("Gemma4ForConditionalGeneration", _gemma4_omni, (None,)),
]


def _hf_modules(models: dict[str, nn.Module]) -> Iterator[tuple[str, nn.Module]]:
    """Every transformers module class ``from_transformers`` accepts, taken from the tiny models."""
    qwen3, moe, omni25, omni3 = (models[k] for k in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
                                                     "Qwen2_5OmniThinker", "Qwen3OmniMoe"))
    yield "Qwen3DecoderLayer", qwen3.model.layers[0]
    yield "Qwen3MoeSparseMoeBlock", moe.model.layers[0].mlp
    yield "WhisperEncoder", models["WhisperModel"].encoder
    yield "Qwen2_5OmniAudioEncoder", omni25.model.audio_tower
    yield "Qwen2_5OmniVisionEncoder", omni25.model.visual
    yield "Qwen3OmniMoeAudioEncoder", omni3.thinker.model.audio_tower
    yield "Qwen3OmniMoeVisionEncoder", omni3.thinker.model.visual
    yield "Qwen3OmniMoeTalkerTextSparseMoeBlock", omni3.talker.model.layers[0].mlp
    yield "Qwen3OmniMoeTalkerForConditionalGeneration", omni3.talker
    yield "Qwen3OmniMoeCode2Wav", omni3.code2wav
    yield "DacModel", models["DacModel"]
    yield "Wav2Vec2Model", models["Wav2Vec2Model"]
    config = transformers.Qwen2MoeConfig(hidden_size=24, moe_intermediate_size=12, shared_expert_intermediate_size=20,
                                         num_experts=5, num_experts_per_tok=2)
    block = transformers.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock(config)
    with torch.no_grad():
        for param in block.parameters():  # the experts are created with torch.empty
            param.normal_(0, 0.2)
    yield "Qwen2MoeSparseMoeBlock", block


def _max_difference(old: torch.Tensor, new: torch.Tensor) -> float:
    """Largest |old - new|, equal entries (infinities of one sign included) counting 0."""
    old, new = old.double(), new.double()
    return float(torch.where(old == new, 0.0, (old - new).abs()).max()) if old.numel() else 0.0


def _difference(before: nn.Module, after: nn.Module, kwargs: dict | None = None) -> tuple[str, str]:
    """Largest |old - new| over the state dicts and over a forward on ``kwargs`` or the contract inputs ('-':
    none)."""
    old_state, new_state = before.state_dict(), after.state_dict()
    if type(before).__name__ != type(after).__name__ or sorted(old_state) != sorted(new_state):
        return "different modules", "-"
    state = max((_max_difference(old_state[k], new_state[k]) for k in old_state), default=0.0)
    if kwargs is None and hasattr(after, "contract_inputs"):
        kwargs = after.contract_inputs([12, 9], seed=1).kwargs
    elif kwargs is None and hasattr(after, "norm1"):  # a decoder block: (B, T, dim) -> (B, T, dim)
        kwargs = {"x": torch.randn(2, 7, after.norm1.weight.shape[0], generator=torch.Generator().manual_seed(1))}
    elif kwargs is None:
        return f"{state:.3g}", "-"
    with torch.no_grad():
        outputs = [omnikit.testing.contract.primary_output(m.eval()(**kwargs))[0] for m in (before, after)]
    return f"{state:.3g}", f"{_max_difference(*outputs):.3g}"


def _config_diff(old_dir: Path, new_dir: Path) -> str:
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    old, new = (flat(json.loads((d / "config.json").read_text())) for d in (old_dir, new_dir))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k, '-')!r} -> {new.get(k, '-')!r}" for k in changed) or "identical"


def rows(old: ModuleType, directory: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(parity rows of load_hf and from_transformers, rows of save_hf exports)."""
    old_convert = importlib.import_module(f"{old.__name__}.convert")
    new_convert = importlib.import_module("omnikit.convert")
    out, models = [], {}
    for label, build, parts in CHECKPOINTS:
        torch.manual_seed(0)
        models[label] = _randomised(build())
        models[label].save_pretrained(directory / label, max_shard_size="100KB")
        for part in parts:
            before, after = (c.load_hf(directory / label, part=part) for c in (old_convert, new_convert))
            media = MEDIA_INPUTS.get(label)
            kwargs = None if media is None else media(after, new_convert)
            out.append([f"load_hf {label}", part or "(default)", *_difference(before, after, kwargs)])
    for name, module in _hf_modules(models):
        before, after = old_convert.from_transformers(module), new_convert.from_transformers(module)
        out.append(["from_transformers", name, *_difference(before, after)])
    exports = []
    for preset in ("decoder_tiny", "qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny", "dac_tiny", "wav2vec2_tiny",
                   "moshi_tiny"):
        for package, convert, side in ((old, old_convert, "old"), (omnikit, new_convert, "new")):
            torch.manual_seed(0)
            try:
                convert.save_hf(package.create_model(preset), directory / f"{side}_{preset}")
            except ValueError as error:
                exports.append([preset, f"{side}: not exported ({error})"])
                break
        else:
            exports.append([preset, _config_diff(directory / f"old_{preset}", directory / f"new_{preset}")])
    return out, exports
