"""The model contract (DESIGN.md), run over every registered ``*_tiny`` model.

A new model family gets this suite by registering a ``*_tiny`` variant that implements
``contract_inputs`` (see ``omnikit.testing.contract``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

import omnikit
from omnikit.streaming import stream_members
from omnikit.testing import ContractInputs, export_dynamic_shapes, primary_output
from omnikit.utils.precision import keeps_fp32

TINY = omnikit.list_models("*_tiny")
LENGTHS = (13, 9)  # an odd batch: items of different lengths, padding on the second

# The kinds whose forward must export (encoders, decoders' prefill, MoE layers, codecs).
EXPORT_KINDS = ("audio_encoder", "frame_encoder", "temporal", "decoder", "moe", "codec")
# Known gaps, one place, with the cause (``benchmarks/compile_status.py`` prints them all); the
# checks below run these as strict xfails, so a model that starts to pass must leave the list.
NOT_FULLGRAPH: dict[str, str] = {}
NOT_EXPORTABLE: dict[str, str] = {}
NOT_RECOMPILE_FREE: dict[str, str] = {
    "gemma4_vision_tiny": "duck sizing: in a batch of 2 the (x, y) axis of the patch positions shares the batch's "
                          "size symbol, so a batch of 3 recompiles (export, with its own Dims, is dynamic)"}


def build(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name, **kwargs)


def run(model: nn.Module, inputs: ContractInputs) -> Any:
    return model(**inputs.kwargs)


def outputs(model: nn.Module, inputs: ContractInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    return primary_output(run(model, inputs))


def valid_lengths(inputs: ContractInputs, out: torch.Tensor, out_lengths: torch.Tensor | None) -> list[int] | None:
    """Valid output positions per item: the output's own lengths, else the input's when T is kept."""
    if out_lengths is not None:
        return [int(n) for n in out_lengths]
    if inputs.lengths is not None and inputs.time_dims and out.ndim >= 2:
        in_len = max(int(n) for n in inputs.lengths)
        if out.shape[1] == in_len:
            return [int(n) for n in inputs.lengths]
    return None


def crop_item(inputs: ContractInputs, index: int, length: int) -> ContractInputs:
    """Item ``index`` of the batch, its time axes cut to ``length`` (no padding)."""
    if inputs.item is not None:  # packed media: the model packs the item alone
        return inputs.item(index)
    kwargs: dict[str, Any] = {}
    for key, value in inputs.kwargs.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            value = value[index : index + 1]
            if key in inputs.time_dims:
                value = value.narrow(inputs.time_dims[key], 0, length)
        kwargs[key] = value
    if inputs.lengths_kwarg is not None:
        kwargs[inputs.lengths_kwarg] = torch.tensor([length])
    return ContractInputs(kwargs, torch.tensor([length]), inputs.time_dims, inputs.lengths_kwarg)


def with_noisy_padding(inputs: ContractInputs, seed: int = 7, fill: float | None = None) -> ContractInputs:
    """The same batch with every padded position overwritten by large random values (or ``fill``)."""
    if inputs.lengths is None:
        return inputs
    g = torch.Generator().manual_seed(seed)
    kwargs = dict(inputs.kwargs)
    for key, dim in inputs.time_dims.items():
        value = kwargs[key].clone()
        for b, n in enumerate(inputs.lengths.tolist()):
            pad = value[b].narrow(dim - 1, inputs.padding_start(value.shape[dim], n), value.shape[dim] - n)
            if value.is_floating_point() and fill is not None:
                pad.fill_(fill)
            elif value.is_floating_point():
                pad.copy_(torch.randn(pad.shape, generator=g) * 100)
            else:
                pad.copy_(torch.randint(0, int(value.max()) + 1, pad.shape, generator=g))
        kwargs[key] = value
    return dataclasses.replace(inputs, kwargs=kwargs)


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4, msg: str = "") -> None:
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, msg=lambda m: f"{msg}\n{m}")


def prefix(inputs: ContractInputs, length: int) -> ContractInputs:
    """Every item cut to its first ``length`` time steps."""
    kwargs = dict(inputs.kwargs)
    for key, dim in inputs.time_dims.items():
        kwargs[key] = kwargs[key].narrow(dim, 0, length)
    if inputs.lengths_kwarg is not None:
        kwargs[inputs.lengths_kwarg] = torch.full((len(inputs.lengths),), length)
    return ContractInputs(kwargs, torch.full((len(inputs.lengths),), length), inputs.time_dims, inputs.lengths_kwarg)


def equal_lengths(model: nn.Module, length: int) -> ContractInputs:
    return model.contract_inputs([length, length], seed=1)


@pytest.fixture(params=TINY)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("name", [n for n in TINY if omnikit.model_info(n).kind == "codec"])
def test_codecs_implement_the_codec_interface(name: str) -> None:
    """Every codec is an ``omnikit.audio.CodeDecoder`` (a ``Codec`` when it encodes): decode turns
    ``(B, num_codebooks, F)`` codes into at most ``F * sample_rate / frame_rate`` samples (DAC's
    transposed convolutions with odd strides give a few fewer, as published), and encode gives that
    layout back."""
    from omnikit.audio import Codec, CodeDecoder

    model = build(name).eval()
    assert isinstance(model, CodeDecoder)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, model.codebook_size, (2, model.num_codebooks, 3), generator=generator)
    wav = model.decode(codes)
    assert wav.ndim == 3 and wav.shape[0] == 2
    assert 0 < wav.shape[-1] <= round(3 * model.sample_rate / model.frame_rate)
    if hasattr(model, "encode"):
        assert isinstance(model, Codec)
        again = model.encode(wav)
        assert again.dtype == torch.int64 and tuple(again.shape) == (2, model.num_codebooks, 3)


def test_registry_has_tiny_models() -> None:
    assert "decoder_tiny" in TINY


def test_builds_and_meta_build_matches(name: str) -> None:
    model = build(name)
    meta = build(name, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert omnikit.count_parameters(meta) == omnikit.count_parameters(model)
    assert model.omnikit_spec.name == name
    assert model.omnikit_spec.kind == omnikit.model_info(name).kind


def test_forward_shapes_finite_and_metadata(name: str) -> None:
    model = build(name).eval()
    inputs = model.contract_inputs(LENGTHS)
    with torch.no_grad():
        out, out_lengths = outputs(model, inputs)
    assert out.shape[0] == len(LENGTHS)
    assert torch.isfinite(out).all(), "non-finite output"
    if hasattr(model, "output_dim"):
        assert out.shape[-1] == model.output_dim, "output_dim metadata disagrees with the output"
    if out_lengths is not None:
        assert out_lengths.dtype == torch.int64 and out_lengths.shape == (len(LENGTHS),)
        assert int(out_lengths.max()) <= out.shape[1]
        if hasattr(model, "output_lengths"):
            assert torch.equal(out_lengths, model.output_lengths(inputs.lengths)), "output_lengths arithmetic"


def test_backward_reaches_every_trainable_parameter(name: str) -> None:
    model = build(name).train()
    out, _ = outputs(model, model.contract_inputs(LENGTHS))
    out.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached: {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


def test_eval_is_deterministic(name: str) -> None:
    model = build(name).eval()
    inputs = model.contract_inputs(LENGTHS)
    with torch.no_grad():
        assert torch.equal(outputs(model, inputs)[0], outputs(model, inputs)[0])


def test_save_load_roundtrip(name: str, tmp_path) -> None:
    model = build(name).eval()
    omnikit.save_pretrained(model, tmp_path)
    loaded = omnikit.load_pretrained(tmp_path).eval()
    inputs = model.contract_inputs(LENGTHS)
    with torch.no_grad():
        assert torch.equal(outputs(model, inputs)[0], outputs(loaded, inputs)[0])


def test_batch_equals_items_and_padding_is_invisible(name: str) -> None:
    check_padding_is_invisible(name)


@pytest.mark.parametrize("fill", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_padding_never_reaches_valid_outputs(name: str, fill: float) -> None:
    """NaN or inf in the padding is removed by masking, not multiplying, so valid outputs never see it."""
    check_padding_is_invisible(name, fill)


def check_padding_is_invisible(name: str, fill: float | None = None) -> None:
    """A padded batch equals its items run alone, with noise (or ``fill``) in every padded position."""
    model = build(name).eval()
    inputs = model.contract_inputs(LENGTHS)
    if inputs.lengths is None:
        pytest.skip("fixed-size inputs: no padding to test")
    if fill is not None and not any(inputs.kwargs[k].is_floating_point() for k in inputs.time_dims):
        pytest.skip("integer inputs: NaN cannot be written into the padding")
    if fill is not None and inputs.lengths_kwarg is None:
        pytest.skip("no lengths argument: the padding is the causal future, which chunked kernels multiply by 0")
    noisy = with_noisy_padding(inputs, fill=fill)
    with torch.no_grad():
        out, out_lengths = outputs(model, noisy)
        valid = valid_lengths(noisy, out, out_lengths)
        assert valid is not None, "cannot tell which outputs are valid: return .lengths or keep the time axis"
        for b, n in enumerate(inputs.lengths.tolist()):
            alone, _ = outputs(model, crop_item(inputs, b, n))
            assert alone.shape[1] == valid[b], f"item {b}: alone gives {alone.shape[1]} steps, batch says {valid[b]}"
            start = inputs.valid_start(out.shape[1], valid[b])
            assert_close(out[b, start : start + valid[b]], alone[0], msg=f"item {b} differs between batch and alone")


def _streaming_inputs(model: nn.Module) -> ContractInputs:
    chunk = model.stream_chunk
    return equal_lengths(model, 4 * chunk)


def _is_streaming_model(model: nn.Module) -> bool:
    return bool(getattr(model, "supports_streaming", False))


def _stream(
    model: nn.Module, inputs: ContractInputs, sizes: Sequence[int], max_len: int | None = None
) -> torch.Tensor:
    pieces, start = [], 0
    with model.streaming(len(inputs.lengths), max_len=max_len):
        for size in sizes:
            kwargs = dict(inputs.kwargs)
            for key, dim in inputs.time_dims.items():
                kwargs[key] = kwargs[key].narrow(dim, start, size)
            if inputs.lengths_kwarg is not None:
                kwargs[inputs.lengths_kwarg] = torch.full((len(inputs.lengths),), size)
            start += size
            pieces.append(primary_output(model(**kwargs))[0])
    return torch.cat(pieces, dim=1)


def test_streaming_equals_full_and_ignores_the_future(name: str) -> None:
    model = build(name).eval()
    if not _is_streaming_model(model):
        pytest.skip("not a streaming model")
    inputs = _streaming_inputs(model)
    total, chunk = int(inputs.lengths[0]), model.stream_chunk
    with torch.no_grad():
        full = outputs(model, inputs)[0]
        assert_close(_stream(model, inputs, [chunk] * (total // chunk)), full, msg="chunked != full")
        uneven = [chunk, 2 * chunk + 1, total - 3 * chunk - 1]
        assert_close(_stream(model, inputs, uneven), full, msg="uneven chunks != full")
        # future input never changes past output
        cut = total // 2
        past = outputs(model, prefix(inputs, cut))[0]
        perturbed = with_noisy_padding(ContractInputs(
            inputs.kwargs, torch.full_like(inputs.lengths, cut), inputs.time_dims, None))
        after = outputs(model, perturbed)[0]
        assert_close(after[:, : past.shape[1]], past, msg="future input changed past output")


def test_single_step_decoding_equals_full(name: str) -> None:
    """KV-cache decoding: a prompt, then one step at a time, equals one full forward, with growable
    caches and with static (preallocated, fixed-shape) ones."""
    model = build(name).eval()
    if not _is_streaming_model(model) or getattr(model, "stream_step", 1) != 1:
        pytest.skip("not a token-by-token streaming model")
    inputs = equal_lengths(model, 8)
    with torch.no_grad():
        full = outputs(model, inputs)[0]
        assert_close(_stream(model, inputs, [3, 1, 1, 1, 1, 1]), full, msg="cached decoding != full forward")
        static = _stream(model, inputs, [3, 1, 1, 1, 1, 1], max_len=64)  # more slots than the 8 positions streamed
        assert_close(static, full, msg="static-cache decoding != full forward")


def test_gradient_checkpointing_changes_nothing(name: str) -> None:
    model = build(name).train()
    supports = [m for m in model.modules() if isinstance(getattr(m, "gradient_checkpointing", None), bool)]
    if not supports:
        pytest.skip("no gradient checkpointing")
    inputs = model.contract_inputs(LENGTHS)
    twin = copy.deepcopy(model)
    omnikit.set_gradient_checkpointing(twin, True)
    results = []
    for m in (model, twin):
        torch.manual_seed(0)
        out = outputs(m, inputs)[0]
        out.float().square().mean().backward()
        results.append((out.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    assert_close(results[1][0], results[0][0])
    for key, grad in results[0][1].items():
        assert_close(results[1][1][key], grad, atol=1e-5, msg=key)


@pytest.mark.parametrize("compile_backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_matches_eager(name: str, compile_backend: str) -> None:
    model = build(name).eval()
    inputs = model.contract_inputs(LENGTHS)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=compile_backend)
    with torch.no_grad():
        assert_close(outputs(compiled, inputs)[0], outputs(model, inputs)[0], atol=1e-4, rtol=1e-3)


def test_bf16_runs_with_norms_and_routers_in_fp32(name: str) -> None:
    model = build(name, dtype=torch.bfloat16).eval()
    for module_name, module in model.named_modules():
        kind = type(module).__name__.lower()
        if keeps_fp32(module) or kind.endswith("norm") or "router" in kind:
            wrong = [n for n, p in module.named_parameters() if p.dtype != torch.float32]
            assert not wrong, f"{module_name} ({type(module).__name__}) must stay fp32 under bf16: {wrong}"
    low = [p for m in model.modules() if not keeps_fp32(m) for p in m.parameters(recurse=False)]
    assert all(p.dtype == torch.bfloat16 for p in low if p.is_floating_point())
    inputs = model.contract_inputs(LENGTHS)
    kwargs = {k: v.bfloat16() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in inputs.kwargs.items()}
    with torch.no_grad():
        out, _ = primary_output(model(**kwargs))
    assert torch.isfinite(out.float()).all()


def test_streaming_modules_declare_state(name: str) -> None:
    """Every streaming submodule the stream holds (media encoders run offline) builds its typed state, and
    the state is cleared on exit."""
    model = build(name)
    if not _is_streaming_model(model):
        pytest.skip("not a streaming model")
    members = stream_members(model)
    with model.streaming(2):
        assert all(m.streaming_state is not None for m in members)
    assert all(m.streaming_state is None for m in members)


def _expect_failure(request: pytest.FixtureRequest, known: dict[str, str], name: str) -> None:
    if name in known:
        request.applymarker(pytest.mark.xfail(reason=known[name], strict=True))


@pytest.mark.slow
def test_fullgraph_compile_forward_and_training_step_match_eager(name: str, request: pytest.FixtureRequest) -> None:
    """``torch.compile(fullgraph=True)``: no graph break, outputs and every gradient equal eager."""
    _expect_failure(request, NOT_FULLGRAPH, name)
    model = build(name)
    inputs = model.contract_inputs(LENGTHS)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        model.eval()
        assert_close(outputs(compiled, inputs)[0], outputs(model, inputs)[0], atol=1e-4, rtol=1e-3, msg="eval")
    model.train()
    grads = []
    for runner in (model, compiled):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        outputs(runner, inputs)[0].float().square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for key, grad in grads[0].items():
        assert_close(grads[1][key], grad, atol=1e-4, rtol=1e-3, msg=key)


@pytest.mark.slow
def test_export_with_dynamic_batch_and_time_matches_eager(name: str, request: pytest.FixtureRequest) -> None:
    """``torch.export`` with a dynamic batch and time: one program serves other sizes, equal to eager."""
    if omnikit.model_info(name).kind not in EXPORT_KINDS:
        pytest.skip("not an encoder, decoder, MoE layer or codec")
    _expect_failure(request, NOT_EXPORTABLE, name)
    model = build(name).eval()
    inputs = model.contract_inputs(LENGTHS)
    program = torch.export.export(model, (), inputs.kwargs, dynamic_shapes=export_dynamic_shapes(inputs))
    with torch.no_grad():
        for case in (inputs, model.contract_inputs([11, 6, 4], seed=3)):  # another batch size and length
            got = outputs(program.module(), case)[0]
            assert_close(got, outputs(model, case)[0], atol=1e-4, rtol=1e-3, msg=f"batch {len(case.lengths)}")


@pytest.mark.slow
def test_dynamic_time_compiles_once_across_lengths(name: str, request: pytest.FixtureRequest) -> None:
    """Encoders and decoders compiled with ``dynamic=True``: other lengths and batch sizes reuse the
    graph (``error_on_recompile``) and equal eager."""
    if omnikit.model_info(name).kind not in EXPORT_KINDS:
        pytest.skip("not an encoder, decoder, MoE layer or codec")
    _expect_failure(request, {**NOT_FULLGRAPH, **NOT_RECOMPILE_FREE}, name)
    model = build(name).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        outputs(compiled, model.contract_inputs(LENGTHS))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for lengths in ([11, 6, 4], [17, 12]):
                case = model.contract_inputs(lengths, seed=3)
                assert_close(outputs(compiled, case)[0], outputs(model, case)[0], atol=1e-4, rtol=1e-3)
