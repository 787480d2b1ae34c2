"""Static (preallocated) KV caches: fixed-shape decode steps equal the growable cache, and compile once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import omnikit
from omnikit.layers import Attention, Decoder, DecoderConfig, StaticKVCache
from omnikit.models import CausalLM
from omnikit.speech import DuplexModel
from omnikit.streaming import streaming


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches emptied before and after, so compile counts and recompile checks are this test's own."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _lm(**overrides) -> CausalLM:
    config = dict(dim=64, depth=2, num_heads=4, num_kv_heads=2, vocab_size=96, **overrides)
    return CausalLM(DecoderConfig(**config)).eval()


@pytest.mark.parametrize("causal", [True, False])
def test_chunked_stream_through_a_static_cache_equals_the_growable_cache(causal: bool) -> None:
    """Chunks of any size through preallocated slots (GQA, padding mask over the slots seen so far)."""
    attn = Attention(32, 4, 2, causal=causal).eval()
    x = torch.randn(2, 9, 32)
    padding = torch.ones(2, 9, dtype=torch.bool)
    padding[1, :2] = False
    bounds = ((0, 3), (3, 4), (4, 8), (8, 9))
    outs = {}
    with torch.no_grad():
        for max_len in (None, 12):
            with streaming(attn, 2, max_len=max_len):
                outs[max_len] = torch.cat([attn(x[:, a:b], key_padding_mask=padding[:, :b]) for a, b in bounds], 1)
            assert attn.streaming_state is None
    torch.testing.assert_close(outs[12], outs[None], atol=1e-6, rtol=1e-5)


def test_static_cache_bounds_grad_and_shapes() -> None:
    attn = Attention(32, 4, 2, causal=True)
    with torch.no_grad(), streaming(attn, 1, max_len=4):
        state = attn.streaming_state
        assert isinstance(state, StaticKVCache) and state.keys.shape == (1, 2, 4, 8)
        keys = state.keys
        attn(torch.randn(1, 3, 32))
        assert attn.cache_length == 3 and state.keys is keys, "written in place"
        with pytest.raises(ValueError, match=r"max_len=4 .* 3 are written and 2 more"):
            attn(torch.randn(1, 2, 32))
    with streaming(attn, 1, max_len=4), pytest.raises(ValueError, match="no_grad"):
        attn(torch.randn(1, 1, 32))
    with pytest.raises(ValueError, match="max_len"), streaming(attn, 1, max_len=0):
        pass


@pytest.mark.parametrize("padded", [False, True])
def test_static_generation_equals_dynamic(padded: bool) -> None:
    lm = _lm()
    ids = torch.randint(0, 96, (2, 6))
    kwargs = {}
    if padded:  # left padding: item 1 starts two tokens later
        mask = torch.ones(2, 6, dtype=torch.bool)
        mask[1, :2] = False
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)
        kwargs = dict(key_padding_mask=mask, positions=positions, next_position=positions[:, -1] + 1)
    dynamic = lm.generate(ids, max_new_tokens=10, **kwargs)
    static = lm.generate(ids, max_new_tokens=10, cache="static", max_len=20, **kwargs)
    assert torch.equal(static.tokens, dynamic.tokens)
    torch.testing.assert_close(static.hidden, dynamic.hidden, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_thinker_with_mrope_and_media_generates_the_same_tokens_static(bidirectional: bool) -> None:
    """TMRoPE positions, media scattered in, and (bidirectional) a media mask widened to the slots."""
    model = omnikit.create_model("omni_early_tiny", bidirectional_media=bidirectional).eval()
    inputs = model.contract_inputs([14], seed=2).kwargs
    inputs.pop("lengths", None)
    prompt = inputs.pop("input_ids")
    dynamic = model.generate(prompt, max_new_tokens=5, **inputs)
    static = model.generate(prompt, max_new_tokens=5, cache="static", **inputs)
    assert torch.equal(static.tokens, dynamic.tokens)
    torch.testing.assert_close(static.hidden, dynamic.hidden, atol=1e-5, rtol=1e-4)


def test_compiled_decode_step_traces_once_and_equals_eager(fresh_dynamo) -> None:
    """``torch.compile(lm.decode_step, fullgraph=True)`` over a static cache never recompiles as the position moves."""
    lm = _lm()
    ids = torch.randint(0, 96, (2, 5))
    reference = lm.generate(ids, max_new_tokens=8).tokens
    counter = CompileCounter()
    step = torch.compile(lm.decode_step, fullgraph=True, backend=counter)
    tokens = []
    with torch.no_grad(), lm.streaming(2, max_len=16), torch._dynamo.config.patch(error_on_recompile=True):
        logits = lm(ids)[:, -1]
        for i in range(8):
            tokens.append(logits.argmax(-1))
            out, _ = step(tokens[-1][:, None], positions=torch.full((2, 1), 5 + i))
            logits = out[:, -1]
    assert counter.frame_count == 1
    assert torch.equal(torch.stack(tokens, 1), reference)


def assert_compiles_once(generate: Callable[..., torch.Tensor], reference: torch.Tensor, max_len: int) -> None:
    """``generate(**options)`` (new tokens) through a static cache of ``max_len`` slots under ``torch.compile``
    traces its decode step once: every step of a stream and a second stream (new buffers) reuse the graph,
    and the tokens equal the eager ``reference``."""
    counter = CompileCounter()
    options = dict(cache="static", max_len=max_len, compile={"backend": counter})
    first = generate(**options)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a new stream: new buffers, same graph
        second = generate(**options)
    assert counter.frame_count == 1
    assert torch.equal(first, reference) and torch.equal(second, reference)


def test_generate_compile_option_compiles_once_across_calls(fresh_dynamo) -> None:
    lm = _lm()
    ids = torch.randint(0, 96, (2, 5))
    reference = lm.generate(ids, max_new_tokens=6).tokens
    assert_compiles_once(lambda **options: lm.generate(ids, max_new_tokens=6, **options).tokens, reference, 12)


@pytest.mark.parametrize("name", ["qwen3_5_tiny", "qwen3_5_vl_tiny"])
def test_hybrid_compiled_static_decode_compiles_once(name: str, fresh_dynamo) -> None:
    """The hybrid text model and Qwen3.5-VL (Gated DeltaNet recurrent and conv states in the static cache beside
    the full-attention KV slots; M-RoPE ids of an image and a video for the VL model) on a left-padded batch."""
    model = omnikit.create_model(name).eval()
    if name == "qwen3_5_tiny":
        ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, 6, dtype=torch.bool)
        mask[1, :2] = False
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)
        inputs = dict(key_padding_mask=mask, positions=positions, next_position=positions[:, -1] + 1)
    else:
        inputs = model.contract_inputs([10, 7], seed=1).kwargs
        inputs.pop("lengths", None)
        ids = inputs.pop("input_ids")
    reference = model.generate(ids, max_new_tokens=5, **inputs).tokens
    assert_compiles_once(lambda **options: model.generate(ids, max_new_tokens=5, **options, **inputs).tokens,
                         reference, ids.shape[1] + 5)


@pytest.mark.parametrize("strategy", ["delay", "depth", "mtp"])
def test_talker_static_and_compiled_codes_equal_dynamic(strategy: str, fresh_dynamo) -> None:
    talker = omnikit.create_model("talker_tiny", strategy=strategy).eval()
    text, context = torch.randn(2, 4, 64), torch.randn(2, 3, 64)

    def codes(**options) -> torch.Tensor:
        frames = talker.stream_codes(iter(text.unbind(1)), batch_size=2, context=context, max_frames=8,
                                     min_frames=8, **options)
        return torch.stack(list(frames), dim=2)

    reference = codes()
    assert torch.equal(codes(cache="static"), reference)
    counter = CompileCounter()
    assert torch.equal(codes(cache="static", compile={"backend": counter}), reference)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.equal(codes(cache="static", compile={"backend": counter}), reference)
    assert counter.frame_count == (1 if strategy == "delay" else 2), "temporal step (+ code predictor step)"


@pytest.mark.parametrize("strategy", ["delay", "mtp"])
def test_thinker_talker_streams_the_same_text_and_speech_static_and_compiled(strategy: str, fresh_dynamo) -> None:
    model = omnikit.create_model("thinker_talker_tiny", strategy=strategy).eval()
    kwargs = model.omni.contract_inputs([12], seed=0).kwargs
    kwargs.pop("lengths")
    prompt = kwargs.pop("input_ids")

    def run(**options) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = list(model.stream(prompt, max_new_tokens=5, max_frames=6, chunk_frames=3, **options, **kwargs))
        return torch.cat([c.text_tokens for c in chunks], 1), torch.cat([c.codes for c in chunks], 2)

    reference = run()
    for got in (run(cache="static"), run(cache="static", compile={"backend": "eager"})):
        assert all(torch.equal(a, b) for a, b in zip(got, reference))


def test_duplex_static_and_compiled_stream_equals_dynamic(fresh_dynamo) -> None:
    model: DuplexModel = omnikit.create_model("duplex_tiny").eval()
    user = torch.randint(0, 64, (2, 4, 7))

    def run(**options) -> tuple[torch.Tensor, torch.Tensor]:
        steps = list(model.stream(user.unbind(2), **options))
        return torch.stack([s.text for s in steps], 1), torch.stack([s.codes for s in steps], 2)

    reference = run()
    for got in (run(cache="static", max_len=7), run(cache="static", max_len=9, compile={"backend": "eager"})):
        assert all(torch.equal(a, b) for a, b in zip(got, reference))
    with pytest.raises(ValueError, match="max_len"):
        run(cache="static")
    with pytest.raises(ValueError, match="max_len=6"):
        run(cache="static", max_len=6)


def test_bad_cache_options_name_the_argument() -> None:
    lm = _lm()
    ids = torch.randint(0, 96, (1, 4))
    with pytest.raises(ValueError, match="cache"):
        lm.generate(ids, cache="paged")
    with pytest.raises(ValueError, match=r"compile.*static"):
        lm.generate(ids, compile=True)
    with pytest.raises(ValueError, match=r"`max_len` expected at least 9"):
        lm.generate(ids, max_new_tokens=5, cache="static", max_len=8)
    with pytest.raises(ValueError, match="static"):
        lm.generate(ids, max_len=8)
    with pytest.raises(TypeError, match="compile"):
        lm.generate(ids, cache="static", compile=3)
    with pytest.raises(ValueError, match="flash"):
        decoder = Decoder(DecoderConfig(dim=32, depth=1, num_heads=4, backend="flash"))
        with torch.no_grad(), streaming(decoder, 1, max_len=4):
            decoder(torch.randn(1, 2, 32))


@pytest.mark.slow
def test_inductor_compiled_generation_equals_eager(fresh_dynamo) -> None:
    """The real compiler (Inductor), as ``generate(..., compile=True)`` runs it."""
    lm = _lm()
    ids = torch.randint(0, 96, (2, 5))
    reference = lm.generate(ids, max_new_tokens=6)
    compiled = lm.generate(ids, max_new_tokens=6, cache="static", compile=True)
    assert torch.equal(compiled.tokens, reference.tokens)
    torch.testing.assert_close(compiled.hidden, reference.hidden, atol=1e-5, rtol=1e-5)


def _cuda_graph_count() -> int:
    """Graphs recorded by the CUDA-graph trees of the current device (0 when none)."""
    from torch._inductor import cudagraph_trees

    manager = cudagraph_trees.get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    return 0 if manager is None else sum(len(nodes) for nodes in manager.roots.values())


@pytest.mark.cuda
def test_static_decode_runs_as_cuda_graphs_and_equals_eager(fresh_dynamo) -> None:
    """``compile="reduce-overhead"``: every decode step replays a CUDA graph (no skip), tokens equal eager."""
    from torch._dynamo.utils import counters

    lm = _lm().cuda()
    ids = torch.randint(0, 96, (2, 5), device="cuda")
    reference = lm.generate(ids, max_new_tokens=12)
    counters.clear()
    runs = [lm.generate(ids, max_new_tokens=12, cache="static", compile="reduce-overhead") for _ in range(2)]
    assert counters["inductor"]["cudagraph_skips"] == 0, "the step must not fall back from CUDA graphs"
    assert _cuda_graph_count() >= 1
    for run in runs:  # the second run: new cache buffers, the same compiled graph
        assert torch.equal(run.tokens, reference.tokens)
        torch.testing.assert_close(run.hidden, reference.hidden, atol=1e-4, rtol=1e-4)

    talker = omnikit.create_model("talker_tiny", strategy="mtp").eval().cuda()
    text = torch.randn(2, 4, 64, device="cuda")

    def codes(**options) -> torch.Tensor:
        frames = talker.stream_codes(iter(text.unbind(1)), batch_size=2, max_frames=6, min_frames=6, **options)
        return torch.stack(list(frames), dim=2)

    assert torch.equal(codes(cache="static", compile="reduce-overhead"), codes())
    assert counters["inductor"]["cudagraph_skips"] == 0


@pytest.mark.cuda
def test_static_decode_in_bfloat16_under_cuda_graphs(fresh_dynamo) -> None:
    """bf16 weights and caches: the compiled static decode runs as CUDA graphs; the first compiled step's
    hidden state (both runs share the eager prompt and first token) matches eager to bf16 rounding."""
    from torch._dynamo.utils import counters

    lm = _lm().cuda().to(torch.bfloat16)
    ids = torch.randint(0, 96, (2, 5), device="cuda")
    counters.clear()
    eager = lm.generate(ids, max_new_tokens=8, cache="static")
    compiled = lm.generate(ids, max_new_tokens=8, cache="static", compile="reduce-overhead")
    assert counters["inductor"]["cudagraph_skips"] == 0
    assert compiled.hidden.dtype == torch.bfloat16 and compiled.tokens.shape == (2, 8)
    torch.testing.assert_close(compiled.hidden[:, 0].float(), eager.hidden[:, 0].float(), atol=3e-2, rtol=3e-2)
