"""MoE layer: routing, grouped dispatch, capacity, auxiliary losses, errors, decoder integration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import omnikit
from omnikit.layers.decoder import Decoder, DecoderBlock, DecoderConfig
from omnikit.layers.mlp import SwiGLU
from omnikit.moe import (
    MoE,
    MoEConfig,
    capacity,
    expert_choice_plan,
    grouped_mm_native,
    load_balancing_loss,
    plot_expert_load,
    router_z_loss,
    token_choice_plan,
)
from omnikit.moe import experts as experts_module
from omnikit.moe.grouped import RowLayout, pair_experts
from omnikit.moe.traced import grouped_mm


def reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Per-token, per-choice loop over the routing decision: the obviously correct answer."""
    tokens = x.reshape(-1, moe.config.dim)
    routing = moe.router(tokens)
    out = torch.zeros_like(tokens)
    hidden = moe.config.expert_hidden
    for t in range(tokens.shape[0]):
        for j in range(moe.config.top_k):
            e = int(routing.expert_index[t, j])
            h = moe.experts.gate_up[e] @ tokens[t]
            y = moe.experts.down[e] @ (F.silu(h[:hidden]) * h[hidden:])
            out[t] += routing.weight[t, j] * y
    if moe.shared is not None:
        shared = moe.shared(tokens)
        if moe.shared_gate is not None:
            shared = torch.sigmoid(moe.shared_gate(tokens)) * shared
        out = out + shared
    return out.view(x.shape)


def make(**kw) -> MoE:
    torch.manual_seed(0)
    defaults = dict(dim=16, num_experts=6, top_k=2, expert_hidden=8)
    return MoE(MoEConfig(**{**defaults, **kw}))


