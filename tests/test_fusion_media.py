"""Adapters keyed by modality, media as a mapping, and checkpoints saved before the adapters moved."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import omnikit
from omnikit.checkpoint import CONFIG_NAME, WEIGHTS_NAME, _crc32
from omnikit.fusion import EarlyFusionOmni, VisualGrid, item_positions, tmrope_position_ids
from omnikit.fusion.media import collect_media
from omnikit.fusion.modality import MODALITIES
from omnikit.fusion.models import QWEN2_5_OMNI_TINY, TINY_TOKENS, _tiny_adapters
from omnikit.utils.legacy_keys import legacy_key_renames


def _as_mapping(kwargs: dict) -> dict:
    """The contract's keyword media as ``media=`` / ``media_lengths=``."""
    rest = {k: v for k, v in kwargs.items() if k not in ("frames", "audio_features", "audio_lengths")}
    return {**rest, "media": {"video": kwargs["frames"], "audio": kwargs["audio_features"]},
            "media_lengths": {"audio": kwargs["audio_lengths"]}}


@pytest.mark.parametrize("name", ["omni_early_tiny", "omni_xattn_tiny"])
def test_media_mapping_equals_the_keywords(tiny_model, name: str) -> None:
    model = tiny_model(name)
    kwargs = model.contract_inputs([12, 9], seed=1).kwargs
    with torch.no_grad():
        expected = model(**kwargs)
        torch.testing.assert_close(model(**_as_mapping(kwargs)), expected, rtol=0, atol=0)
        frames = kwargs.pop("frames")
        mixed = {**kwargs, "media": {"video": frames}}  # one modality each way
        torch.testing.assert_close(model(**mixed), expected, rtol=0, atol=0)
    assert list(model.adapters) == ["video", "audio"]
    assert model.video is model.adapters["video"] and model.audio is model.adapters["audio"]


def test_generation_takes_the_media_mapping(tiny_model) -> None:
    model = tiny_model("omni_early_tiny")
    kwargs = model.contract_inputs([12], seed=2).kwargs
    prompt = kwargs["input_ids"][:, :10]
    by_keyword = model.generate(prompt, frames=kwargs["frames"], audio_features=kwargs["audio_features"],
                                audio_lengths=kwargs["audio_lengths"], max_new_tokens=3)
    by_mapping = model.generate(prompt, media={"video": kwargs["frames"], "audio": kwargs["audio_features"]},
                                media_lengths={"audio": kwargs["audio_lengths"]}, max_new_tokens=3)
    assert torch.equal(by_keyword.tokens, by_mapping.tokens)


def test_media_errors_name_the_argument_they_came_in(tiny_model) -> None:
    model = tiny_model("omni_early_tiny")
    kwargs = _as_mapping(model.contract_inputs([12, 12]).kwargs)
    nan = {**kwargs["media"], "audio": torch.full_like(kwargs["media"]["audio"], float("nan"))}
    with pytest.raises(ValueError, match=r"`media\['audio'\]` expected finite"):
        model(**{**kwargs, "media": nan})
    with pytest.raises(ValueError, match=r"`media_lengths\['audio'\]`"):
        model(**{**kwargs, "media_lengths": {"audio": torch.tensor([99, 99])}})
    with pytest.raises(ValueError, match=r"audio: given both as `audio_features` and as `media\['audio'\]`"):
        model(**kwargs, audio_features=kwargs["media"]["audio"])
    with pytest.raises(ValueError, match=r"lengths given for \['audio'\] without their media"):
        collect_media({"video": kwargs["media"]["video"]}, {"audio": torch.tensor([8])})
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['images'\]"):
        model(**kwargs, images=torch.zeros(1))
    with pytest.raises(ValueError, match=r"`media\['image'\]` given but this model has no image adapter"):
        model(kwargs["input_ids"], media={"image": torch.zeros(1, 3, 8, 8)})


@pytest.mark.parametrize("name", ["omni_early_tiny", "omni_xattn_tiny"])
def test_media_without_items_is_refused_by_name(tiny_model, name: str) -> None:
    model = tiny_model(name)
    kwargs = model.contract_inputs([12]).kwargs
    with pytest.raises(ValueError, match=r"`frames` expected at least one video item but got shape \(0, "):
        model(**{**kwargs, "frames": kwargs["frames"][:0]})


def test_assigning_an_adapter_replaces_its_entry() -> None:
    model = omnikit.create_model("omni_early_tiny")
    video, audio = _tiny_adapters(64, 2.0, False)
    model.audio = audio
    assert model.adapters["audio"] is audio and model.audio is audio
    model.video = None
    assert list(model.adapters) == ["audio"] and model.video is None
    assert not any(k.startswith(("video.", "audio.")) for k in model.state_dict())
    with pytest.raises(ValueError, match="given both as `video=` and in `adapters`"):
        EarlyFusionOmni(omnikit.create_model("thinker_tiny"), video=video, adapters={"video": video},
                        scheme=QWEN2_5_OMNI_TINY)
    with pytest.raises(ValueError, match=r"`adapters` expected modalities among .* but got \['depth'\]"):
        EarlyFusionOmni(omnikit.create_model("thinker_tiny"), adapters={"depth": video}, scheme=QWEN2_5_OMNI_TINY)


