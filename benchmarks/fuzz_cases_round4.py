"""Fuzz cases for the entry points that arrived in round four (issue 28 item 4): ``load_hf`` / ``save_hf`` of
the new families (Qwen3-Next / Qwen3.5, Gemma 4, Moshi, DAC, wav2vec 2.0), ``load_hf(part="omni")`` and
speech generation, the streaming codecs and full-duplex loop, the fine-tuning data path for published
Thinkers and the resumable checkpoints.

Imported by ``benchmarks/fuzz_entry_points.py`` (family ``round4``). Snapshots are written by omnikit itself
(``save_hf`` of a ``*_tiny`` model, or ``build_hf`` of a tiny ``config.json``), then one thing in them is
broken as a user's download or edit would break it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import omnikit
from omnikit.convert import build_hf, load_hf, save_hf

Edit = Callable[[dict], Any]


@cache
def _snapshot(name: str) -> Path:
    torch.manual_seed(0)
    return save_hf(omnikit.create_model(name), Path(tempfile.mkdtemp()) / name)


def _copy(name: str) -> Path:
    source = _snapshot(name)
    target = Path(tempfile.mkdtemp()) / name
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def _config_edit(name: str, edit: Edit, part: str | None = None) -> Callable[[], Any]:
    """Load the snapshot of ``name`` after ``edit`` changed its config.json in place."""
    def call() -> Any:
        directory = _copy(name)
        config = json.loads((directory / "config.json").read_text())
        edit(config)
        (directory / "config.json").write_text(json.dumps(config))
        return load_hf(directory, part=part)

    return call


def _set(path: str, value: Any) -> Edit:
    """An edit setting ``path`` ("a.b.c", into nested dicts) to ``value``."""
    def edit(config: dict) -> None:
        *outer, last = path.split(".")
        for key in outer:
            config = config[key]
        config[last] = value

    return edit


def _tensor_edit(name: str, key_part: str, change: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[[], Any]:
    """Load the snapshot of ``name`` after ``change`` replaced (or, returning None, dropped) the first tensor
    whose name holds ``key_part``."""
    def call() -> Any:
        directory = _copy(name)
        for file in sorted(directory.glob("*.safetensors")):
            state = load_file(str(file))
            hit = next((k for k in sorted(state) if key_part in k), None)
            if hit is None:
                continue
            changed = change(state[hit])
            if changed is None:
                del state[hit]
            else:
                state[hit] = changed
            save_file(state, str(file), metadata={"format": "pt"})
            if (directory / "model.safetensors.index.json").exists() and changed is None:
                index = json.loads((directory / "model.safetensors.index.json").read_text())
                index["weight_map"].pop(hit)
                (directory / "model.safetensors.index.json").write_text(json.dumps(index))
            return load_hf(directory)
        raise AssertionError(f"no tensor holds {key_part!r}")

    return call


@cache
def _speaking() -> torch.nn.Module:
    from omnikit.convert.tiny_configs import qwen3_omni_tiny_config

    torch.manual_seed(0)
    return build_hf(qwen3_omni_tiny_config(), part="omni")


def _speak(**kwargs: Any) -> Callable[[], Any]:
    def call() -> Any:
        options = {"input_ids": torch.tensor([[141, 143, 20, 21, 142, 141, 144, 10]]), "max_new_tokens": 2, **kwargs}
        return _speaking().generate(**options)

    return call


def _mimi_stream(chunks: list[torch.Tensor], batch: int = 1) -> Callable[[], Any]:
    def call() -> Any:
        from fuzz_entry_points import model

        mimi = model("mimi_tiny")
        with mimi.streaming(batch):
            return [mimi.encode(chunk) for chunk in chunks]

    return call


def _hop() -> int:
    from fuzz_entry_points import model

    return model("mimi_tiny").hop


def _converse(frames: Callable[[], list[torch.Tensor]]) -> Callable[[], Any]:
    def call() -> Any:
        from fuzz_entry_points import model

        return list(model("moshi_tiny").converse(frames()))

    return call


def _moshi_frame(**changes: Any) -> list[torch.Tensor]:
    from fuzz_entry_points import model

    codec = model("moshi_tiny").audio_encoder
    shape = dict(batch=1, channels=codec.config.channels, samples=codec.hop) | changes
    return [torch.randn(shape["batch"], shape["channels"], shape["samples"]) * 0.1]


@cache
def _processor(padding_side: str = "right") -> Any:
    from omnikit.data import OmniProcessor

    tokenize = lambda text: [ord(c) % 96 + 8 for c in text]  # clear of the tiny Thinkers' special ids
    return OmniProcessor(omnikit.create_model("qwen2_5_omni_thinker_tiny"), tokenize, num_frames=4, size=(16, 16),
                         padding_side=padding_side)


def _chat(user: str = "<audio> what?", reply: str = "a tone", **media: Any) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}], **media}


def _batch(samples: Any) -> Callable[[], Any]:
    return lambda: _processor()(samples)


def _saved_distributed(with_optimizer: bool = False) -> Path:
    """A ``decoder_tiny`` checkpoint, with AdamW state after one step when ``with_optimizer``."""
    from omnikit.distributed import save_distributed

    torch.manual_seed(0)
    model = omnikit.create_model("decoder_tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1) if with_optimizer else None
    if optimizer is not None:
        with torch.enable_grad():  # the fuzz runner calls every case under no_grad
            model(torch.ones(1, 3, dtype=torch.long)).square().mean().backward()
        optimizer.step()
    return save_distributed(model, Path(tempfile.mkdtemp()) / "ckpt", optimizer=optimizer)


def _save_distributed(**kwargs: Any) -> Callable[[], Any]:
    def call() -> Any:
        from omnikit.distributed import save_distributed

        model = kwargs.pop("model", None) or omnikit.create_model("decoder_tiny")
        return save_distributed(model, Path(tempfile.mkdtemp()) / "ckpt", **kwargs)

    return call


def _load_distributed(into: Callable[[], torch.nn.Module], *, directory: Callable[[], Path] | None = None,
                      **kwargs: Callable[[torch.nn.Module], Any]) -> Callable[[], Any]:
    def call() -> Any:
        from omnikit.distributed import load_distributed

        model = into()
        path = directory() if directory is not None else _saved_distributed()
        return load_distributed(model, path, **{k: make(model) for k, make in kwargs.items()})

    return call


def _one_part_snapshot() -> Any:
    """A Gemma 4 audio tower saved alone, loaded as if it were the whole model."""
    return load_hf(save_hf(omnikit.create_model("gemma4_audio_tiny"), Path(tempfile.mkdtemp())))


def _counter() -> Any:
    from omnikit.budget import TokenCounter

    return TokenCounter(omnikit.create_model("qwen2_5_omni_thinker_tiny"))


def _lm_snapshot() -> torch.nn.Module:
    return load_hf(_snapshot("decoder_tiny"))


def round4_cases() -> list:
    from fuzz_entry_points import Case, model

    wav2vec = lambda wav: model("wav2vec2_tiny")(wav)
    dac = lambda: model("dac_tiny")
    mimi = lambda: model("mimi_tiny")
    moshi = lambda: model("moshi_tiny")
    k = lambda: moshi().config.num_codebooks
    prompt = lambda frames=2: torch.zeros(1, frames, dtype=torch.long)
    codes = lambda frames=2, kk=None: torch.zeros(1, kk or k(), frames, dtype=torch.long)
    hop = _hop
    decoder = lambda: omnikit.create_model("decoder_tiny")
    adam = lambda m: torch.optim.AdamW(m.parameters(), lr=0.1)
    return [
        # ---- load_hf / save_hf of the new families
        Case("round4", "qwen3_next: unknown layer type", _config_edit(
            "qwen3_next_tiny", _set("layer_types", ["linear_attention", "sliding_attention"])), "layer_types"),
        Case("round4", "qwen3_next: value heads not a multiple of key heads", _config_edit(
            "qwen3_next_tiny", _set("linear_num_value_heads", 3)), "config.json"),
        Case("round4", "qwen3_next: part='vision_encoder'", _config_edit("qwen3_next_tiny", _set("x", 0),
                                                                         part="vision_encoder"), "part"),
        Case("round4", "qwen3_next: part='omni'", _config_edit("qwen3_next_tiny", _set("x", 0), part="omni"), "part"),
        Case("round4", "qwen3_5: A_log missing", _tensor_edit("qwen3_5_tiny", "A_log", lambda t: None), "A_log"),
        Case("round4", "qwen3_5_moe: A_log stored as int32", _tensor_edit(
            "qwen3_5_moe_tiny", "A_log", lambda t: t.to(torch.int32)), "A_log"),
        Case("round4", "qwen3_5: NaN dt_bias", _tensor_edit(
            "qwen3_5_tiny", "dt_bias", lambda t: torch.full_like(t, float("nan"))), "dt_bias"),
        Case("round4", "qwen3_5: conv1d of the wrong kernel size", _tensor_edit(
            "qwen3_5_tiny", "conv1d.weight", lambda t: t[..., :-1].contiguous()), "conv1d.weight"),
        Case("round4", "gemma4: hidden_activation relu", _config_edit(
            "gemma4_tiny", _set("hidden_activation", "relu")), "hidden_activation"),
        Case("round4", "gemma4: final_logit_softcapping -1", _config_edit(
            "gemma4_tiny", _set("final_logit_softcapping", -1.0)), "config.json"),
        Case("round4", "gemma4: more shared-KV layers than layers", _config_edit(
            "gemma4_tiny", _set("num_kv_shared_layers", 99)), "num_kv_shared_layers"),
        Case("round4", "gemma4: sliding_window 0", _config_edit("gemma4_tiny", _set("sliding_window", 0)),
             "sliding_window"),
        Case("round4", "moshi: num_codebooks edited", _config_edit("moshi_tiny", _set("num_codebooks", 2)),
             "config.json"),
        Case("round4", "dac: codebook_size 0", _config_edit("dac_tiny", _set("codebook_size", 0)), "codebook_size"),
        Case("round4", "wav2vec2: feat_extract_norm 'bogus'", _config_edit(
            "wav2vec2_tiny", _set("feat_extract_norm", "bogus")), "config.json"),
        Case("round4", "wav2vec2: conv_stride shorter than conv_dim", _config_edit(
            "wav2vec2_tiny", _set("conv_stride", [5])), "config.json"),
        Case("round4", "load_hf of a one-part snapshot without part=", _one_part_snapshot, "part"),
        # ---- part="omni" and speech generation
        Case("round4", "speak: unknown speaker", _speak(speaker="nobody"), "speaker"),
        Case("round4", "speak: max_new_tokens 0", _speak(max_new_tokens=0), "max_new_tokens"),
        Case("round4", "speak: max_new_tokens -1", _speak(max_new_tokens=-1), "max_new_tokens"),
        Case("round4", "speak: float input_ids", _speak(input_ids=torch.ones(1, 4)), "input_ids"),
        Case("round4", "speak: id past the vocabulary", _speak(input_ids=torch.tensor([[141, 9999]])), "input_ids"),
        Case("round4", "speak: return_audio='yes'", _speak(return_audio="yes"), "return_audio"),
        Case("round4", "speak: unknown keyword", _speak(bogus_option=1), "bogus_option"),
        Case("round4", "speak: thinker_temperature -1", _speak(thinker_do_sample=True, thinker_temperature=-1.0),
             "thinker_temperature"),
        Case("round4", "speak: attention_mask of another shape", _speak(attention_mask=torch.ones(1, 3)),
             "attention_mask"),
        Case("round4", "speak: text only, no audio", _speak(return_audio=False), None),
        # ---- codecs and their streams
        Case("round4", "mimi: encode at 48 kHz", lambda: mimi().encode(torch.randn(1, 1, 4 * hop()),
                                                                     sample_rate=48000), "sample_rate"),
        Case("round4", "mimi: decode too many codebooks", lambda: mimi().decode(
            torch.zeros(1, mimi().config.num_quantizers + 1, 2, dtype=torch.long)), "codes"),
        Case("round4", "mimi: decode a code past the codebook", lambda: mimi().decode(
            torch.full((1, mimi().num_codebooks, 2), mimi().codebook_size)), "codes"),
        Case("round4", "mimi stream: NaN chunk", _mimi_stream([torch.full((1, 1, 1920), float("nan"))]), "wav"),
        Case("round4", "mimi stream: batch changes mid-stream", lambda: _mimi_stream(
            [torch.randn(1, 1, hop()), torch.randn(2, 1, hop())])(), "wav"),
        Case("round4", "mimi stream: half a frame then the rest", lambda: _mimi_stream(
            [torch.randn(1, 1, hop() // 2), torch.randn(1, 1, hop() - hop() // 2)])(), None),
        Case("round4", "dac: encode at 48 kHz", lambda: dac().encode(torch.randn(1, 1, 2048), sample_rate=48000),
             "sample_rate"),
        Case("round4", "dac: decode a code past the codebook", lambda: dac().decode(
            torch.full((1, dac().num_codebooks, 2), dac().codebook_size)), "codes"),
        Case("round4", "dac: NaN audio", lambda: dac().encode(torch.full((1, 1, 2048), float("nan"))), "wav"),
        Case("round4", "wav2vec2: NaN audio", lambda: wav2vec(torch.full((1, 4000), float("nan"))), "wav"),
        Case("round4", "wav2vec2: audio shorter than one frame", lambda: wav2vec(
            torch.randn(1, model("wav2vec2_tiny").features.receptive_field - 1)), "wav"),
        Case("round4", "wav2vec2: int16 audio", lambda: wav2vec(torch.ones(1, 4000, dtype=torch.int16)), "wav"),
        Case("round4", "moshi converse: wrong channels", _converse(lambda: _moshi_frame(channels=2)), "user_audio"),
        Case("round4", "moshi converse: half a frame", _converse(lambda: _moshi_frame(samples=hop() // 2)),
             "user_audio"),
        Case("round4", "moshi generate: max_new_tokens 0", lambda: moshi().generate(
            prompt(), codes(), codes(), max_new_tokens=0), "max_new_tokens"),
        Case("round4", "moshi generate: user codes of another length", lambda: moshi().generate(
            prompt(), codes(3), codes(), max_new_tokens=1), "user_codes"),
        Case("round4", "moshi generate: a text id past the vocabulary", lambda: moshi().generate(
            prompt() + 10**6, codes(), codes(), max_new_tokens=1), "input_ids"),
        Case("round4", "dac: decode zero frames", lambda: dac().decode(
            torch.zeros(1, dac().num_codebooks, 0, dtype=torch.long)), "codes"),
        Case("round4", "moshi generate: a code past the codebook", lambda: moshi().generate(
            prompt(), codes() + 10**6, codes(), max_new_tokens=1), "user_codes"),
        # ---- the fine-tuning data path of the published Thinkers
        Case("round4", "data: unknown role", _batch([{"messages": [{"role": "narrator", "content": "hi"}]}]), "role"),
        Case("round4", "data: no messages", _batch([{"messages": []}]), "messages"),
        Case("round4", "data: no samples", _batch([]), "samples"),
        Case("round4", "data: NaN audio", _batch([_chat(audios=[torch.full((8000,), float("nan"))])]), "audios[0]"),
        Case("round4", "data: 5-channel image", _batch([_chat("<image> what?", images=[torch.rand(5, 16, 16)])]),
             "images[0]"),
        Case("round4", "data: missing audio file", _batch([_chat(audios=["/nonexistent/a.wav"])]), "a.wav"),
        Case("round4", "data: content of the wrong type", _batch([{"messages": [{"role": "user", "content": 5}]}]),
             "content"),
        Case("round4", "data: padding_side 'middle'", lambda: _processor("middle"), "padding_side"),
        # ---- generation, budgets, adapters and snapshots around them
        Case("round4", "generate: prefill_chunk 0", lambda: decoder().generate(
            torch.ones(1, 5, dtype=torch.long), max_new_tokens=1, prefill_chunk=0), "prefill_chunk"),
        Case("round4", "generate: prefill_chunk longer than the prompt", lambda: decoder().generate(
            torch.ones(1, 5, dtype=torch.long), max_new_tokens=1, prefill_chunk=100), None),
        Case("round4", "budget: audio_seconds a number", lambda: _counter().budget(100, audio_seconds=5.0),
             "audio_seconds"),
        Case("round4", "budget: a video of 3 numbers", lambda: _counter().budget(100, videos=[(1.0, 2.0, 16)]),
             "videos"),
        Case("round4", "lora_targets: towers one str", lambda: __import__(
            "omnikit.fusion.towers", fromlist=["lora_targets"]).lora_targets(
            omnikit.create_model("qwen2_5_omni_thinker_tiny"), towers="thinker"), None),
        Case("round4", "build_hf: config a list", lambda: build_hf([1, 2]), "config"),
        Case("round4", "hf_inputs: float input_ids", lambda: __import__("omnikit.convert", fromlist=["hf_inputs"])
             .hf_inputs(_lm_snapshot(), {"input_ids": torch.ones(1, 3)}), "inputs['input_ids']"),
        Case("round4", "save_hf: path is a file", lambda: save_hf(
            _lm_snapshot(), Path(tempfile.mkstemp()[1])), "path"),
        Case("round4", "load_hf: device 'bogus'", lambda: load_hf(_snapshot("decoder_tiny"), device="bogus"),
             "device"),
        Case("round4", "load_hf: path None", lambda: load_hf(None), "path"),
        # ---- resumable checkpoints
        Case("round4", "save_distributed: optimizer 'adam'", _save_distributed(optimizer="adam"), "optimizer"),
        Case("round4", "save_distributed: scheduler object()", _save_distributed(scheduler=object()), "scheduler"),
        Case("round4", "save_distributed: extra a list", _save_distributed(extra=[1, 2]), "extra"),
        Case("round4", "save_distributed: model a string", _save_distributed(model="decoder_tiny"), "model"),
        Case("round4", "load_distributed: missing folder", _load_distributed(
            decoder, directory=lambda: Path(tempfile.mkdtemp()) / "none"), "directory"),
        Case("round4", "load_distributed: a model of another size", _load_distributed(
            lambda: omnikit.create_model("decoder_tiny", dim=48)), "model"),
        Case("round4", "load_distributed: another architecture", _load_distributed(
            lambda: omnikit.create_model("moe_tiny")), "model"),
        Case("round4", "load_distributed: optimizer of no saved state", _load_distributed(decoder, optimizer=adam),
             "optimizer"),
        Case("round4", "load_distributed: optimizer over other parameters", _load_distributed(
            decoder, directory=lambda: _saved_distributed(with_optimizer=True),
            optimizer=lambda m: torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)), "optimizer"),
    ]