@pytest.mark.parametrize("gemm", ["ragged", "padded", "paired"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"normalize_weights": False},
        {"scoring": "sigmoid", "route_scale": 2.0},
        {"shared_hidden": 12, "shared_gate": True},
        {"scoring": "sigmoid", "balance_bias": True, "shared_hidden": 8},
    ],
    ids=["softmax-norm", "softmax", "sigmoid", "shared-gated", "bias"],
)
def test_grouped_forward_and_grads_match_per_token_loop(kw, gemm) -> None:
    moe = make(**kw, expert_gemm=gemm)
    if moe.router.expert_bias is not None:
        moe.router.expert_bias.copy_(torch.randn(6))
    x = torch.randn(2, 7, 16, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    out = moe(x)
    ref = reference_moe(moe, xr)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    params = [p for p in moe.parameters()]
    g1 = torch.autograd.grad(out, [x, *params], grad)
    g2 = torch.autograd.grad(ref, [xr, *params], grad)
    for (name, _), a, b in zip([("x", None), *moe.named_parameters()], g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_top1_single_expert_equals_dense_swiglu() -> None:
    moe = make(num_experts=1, top_k=1)
    dense = SwiGLU(16, 8)
    with torch.no_grad():
        dense.gate.weight.copy_(moe.experts.gate_up[0, :8])
        dense.up.weight.copy_(moe.experts.gate_up[0, 8:])
        dense.down.weight.copy_(moe.experts.down[0])
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(moe(x), dense(x), atol=1e-6, rtol=1e-5)


def test_dropless_keeps_every_token_and_capacity_counts_drops() -> None:
    torch.manual_seed(1)
    n, e, k = 64, 4, 2
    index = torch.stack([torch.zeros(n, dtype=torch.long), torch.randint(1, e, (n,))], dim=1)  # expert 0 hot
    weight = torch.rand(n, k)
    plan = token_choice_plan(index, weight, e)
    assert plan.token_index.numel() == n * k and int(plan.dropped) == 0
    assert torch.equal(torch.bincount(plan.token_index, minlength=n), torch.full((n,), k))
    cap = capacity(n, e, k, 1.0)
    assert cap == 32
    capped = token_choice_plan(index, weight, e, capacity_factor=1.0)
    kept = capped.offsets.diff(prepend=capped.offsets.new_zeros(1))
    assert kept[0] == cap and int(capped.dropped) == n - cap  # expert 0 asked for n, keeps cap
    assert int(capped.dropped) + capped.token_index.numel() == n * k
    # first come first served: expert 0 keeps tokens 0..cap-1
    assert torch.equal(capped.token_index[:cap], torch.arange(cap))


def test_capacity_drops_are_reported_and_dropped_pairs_contribute_nothing() -> None:
    moe = make(capacity_factor=0.5)
    x = torch.randn(40, 16)
    out, aux = moe(x, return_aux=True)
    assert int(aux.dropped) > 0
    assert int(aux.tokens_per_expert.sum()) == 40 * 2
    dropless = make()
    routing = dropless.router(x)
    plan = token_choice_plan(routing.expert_index, routing.weight, 6, capacity_factor=0.5)
    torch.testing.assert_close(out, dropless.experts(x, plan))
    assert not torch.allclose(out, dropless(x))


def test_expert_choice_every_expert_takes_capacity_tokens() -> None:
    moe = make(routing="expert_choice", capacity_factor=1.0)
    x = torch.randn(30, 16)
    out, aux = moe(x, return_aux=True)
    cap = capacity(30, 6, 2, 1.0)
    assert torch.equal(aux.tokens_per_expert, torch.full((6,), cap))
    scores = moe.router.score(x)[1]
    plan = expert_choice_plan(scores, 2)
    chosen = torch.zeros(30, dtype=torch.bool)
    chosen[plan.token_index] = True
    assert int(aux.dropped) == int((~chosen).sum())
    assert float(aux.load_balancing_loss) == 0.0
    out[~chosen].abs().sum().backward()  # unchosen tokens get exactly zero
    assert torch.equal(out[~chosen], torch.zeros_like(out[~chosen]))


def test_load_balancing_loss_matches_hand_computation() -> None:
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    counts = torch.tensor([2, 1, 1])  # top-1 choices: 0, 1, 0, 2
    f = torch.tensor([2 / 4, 1 / 4, 1 / 4])
    p = scores.mean(0)
    assert torch.isclose(load_balancing_loss(scores, counts), 3 * (f * p).sum())
    uniform = torch.full((8, 4), 0.25)
    assert torch.isclose(load_balancing_loss(uniform, torch.tensor([4, 4, 4, 4])), torch.tensor(2.0))  # = top_k


def test_load_balancing_loss_equals_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    moe = make(num_experts=8, top_k=3)
    x = torch.randn(50, 16)
    _, aux = moe(x, return_aux=True)
    ref = load_balancing_loss_func((aux.router_logits,), num_experts=8, top_k=3)
    torch.testing.assert_close(aux.load_balancing_loss, ref)


def test_router_z_loss_value() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (torch.log(torch.tensor(2.0)) ** 2 + torch.logsumexp(torch.tensor([1.0, 2.0]), 0) ** 2) / 2
    assert torch.isclose(router_z_loss(logits), expected)


def test_aux_losses_reach_the_router_and_nothing_is_stored_on_the_module() -> None:
    moe = make()
    before = set(vars(moe))
    _, aux = moe(torch.randn(20, 16), return_aux=True)
    assert set(vars(moe)) == before
    (aux.load_balancing_loss + aux.z_loss).backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    assert torch.isclose(aux.expert_load.sum(), torch.tensor(1.0))


def test_balance_bias_update_moves_load_towards_uniform() -> None:
    moe = make(scoring="sigmoid", balance_bias=True)
    moe.router.weight.data[0] += 0.5  # expert 0 is everybody's favourite
    x = torch.randn(256, 16)
    first = moe(x, return_aux=True)[1].tokens_per_expert
    for _ in range(200):
        moe.update_bias(moe(x, return_aux=True)[1].tokens_per_expert, rate=1e-2)
    last = moe(x, return_aux=True)[1].tokens_per_expert
    assert last.float().std() < first.float().std() / 2
    assert moe.router.expert_bias[0] < 0
    assert "router.expert_bias" in moe.state_dict()


def test_router_stays_fp32_in_bf16_and_under_autocast() -> None:
    moe = omnikit.create_model("moe_tiny", dtype=torch.bfloat16)
    assert moe.router.weight.dtype == torch.float32 and moe.experts.gate_up.dtype == torch.bfloat16
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    out, aux = moe(x, return_aux=True)
    assert out.dtype == torch.bfloat16 and aux.router_logits.dtype == torch.float32
    fp32 = omnikit.create_model("moe_tiny")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, aux = fp32(torch.randn(4, 32), return_aux=True)
    assert aux.router_logits.dtype == torch.float32


def test_row_layouts_agree_and_padding_rows_are_inert() -> None:
    a = torch.randn(12, 8)
    w = torch.randn(3, 8, 4)
    ragged = RowLayout(3, offsets=torch.tensor([4, 4, 12], dtype=torch.int32))  # expert 1 empty
    assert grouped_mm_native(a, w) and grouped_mm_native(torch.randn(4, 12).t(), a.t())
    assert not grouped_mm_native(a, torch.randn(3, 8, 5))  # 20-byte rows: the kernel refuses them
    out = ragged.mm(a, w)
    torch.testing.assert_close(out[4:], a[4:] @ w[2])
    g = torch.randn(12, 4)
    outer = ragged.outer(g, a)
    assert torch.equal(outer[1], torch.zeros(4, 8))
    torch.testing.assert_close(outer[0], g[:4].t() @ a[:4])
    padded = RowLayout(3, capacity=8)
    rows = torch.zeros(24, 8)
    rows[:4], rows[16:] = a[:4], a[4:]
    torch.testing.assert_close(padded.mm(rows, w)[16:], out[4:])
    gp = torch.zeros(24, 4)
    gp[:4], gp[16:] = g[:4], g[4:]
    torch.testing.assert_close(padded.outer(gp, rows), outer)
    into = torch.full((5, 4, 8), float("nan"))
    assert padded.outer(gp, rows, out=into[0:5:2]).data_ptr() == into.data_ptr()  # written in place
    torch.testing.assert_close(into[0:5:2], outer)
    ragged.outer(g, a, out=into[1:4])
    torch.testing.assert_close(into[1:4], outer)


def test_row_layout_chunks_cover_every_expert_and_row_once() -> None:
    ragged = RowLayout(5, offsets=torch.tensor([3, 3, 10, 12, 20], dtype=torch.int32))
    chunks = ragged.chunks(max_rows=5)
    assert [(c.experts.start, c.experts.stop) for c in chunks] == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert [(c.rows.start, c.rows.stop) for c in chunks] == [(0, 3), (3, 10), (10, 12), (12, 20)]
    assert chunks[0].layout.offsets.tolist() == [3, 3]  # offsets restart at each chunk
    assert chunks[3].layout.offsets.tolist() == [8]
    a, w = torch.randn(20, 8), torch.randn(5, 8, 4)
    joined = torch.cat([c.layout.mm(a[c.rows], w[c.experts]) for c in chunks])
    torch.testing.assert_close(joined, ragged.mm(a, w))
    padded = RowLayout(5, capacity=4).chunks(max_rows=9)
    assert [(c.experts.start, c.experts.stop, c.rows.start, c.rows.stop) for c in padded] == [
        (0, 2, 0, 8), (2, 4, 8, 16), (4, 5, 16, 20)
    ]
    assert padded[-1].layout.num_experts == 1
    (whole,) = ragged.chunks(None)
    assert whole.layout is ragged and whole.experts == slice(0, 5)


def test_pair_experts_pairs_near_equal_loads_as_weight_views() -> None:
    loads = [5, 0, 9, 4, 8, 0, 1]
    chunks, first_slot = pair_experts(loads)
    # by load: 2 (9), 4 (8), 0 (5), 3 (4), 6 (1), then the empty 1 and 5, alone the last
    assert [(c.experts.start, c.experts.stop, c.experts.step) for c in chunks] == [
        (2, 5, 2), (0, 4, 3), (1, 7, 5), (5, 6, 1)
    ]
    assert [c.layout.capacity for c in chunks] == [9, 5, 1, 0]
    assert [(c.rows.start, c.rows.stop) for c in chunks] == [(0, 18), (18, 28), (28, 30), (30, 30)]
    assert first_slot == [18, 28, 0, 23, 9, 30, 29]
    w = torch.randn(7, 3, 2)
    pair = w[chunks[1].experts]
    assert pair.data_ptr() == w[0].data_ptr() and torch.equal(pair[1], w[3])
    assert pair_experts([3]) == ([pair_experts([3])[0][0]], [0]) and pair_experts([3])[0][0].layout.num_experts == 1


def outputs_and_grads(moe: MoE, x: torch.Tensor) -> list[torch.Tensor]:
    """``moe(x)`` and the gradients of ``x`` and every parameter under a fixed random output gradient."""
    xg = x.clone().requires_grad_()
    out = moe(xg)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    return [out, xg.grad, *(p.grad for p in moe.parameters())]


def assert_all_equal_first(results: list[list[torch.Tensor]]) -> None:
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens", [2, 40])
def test_paired_experts_equal_one_ragged_chunk_with_grads(monkeypatch, tokens: int) -> None:
    """Pairs (padded bmm, empty experts and pairs included at 2 tokens) == ragged rows in one chunk."""
    x = torch.randn(1, tokens, 16)
    results = []
    for gemm, chunk_bytes in (("ragged", None), ("paired", None), ("auto", 1)):
        monkeypatch.setattr(experts_module, "CPU_CHUNK_BYTES", chunk_bytes)
        moe = make(expert_gemm=gemm, num_experts=9, top_k=2, shared_hidden=8)
        if gemm == "auto":  # on the CPU, more rows than a chunk holds go in pairs
            assert all(c.layout.num_experts <= 2 for c in moe.experts.arrange(x[0], moe.plan(x[0])[0])[2])
        results.append(outputs_and_grads(moe, x))
    assert_all_equal_first(results)


@pytest.mark.parametrize("gemm", ["ragged", "padded"])
@pytest.mark.parametrize("capacity_factor", [None, 0.7])
def test_chunked_experts_equal_one_chunk_with_grads(monkeypatch, gemm: str, capacity_factor) -> None:
    """Many chunks (index_add_ sums) == one chunk (embedding_bag sums), outputs and every gradient."""
    x = torch.randn(2, 37, 16)
    results = []
    for chunk_bytes in (None, 1, 16 * 16 * 4):  # one chunk; one expert per chunk; ~16 rows per chunk
        monkeypatch.setattr(experts_module, "CPU_CHUNK_BYTES", chunk_bytes)
        moe = make(expert_gemm=gemm, capacity_factor=capacity_factor, num_experts=7, top_k=3)
        results.append(outputs_and_grads(moe, x))
    assert_all_equal_first(results)


@pytest.mark.parametrize("capacity_factor", [None, 0.6])
def test_padded_paired_and_ragged_moe_agree_with_grads(capacity_factor) -> None:
    x = torch.randn(3, 11, 16)
    layouts = ("ragged", "padded", "paired")
    moes = [make(expert_gemm=g, capacity_factor=capacity_factor, shared_hidden=8) for g in layouts]
    assert_all_equal_first([outputs_and_grads(moe, x) for moe in moes])


@pytest.mark.parametrize("capacity_factor", [None, 0.6])
def test_fullgraph_compiled_moe_equals_eager_with_grads(capacity_factor) -> None:
    """The traced path (ragged rows, ``omnikit::grouped_mm``, overflow kept at weight 0) == eager."""
    x = torch.randn(3, 11, 16)
    moe = make(capacity_factor=capacity_factor, shared_hidden=8, num_experts=5)
    torch._dynamo.reset()
    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    assert_all_equal_first([outputs_and_grads(moe, x), outputs_and_grads(compiled, x)])


def test_grouped_mm_operator_matches_per_expert_products_and_grads() -> None:
    rows, weight = torch.randn(9, 4, requires_grad=True), torch.randn(3, 4, 5, requires_grad=True)
    offsets = torch.tensor([4, 4, 9], dtype=torch.int32)  # an expert with no rows
    out = grouped_mm(rows, weight, offsets)
    ref = torch.cat([rows[:4] @ weight[0], rows[4:] @ weight[2]])
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, [rows, weight], grad), torch.autograd.grad(ref, [rows, weight], grad)):
        torch.testing.assert_close(a, b)


