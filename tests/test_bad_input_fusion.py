"""Thinker and omni assemblies under bad input: ids, eos, sampling, media arguments named."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture()
def thinker(tiny_model) -> torch.nn.Module:
    return tiny_model("thinker_tiny")


def _text(thinker: torch.nn.Module) -> torch.Tensor:
    return torch.full((1, 3), max(thinker.media_tokens.as_dict().values()) + 1)


@pytest.mark.parametrize("value", [-1, 10**6])
def test_out_of_range_ids_are_named(thinker, value) -> None:
    with pytest.raises(ValueError, match=r"`input_ids` expected values in \[0, \d+\)"):
        thinker(torch.full((1, 3), value))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"eos_token_id": -1}, ValueError, r"`eos_token_id` expected an int in \[0, \d+\)"),
        ({"eos_token_id": 10**6}, ValueError, r"`eos_token_id` expected an int in \[0, \d+\)"),
        ({"eos_token_id": 1.0}, TypeError, r"`eos_token_id` expected an int"),
        ({"max_new_tokens": 0}, ValueError, r"`max_new_tokens` expected an int > 0"),
        ({"sampling": {"temperature": 1.0}}, TypeError, r"`sampling` expected an omnikit.fusion.Sampling"),
    ],
)
def test_generation_settings_are_named(thinker, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        thinker.generate(_text(thinker), **{"max_new_tokens": 2, **kwargs})


def test_key_padding_mask_of_the_wrong_length_is_named(thinker) -> None:
    with pytest.raises(ValueError, match=r"`key_padding_mask` expected shape \(1, 3\)"):
        thinker(_text(thinker), key_padding_mask=torch.ones(1, 2, dtype=torch.bool))


def test_empty_batch_and_empty_prompt_give_empty_logits(thinker) -> None:
    vocab = thinker.config.vocab_size
    assert thinker(torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3, vocab)
    assert thinker(torch.zeros(1, 0, dtype=torch.long)).shape == (1, 0, vocab)


def test_omni_audio_errors_name_the_call_arguments(tiny_model) -> None:
    model = tiny_model("omni_early_tiny")
    kwargs = model.contract_inputs([12, 12]).kwargs
    with pytest.raises(ValueError, match="`audio_lengths`"):
        model(**{**kwargs, "audio_lengths": torch.tensor([99, 99])})
    with pytest.raises(ValueError, match="`audio_features` expected finite"):
        model(**{**kwargs, "audio_features": torch.full_like(kwargs["audio_features"], float("nan"))})
    with pytest.raises(ValueError, match=r"`frames` expected a 5-D shape"):
        model(**{**kwargs, "frames": kwargs["frames"][0]})


def _training_example():
    """``examples/train_tiny_omni.py`` as a module."""
    path = Path(__file__).resolve().parents[1] / "examples" / "train_tiny_omni.py"
    spec = importlib.util.spec_from_file_location("train_tiny_omni", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_training_example_handles_short_runs() -> None:
    example = _training_example()
    for steps in range(1, 13):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = example.one_cycle(opt, 1.0, steps)
        for _ in range(steps):
            opt.step()
            sched.step()


@pytest.mark.slow
def test_training_example_learns_with_the_registered_presets() -> None:
    """``examples/train_tiny_omni.py`` with the registry's tiny presets as they are (He audio stem included):
    150 steps give both fusion styles >= 0.9 held-out (1.000 after 200 steps in docs/fusion.md). ~25 s."""
    example = _training_example()
    test = example.make_batch(256, torch.Generator().manual_seed(12345))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for style in ("early", "xattn"):
            result = example.train(style, 150, 64, 3e-3, 0, test)
            assert result["accuracy"] >= 0.9, (style, result["accuracy"])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ids_per_second": -25.0}, "ids_per_second` expected a finite number > 0"),
     ({"ids_per_second": float("nan")}, "ids_per_second` expected a finite number > 0"),
     ({"seconds_per_chunk": 0.0}, "seconds_per_chunk` expected a finite number > 0"),
     ({"seconds_per_chunk": 0.01}, "at least one temporal id per chunk"),
     ({"audio_ids_per_token": 0.0}, "audio_ids_per_token` expected a finite number > 0")],
)
def test_tmrope_scheme_refuses_rates_that_give_negative_or_no_ids(kwargs, message) -> None:
    from omnikit.fusion.tmrope import TMRoPEScheme

    with pytest.raises(ValueError, match=message):
        TMRoPEScheme(**kwargs)


def test_visual_grid_refuses_negative_time_and_fractional_audio() -> None:
    from omnikit.fusion import VisualGrid

    with pytest.raises(ValueError, match="seconds_per_step` expected a finite number >= 0 but got -1"):
        VisualGrid(2, 2, 2, seconds_per_step=-1.0)
    with pytest.raises(ValueError, match=r"audio_tokens` expected an int >= 0 but got 2\.5"):
        VisualGrid(2, 2, 2, audio_tokens=2.5)


@pytest.mark.parametrize(("audios", "error", "message"),
                         [([2.5], TypeError, "integer token counts"), ([-2], ValueError, "counts >= 0"),
                          (torch.tensor([2.5]), TypeError, "integer token counts")])
def test_tmrope_audio_counts_are_whole_and_non_negative(audios, error, message) -> None:
    from omnikit.fusion import QWEN2_5_OMNI, MediaTokens, tmrope_position_ids

    ids = torch.tensor([[1, 7, 7, 2]])
    with pytest.raises(error, match=f"`audios` expected .*{message}"):
        tmrope_position_ids(ids, MediaTokens(audio=7), audios=audios, scheme=QWEN2_5_OMNI)