def _write_old_layout(model: torch.nn.Module, directory) -> None:
    """Rewrite a fresh checkpoint the way the revision before ``adapters`` wrote it: ``video.*`` and
    ``audio.*`` keys (nested ones too), CRC-32 over those names."""
    omnikit.save_pretrained(model, directory)
    weights = directory / WEIGHTS_NAME
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
    old = {k.replace("adapters.", ""): v for k, v in load_file(str(weights)).items()}
    aliases = {k.replace("adapters.", ""): v.replace("adapters.", "")
               for k, v in json.loads(metadata["omnikit_aliases"]).items()}
    save_file(old, str(weights), metadata={**metadata, "omnikit_aliases": json.dumps(aliases)})
    config = json.loads((directory / CONFIG_NAME).read_text())
    config["weights_crc32"] = _crc32(old)
    (directory / CONFIG_NAME).write_text(json.dumps(config))


@pytest.mark.parametrize("name", ["omni_early_tiny", "omni_xattn_tiny", "thinker_talker_tiny"])
def test_checkpoints_of_the_attribute_layout_still_load(tmp_path, name: str) -> None:
    torch.manual_seed(0)
    model = omnikit.create_model(name).eval()
    _write_old_layout(model, tmp_path)
    stored = list(load_file(str(tmp_path / WEIGHTS_NAME)))
    assert any(k.startswith(("video.", "omni.video.")) for k in stored)
    assert not any("adapters." in k for k in stored)
    loaded = omnikit.load_pretrained(tmp_path).eval()
    kwargs = model.contract_inputs([10, 7], seed=3).kwargs
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kwargs), model(**kwargs), rtol=0, atol=0)
    fresh = omnikit.create_model(name)  # a plain load_state_dict of the old names works too
    fresh.load_state_dict({k.replace("adapters.", ""): v for k, v in model.state_dict().items()})
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_legacy_names_never_shadow_current_ones_or_hide_strays(tmp_path) -> None:
    model = omnikit.create_model("omni_early_tiny")
    current = list(model.state_dict())
    assert legacy_key_renames(model, current) == {}
    assert legacy_key_renames(model, ["video.projector.0.weight"]) == {
        "video.projector.0.weight": "adapters.video.projector.0.weight"}
    omnikit.save_pretrained(model, tmp_path)
    state = {k.replace("adapters.", ""): v for k, v in load_file(str(tmp_path / WEIGHTS_NAME)).items()}
    state["video.extra"] = torch.zeros(1)
    save_file(state, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=r"adapters\.video\.extra"):  # a stray old-layout key is still refused
        omnikit.load_pretrained(tmp_path)


def test_audio_in_video_interleaves_each_soundtrack_with_its_video() -> None:
    torch.manual_seed(0)
    video, audio = _tiny_adapters(64, 2.0, True)
    thinker = omnikit.create_model("thinker_tiny").eval()
    model = EarlyFusionOmni(thinker, video=video, audio=audio, scheme=QWEN2_5_OMNI_TINY, audio_in_video=True).eval()
    frames = torch.randn(1, 4, 3, 8, 8)
    mel = torch.randn(1, 16, 40)
    (t, h, w), n_audio = video.grid(frames.shape), int(audio.encoder.output_lengths(torch.tensor([40]))[0])
    grid = VisualGrid(t, h, w, video.frames_per_step / video.fps, n_audio)
    _, codes = item_positions(grid, "video", QWEN2_5_OMNI_TINY)
    token = {MODALITIES.index(m): tid for m, tid in TINY_TOKENS.as_dict().items()}
    ids = torch.tensor([[9, 9, *[token[int(c)] for c in codes], 10, 10, 11]])  # two markers each side
    with torch.no_grad():
        logits = model(ids, frames=frames, audio_features=mel)
        positions, _ = tmrope_position_ids(ids, TINY_TOKENS, videos=[grid], scheme=QWEN2_5_OMNI_TINY)
        media = {"video": video(frames).tokens, "audio": audio(mel).tokens}
        torch.testing.assert_close(logits, thinker(ids, media=media, positions=positions), rtol=0, atol=0)
    with pytest.raises(ValueError, match="audio_in_video: 1 videos in `frames` but 2 audio items"):
        model(ids, frames=frames, audio_features=mel.expand(2, -1, -1))
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"`audio_in_video=True` cannot be traced.*run this model eagerly"):
        torch.compile(model, fullgraph=True, backend="eager")(ids, frames=frames, audio_features=mel)


def test_distributed_checkpoints_of_the_attribute_layout_still_load(tmp_path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    from omnikit.distributed import load_distributed

    torch.manual_seed(0)
    model = omnikit.create_model("omni_early_tiny").eval()
    dcp.save({k.replace("adapters.", ""): v for k, v in model.state_dict().items()}, checkpoint_id=str(tmp_path))
    loaded = load_distributed(omnikit.create_model("omni_early_tiny"), tmp_path).eval()
    kwargs = model.contract_inputs([10, 7], seed=3).kwargs
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kwargs), model(**kwargs), rtol=0, atol=0)