def test_moe_in_decoder_block_and_decoder() -> None:
    block = DecoderBlock(32, 4, mlp=omnikit.create_model("moe_tiny"))
    x = torch.randn(2, 6, 32)
    assert block(x).shape == x.shape
    config = DecoderConfig(dim=32, depth=2, num_heads=4)
    decoder = Decoder(
        config, mlp_factory=lambda i: omnikit.create_model("moe_shared_tiny") if i % 2 else SwiGLU(32, 64)
    )
    out = decoder(x)
    out.square().mean().backward()
    assert decoder.blocks[1].mlp.experts.gate_up.grad is not None


def test_expert_load_plot_is_written(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_expert_load([torch.tensor([3, 1, 0, 4]), torch.tensor([2, 2, 2, 2])], tmp_path / "load.png",
                            labels=["a", "b"])
    assert path.stat().st_size > 1000


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"top_k": 7}, ValueError, "`top_k` expected at most num_experts=6 but got 7"),
        ({"scoring": "relu"}, ValueError, "`scoring` expected one of"),
        ({"routing": "random"}, ValueError, "`routing` expected one of"),
        ({"capacity_factor": 0.0}, ValueError, "`capacity_factor`"),
        ({"shared_gate": True}, ValueError, "`shared_gate=True` needs a shared expert"),
        ({"expert_hidden": 0}, ValueError, "`expert_hidden` expected an int > 0 but got 0"),
        ({"num_experts": 2.5}, TypeError, "`num_experts` expected an int"),
    ],
)
def test_bad_config_raises_naming_the_argument(kw, error, match) -> None:
    with pytest.raises(error, match=match):
        make(**kw)


