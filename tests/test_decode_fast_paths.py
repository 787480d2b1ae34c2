"""The decoding fast paths of issue 30 keep behaviour: the KV cache's in-place writes, the norm's direct
call and its mirrored layer norm for small inputs, the CPU options of compiled steps, and the compiled
steps that skip re-checking guards only where a loop repeats its first step."""

from __future__ import annotations

import torch

from omnikit.layers import norm as norm_module
from omnikit.layers.kv_cache import KVCache
from omnikit.layers.norm import RMSNorm
from omnikit.models import decode_cache
from omnikit.models.decode_cache import CPU_STEP_OPTIONS, RepeatedSteps, compiled_step, repeated_step


def test_kv_cache_appends_equal_one_concatenation_across_growth() -> None:
    torch.manual_seed(0)
    cache = KVCache(2)
    chunks = [(torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 4)) for t in (5, 1, 1, 12, 1, 20)]  # grows 16 -> 32 -> 64
    with torch.inference_mode():
        for i, _ in enumerate(chunks):
            keys, values = cache.append(*chunks[i])
            assert torch.equal(keys, torch.cat([k for k, _ in chunks[: i + 1]], dim=2))
            assert torch.equal(values, torch.cat([v for _, v in chunks[: i + 1]], dim=2))
    assert cache.length == 40


def test_rms_norm_direct_path_equals_the_general_one() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        norm = RMSNorm(16, 1e-5).to(dtype)
        torch.nn.init.normal_(norm.weight)
        x = torch.randn(3, 5, 16, dtype=dtype)
        expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
        torch.testing.assert_close(norm(x), expected, rtol=1e-6, atol=1e-6)
    norm = RMSNorm(16)  # float32 weight, bf16 input: computed in float32, returned in bf16
    x = torch.randn(2, 16).to(torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16
    torch.testing.assert_close(norm(x), norm(x.float()).to(torch.bfloat16), rtol=0, atol=0)


def test_small_inference_rms_norm_runs_as_a_mirrored_layer_norm_equal_to_torch_rms_norm(monkeypatch) -> None:
    torch.manual_seed(0)
    norm = RMSNorm(64, 1e-6)
    torch.nn.init.normal_(norm.weight)
    calls = []
    mirrored = norm_module._mirrored_rms_norm
    monkeypatch.setattr(norm_module, "_mirrored_rms_norm", lambda *a: calls.append(1) or mirrored(*a))
    for scale in (1e-3, 1.0, 1e3):  # a decoding step's rows: one token, its query/key heads
        for shape in ((1, 1, 64), (2, 1, 6, 64), (1, 32, 64)):
            x = torch.randn(shape) * scale
            with torch.no_grad():
                got = norm(x)
            torch.testing.assert_close(got, torch.rms_norm(x, (64,), norm.weight, 1e-6), rtol=2e-6, atol=1e-6)
    with torch.no_grad():  # no NaN from an all-zero row
        assert torch.equal(norm(torch.zeros(1, 64)), torch.zeros(1, 64))
    assert len(calls) == 10


def test_rms_norm_keeps_torch_rms_norm_for_large_inputs_and_gives_its_gradients_for_small_ones() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(64)
    torch.nn.init.normal_(norm.weight)
    large = torch.randn(norm_module.MIRRORED_MAX_NUMEL // 64 + 1, 64)
    with torch.no_grad():
        assert torch.equal(norm(large), torch.rms_norm(large, (64,), norm.weight, 1e-6))
    small = torch.randn(2, 64, requires_grad=True)
    upstream = torch.randn(2, 64)
    ours = torch.autograd.grad(norm(small), (small, norm.weight), upstream)
    theirs = torch.autograd.grad(torch.rms_norm(small, (64,), norm.weight, 1e-6), (small, norm.weight), upstream)
    for got, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    recorded = norm(small)
    with torch.no_grad():  # the same outputs with and without autograd recording
        assert torch.equal(norm(small), recorded)


def test_compile_true_on_the_cpu_uses_the_cpu_step_options_and_other_choices_pass_unchanged(monkeypatch) -> None:
    seen: list[dict] = []
    monkeypatch.setattr(decode_cache.torch, "compile", lambda fn, **kwargs: seen.append(kwargs) or fn)
    cpu_step = torch.nn.Linear(2, 2).forward
    compiled_step(cpu_step, True)
    compiled_step(cpu_step, "max-autotune-no-cudagraphs")
    compiled_step(cpu_step, {"backend": "aot_eager"})
    compiled_step(lambda x: x, True)  # not a module's step: torch.compile's defaults
    assert seen == [
        {"options": CPU_STEP_OPTIONS, "fullgraph": True},
        {"mode": "max-autotune-no-cudagraphs", "fullgraph": True},
        {"backend": "aot_eager", "fullgraph": True},
        {"mode": None, "fullgraph": True},
    ]


def _stance() -> tuple[str, bool]:
    stance = torch._dynamo.eval_frame._stance
    return stance.stance, stance.skip_guard_eval_unsafe


def test_repeated_steps_skip_guards_only_inside_the_call_and_never_override_a_callers_stance() -> None:
    with repeated_step(True):
        assert _stance() == ("default", True)
    assert _stance() == ("default", False)
    with repeated_step(False):
        assert _stance() == ("default", False)
    with torch.compiler.set_stance("force_eager"), repeated_step(True):
        assert _stance() == ("force_eager", False)
    assert _stance() == ("default", False)


def test_repeated_steps_fall_back_to_every_guard_when_dynamo_refuses_a_new_graph() -> None:
    """A step that needs a new graph (here: a new shape; in the speech loops: another model's graph of the
    same code between two steps) is refused under the skipping stance before it runs; it is called again
    with every guard, gives the eager result, and the loop keeps every guard from then on."""
    torch._dynamo.reset()
    steps = RepeatedSteps(torch.compile(lambda x: x * 2 + 1, fullgraph=True, backend="eager"))
    first = torch.arange(4.0)
    assert torch.equal(steps(first), first * 2 + 1) and steps.skipping
    assert torch.equal(steps(first + 1), first * 2 + 3) and steps.skipping  # same graph, new values
    longer = torch.arange(6.0)
    assert torch.equal(steps(longer), longer * 2 + 1)
    assert not steps.skipping
    assert _stance() == ("default", False)
