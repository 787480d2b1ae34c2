"""One early-fusion path, checked once: the boundary objects, the shared encoding loop, and how often a call
checks ``input_ids`` and reads the host."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

import omnikit
from omnikit.fusion.absent import encode_media
from omnikit.fusion.boundary import CheckedMedia, check_media, check_prompt
from omnikit.fusion.media import ModalityInput
from omnikit.fusion.models import TINY_TOKENS, tiny_omni_prompt
from omnikit.fusion.tower_adapters import AudioTowerAdapter, VisionTowerAdapter


class _Counted:
    """Calls of the ``omnikit.utils.checks`` helpers by argument name, and host reads made by omnikit code."""

    def __init__(self) -> None:
        self.checks: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    def _profile(self, frame, event, arg) -> None:
        code, caller = frame.f_code, frame.f_back.f_code
        helper = code.co_filename.endswith("utils/checks.py") and code.co_name.startswith("check_")
        if event == "call" and helper and not caller.co_filename.endswith("utils/checks.py"):  # nested: once
            self.checks[str(frame.f_locals.get("name"))] += 1

    def __call__(self, fn) -> None:
        originals = {m: getattr(torch.Tensor, m) for m in ("item", "tolist", "__bool__", "__int__", "__float__")}

        def reader(method):
            def read(t, *args, **kwargs):
                caller = sys._getframe(1).f_globals.get("__name__", "")
                if caller.startswith("omnikit.fusion") or caller.startswith("omnikit.utils.checks"):
                    self.reads[f"{caller}.{sys._getframe(1).f_code.co_name}"] += 1
                return originals[method](t, *args, **kwargs)
            return read

        for method in originals:
            setattr(torch.Tensor, method, reader(method))
        sys.setprofile(self._profile)
        try:
            with torch.no_grad():
                fn()
        finally:
            sys.setprofile(None)
            for method, original in originals.items():
                setattr(torch.Tensor, method, original)


@pytest.mark.parametrize("name", ["omni_early_tiny", "qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny"])
def test_the_omni_forward_checks_input_ids_once(name: str) -> None:
    model = omnikit.create_model(name).eval()
    kwargs = model.contract_inputs([30, 24], seed=1).kwargs
    counted = _Counted()
    counted(lambda: model(**kwargs))
    assert counted.checks["input_ids"] == 1
    # fusion's own host reads: the TMRoPE layout check, the audio counts' sign, every placeholder count together
    # (the id range is read once in the checks, with the towers' own checks)
    fusion_reads = {where: n for where, n in counted.reads.items() if where.startswith("omnikit.fusion")}
    assert fusion_reads == {"omnikit.fusion.tmrope.checked_position_ids": 1, "omnikit.fusion.tmrope_traced.audio": 1,
                            "omnikit.fusion.early._read_counts": 1}


def test_the_speech_stream_checks_the_prompt_at_its_entry() -> None:
    torch.manual_seed(0)
    model = omnikit.create_model("thinker_talker_tiny").eval()
    ids, media = tiny_omni_prompt(torch.Generator().manual_seed(0))
    counted = _Counted()
    counted(lambda: list(model.stream(ids, max_new_tokens=3, max_frames=3, **media)))
    assert counted.checks["input_ids"] == 2  # the entry's check, and generation's shape check of the prompt
    assert sum(n for where, n in counted.reads.items() if "early" in where) == 1  # all placeholder counts at once


def test_the_thinker_trusts_checked_media_only_for_the_ids_it_was_checked_against() -> None:
    model = omnikit.create_model("omni_early_tiny").eval()
    kwargs = model.contract_inputs([20, 16], seed=2).kwargs
    ids = kwargs.pop("input_ids")
    fused = model.fuse(ids, **kwargs)
    assert isinstance(fused.media, CheckedMedia) and fused.media.belongs_to(ids, fused.key_padding_mask)
    with torch.no_grad():
        trusted = model.thinker(ids, media=fused.media, positions=fused.positions,
                                key_padding_mask=fused.key_padding_mask)
        plain = model.thinker(ids, media=dict(fused.media), positions=fused.positions,
                              key_padding_mask=fused.key_padding_mask)
    assert torch.equal(trusted, plain)
    other = ids.clone()
    other[other == TINY_TOKENS.audio] = 9  # fewer audio placeholders: the media no longer fit and are checked again
    with pytest.raises(ValueError, match=r"audio: `input_ids` holds \d+ audio placeholder tokens but the audio"):
        model.thinker(other, media=fused.media, positions=fused.positions, key_padding_mask=fused.key_padding_mask)


def test_check_prompt_and_check_media_keep_the_messages() -> None:
    with pytest.raises(ValueError, match=r"`input_ids` expected a 2-D tensor"):
        check_prompt(torch.zeros(4, dtype=torch.long), 10, TINY_TOKENS)
    with pytest.raises(ValueError, match=r"`input_ids` expected values in \[0, 10\) but got min 0, max 12"):
        check_prompt(torch.tensor([[0, 12]]), 10, TINY_TOKENS)
    prompt = check_prompt(torch.tensor([[3, 3, 9]]), 10, TINY_TOKENS)
    assert prompt.modality_ids.tolist() == [[3, 3, 0]]
    with pytest.raises(ValueError, match="holds 2 audio placeholder tokens but the audio encoder gave 1 tokens"):
        check_media(prompt, {"audio": torch.zeros(1, 4)}, 4)
    with pytest.raises(ValueError, match=r"expected width 4 \(the text embedding\) but got 5"):
        check_media(prompt, {"audio": torch.zeros(2, 5)}, 4)
    media = check_media(prompt, {"audio": torch.zeros(2, 4)}, 4)
    assert list(media) == ["audio"] and media.slots["audio"].tolist() == [[True, True, False]]


def test_one_encoding_loop_runs_absent_towers_where_present_ones_run() -> None:
    """The published Thinker's towers as adapters: audio, then the vision tower at the image and the video slot."""
    model = omnikit.create_model("qwen2_5_omni_thinker_tiny").eval()
    adapters = model.adapters
    assert list(adapters) == ["audio", "image", "video"]
    assert isinstance(adapters["audio"], AudioTowerAdapter) and isinstance(adapters["video"], VisionTowerAdapter)
    calls = []

    def visual(pixels, grids):
        calls.append(list(grids))
        return model._visual(pixels, grids)

    m = model.vision_encoder.config.merge_size
    features, lengths = adapters["audio"].fixed_example()
    given = {"audio": ModalityInput(features, lengths, ("input_features", "feature_attention_mask"))}
    with torch.no_grad():
        encoded, absent = encode_media(
            {"audio": adapters["audio"], "video": VisionTowerAdapter(visual, model.vision_encoder.config)}, given,
            run_absent=True, device=torch.device("cpu"),
        )
        assert list(encoded) == ["audio"] and calls == [[(1, m, m)]]  # the absent video slot ran its fixed example
        assert absent is not None and float(absent) == 0.0
        assert encode_media(adapters, given, run_absent=False, device=torch.device("cpu"))[1] is None