def test_bad_input_raises_naming_the_argument() -> None:
    moe = make()
    with pytest.raises(ValueError, match=r"`x` expected shape \(\.\.\., 16\) but got \(2, 3, 8\)"):
        moe(torch.randn(2, 3, 8))
    with pytest.raises(TypeError, match="`x` expected a floating-point tensor"):
        moe(torch.ones(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="update_bias needs a router built with `balance_bias=True`"):
        moe.update_bias(torch.ones(6))
    with pytest.raises(ValueError, match=r"`tokens_per_expert` expected shape \(6,\)"):
        make(balance_bias=True).update_bias(torch.ones(5))


def test_published_presets_build_on_meta() -> None:
    moe = omnikit.create_model("qwen3_30b_a3b_moe", device="meta")
    assert tuple(moe.experts.gate_up.shape) == (128, 2 * 768, 2048) and moe.router.top_k == 8
    talker = omnikit.create_model("qwen3_omni_talker_moe", device="meta")
    assert talker.shared is not None and talker.shared_gate is not None
    assert omnikit.count_parameters(omnikit.create_model("qwen3_omni_thinker_moe", device="meta")) == (
        128 * 3 * 2048 * 768 + 128 * 2048
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("gemm", ["ragged", "padded", "paired"])
def test_cuda_bf16_moe_matches_fp32_cpu_reference(gemm: str) -> None:
    moe = make(dim=64, num_experts=8, top_k=2, expert_hidden=32, shared_hidden=32, expert_gemm=gemm)
    x = torch.randn(4, 50, 64)
    ref = moe(x)
    gpu = MoE(moe.config).cuda()
    gpu.load_state_dict(moe.state_dict())
    omnikit.utils.precision.cast_model(gpu, torch.bfloat16)
    xg = x.cuda().bfloat16().requires_grad_()
    out = gpu(xg)
    error = torch.linalg.norm(out.float().cpu() - ref) / torch.linalg.norm(ref)
    assert error < 0.03, f"bf16 CUDA differs from the fp32 CPU reference by {error:.3%}"  # a near-tie may re-route
    out.float().square().mean().backward()
    assert torch.isfinite(xg.grad).all() and gpu.router.weight.dtype == torch.float32
