"""Hypothesis fuzzing of the entry points that arrived in round four (issue 28 items 4-5): ``load_hf`` of the
new families with one ``config.json`` value broken, speech generation's options, the fine-tuning data
path's samples, the resumable checkpoints' arguments and a streaming codec fed chunks of any length.

As in ``tests/test_fuzz_entry_points.py``: the outcome must be a ``ValueError`` / ``TypeError`` or a finite
answer; for the streamed codec, the codes of a stream fed in chunks of any length equal the offline codes.
Example counts are small (derandomized) so the file stays within a minute or two on the CI machine.
"""

from __future__ import annotations

import functools
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_entry_points import FUZZ, _judge

import omnikit
from omnikit.convert import build_hf, load_hf, save_hf

NEW_FAMILIES = ("qwen3_next_tiny", "qwen3_5_moe_tiny", "gemma4_tiny", "moshi_tiny", "dac_tiny", "wav2vec2_tiny")
BAD_VALUES = (0, -1, 2.5, "bogus", None, [1], True, 10**6, float("nan"))


@functools.cache
def _snapshot(name: str) -> tuple[Path, dict]:
    torch.manual_seed(0)
    directory = save_hf(omnikit.create_model(name), Path(tempfile.mkdtemp()) / name)
    return directory, json.loads((directory / "config.json").read_text())


def _scalar_keys(config: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the config's numbers, strings and lists (sub-dicts walked)."""
    keys = []
    for key, value in sorted(config.items()):
        if isinstance(value, dict):
            keys += _scalar_keys(value, f"{prefix}{key}.")
        elif key not in ("architectures", "model_type", "transformers_version"):
            keys.append(prefix + key)
    return keys


def _with(config: dict, path: str, value: Any) -> dict:
    config = json.loads(json.dumps(config))
    inner = config
    *outer, last = path.split(".")
    for key in outer:
        inner = inner[key]
    inner[last] = value
    return config


@pytest.mark.parametrize("name", NEW_FAMILIES)
@FUZZ
@given(data=st.data())
def test_load_hf_of_a_broken_config_json(name: str, data: st.DataObject, tmp_path_factory) -> None:
    source, config = _snapshot(name)
    path = data.draw(st.sampled_from(_scalar_keys(config)), label="key")
    value = data.draw(st.sampled_from(BAD_VALUES), label="value")
    target = tmp_path_factory.mktemp("broken")
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    (target / "config.json").write_text(json.dumps(_with(config, path, value)))

    def call() -> Any:
        model = load_hf(target)
        return model(**model.contract_inputs([5, 3], seed=0).kwargs) if hasattr(model, "contract_inputs") else model

    _judge(call)


@functools.cache
def _speaking() -> torch.nn.Module:
    from omnikit.convert.tiny_configs import qwen3_omni_tiny_config

    torch.manual_seed(0)
    return build_hf(qwen3_omni_tiny_config(), part="omni")


@FUZZ
@given(options=st.fixed_dictionaries({}, optional={
    "speaker": st.sampled_from([None, "nobody", "", 3]), "max_new_tokens": st.sampled_from([1, 0, -2, 2.5]),
    "return_audio": st.sampled_from([True, False, "yes", None]),
    "thinker_do_sample": st.sampled_from([True, False]), "thinker_temperature": st.sampled_from([0.7, -1.0, 0.0]),
    "talker_top_k": st.sampled_from([1, 0, -3]), "talker_top_p": st.sampled_from([0.9, 0.0, 1.5]),
    "thinker_bogus": st.just(1)}),
    prompt_end=st.sampled_from([[141, 144, 10], [141, 144], [], [10**6]]))
def test_speech_generation_options(options: dict, prompt_end: list) -> None:
    ids = torch.tensor([[141, 143, 20, 21, 142, *prompt_end]])
    generator = torch.Generator().manual_seed(0)
    _judge(lambda: _speaking().generate(ids, max_new_tokens=options.pop("max_new_tokens", 2), generator=generator,
                                        **options))


@functools.cache
def _processor() -> Any:
    from omnikit.data import OmniProcessor

    tokenize = lambda text: [ord(c) % 96 + 8 for c in text]  # clear of the tiny Thinker's special ids
    return OmniProcessor(omnikit.create_model("qwen2_5_omni_thinker_tiny"), tokenize, num_frames=4, size=(16, 16))


MESSAGES = st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system", "assitant", "", 3]),
    "content": st.sampled_from(["hi", "<audio> hear", "<image> see", "", 5, None])}), max_size=3)
AUDIO = st.sampled_from([torch.randn(800), torch.full((800,), float("nan")), torch.zeros(0), torch.ones(2, 800),
                         torch.ones(800, dtype=torch.int16), "/nonexistent.wav"])
IMAGE = st.sampled_from([torch.rand(3, 16, 16), torch.rand(4, 16, 16) * 255, torch.rand(1, 8, 8),
                         torch.full((3, 8, 8), float("inf")), torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)])


@FUZZ
@given(messages=MESSAGES, audios=st.lists(AUDIO, max_size=2), images=st.lists(IMAGE, max_size=2))
def test_data_path_samples(messages: list, audios: list, images: list) -> None:
    sample = {"messages": messages, "audios": audios, "images": images}
    _judge(lambda: _processor()([sample]).model_inputs())


@FUZZ
@given(optimizer=st.sampled_from(["model", "other", "adam", None]), scheduler=st.sampled_from(["ok", object(), None]),
       extra=st.sampled_from([{"step": 1}, [1], {"f": len}, {3: 1}, None]),
       load_into=st.sampled_from(["decoder_tiny", "moe_tiny", "wider"]))
def test_resumable_checkpoint_arguments(optimizer: Any, scheduler: Any, extra: Any, load_into: str) -> None:
    from omnikit.distributed import load_distributed, save_distributed

    torch.manual_seed(0)
    model = omnikit.create_model("decoder_tiny")
    built = {"model": torch.optim.AdamW(model.parameters()), "adam": "adam", None: None,
             "other": torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())}[optimizer]
    sched = torch.optim.lr_scheduler.StepLR(built, 1) if scheduler == "ok" and optimizer == "model" else (
        None if scheduler == "ok" else scheduler)
    directory = Path(tempfile.mkdtemp()) / "ckpt"

    def call() -> Any:
        save_distributed(model, directory, optimizer=built, scheduler=sched, extra=extra)
        into = omnikit.create_model("decoder_tiny", dim=48) if load_into == "wider" else omnikit.create_model(load_into)
        return load_distributed(into, directory).state_dict()

    _judge(call)


@functools.cache
def _mimi() -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model("mimi_tiny").eval()


@FUZZ
@given(cuts=st.lists(st.integers(0, 5), min_size=1, max_size=6), frames=st.integers(1, 4))
def test_a_codec_stream_fed_chunks_of_any_length_gives_the_offline_codes(cuts: list, frames: int) -> None:
    mimi = _mimi()
    wav = torch.randn(1, 1, frames * mimi.hop, generator=torch.Generator().manual_seed(frames)) * 0.1
    bounds = sorted({0, wav.shape[-1], *[min(wav.shape[-1], c * mimi.hop // 2) for c in cuts]})
    with torch.no_grad(), mimi.streaming(1):
        streamed = [mimi.encode(wav[..., a:b]) for a, b in itertools.pairwise(bounds)]
    codes = torch.cat(streamed, dim=-1)
    assert torch.equal(codes, mimi.encode(wav))
