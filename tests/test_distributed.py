"""omnikit.distributed on gloo, CPU: every strategy equals one process (loss and gradients, float32).

Each world size is one launch of ``tests/dist_worker.py`` running several scenarios; collectives
time out after 60 s and the launch after 240 s, so a hang fails. The quick set runs by default
(one test), the rest under ``-m slow``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_worker import PROBE, tiny_omni_thinker

import omnikit
from omnikit.convert import load_hf
from omnikit.distributed import ParallelPlan, collect_plan, register_parallel_plan
from omnikit.distributed.checkpoint import load_distributed
from omnikit.distributed.mesh import check_mesh

WORKER = Path(__file__).with_name("dist_worker.py")
TOL = 1e-5

QUICK = {
    4: ["checkpoint", "decoder/dp_shard_x_tp", "moe_skew/dp_shard_x_ep", "decoder_mha/tp4", "decoder/tp4"],
    2: ["checkpoint", "resume", "decoder/dp_shard", "decoder/tp", "moe_skew/ep", "omni/dp_shard",
        "thinker_talker/dp_shard", "decoder_ckpt_compile/dp_shard", "omni_thinker/dp_shard",
        "qwen3_omni_thinker/dp_shard"],
}
#: the slow set in launches of a few scenarios each (world size, scenarios), so each stays well inside its timeout
SLOW = [
    (4, ["decoder/hsdp", "moe/dp_shard_x_ep", "omni/dp_shard4", "omni/dp_shard_x_tp", "thinker_talker/dp_shard_x_tp",
         "moe_ckpt/dp_shard_x_ep"]),
    (4, ["qwen3_omni_thinker/dp_shard_x_ep", "omni_thinker/dp_shard_x_tp", "moe_skew/dp_replicate_x_ep",
         "moe_skew/ep_x_tp", "qwen3_omni_thinker/ep_x_tp", "moe_skew/dp_shard_x_tp"]),
    (2, ["moe_skew_compile/ep", "decoder/dp_replicate", "moe/ep", "omni/tp", "thinker_talker/tp",
         "decoder_bf16/dp_shard", "xattn/dp_shard", "omni_text/dp_shard"]),
    (2, ["xattn_text/dp_shard", "moe/dp_shard", "moe/tp", "moe/dp_replicate", "omni_thinker_text/dp_shard",
         "qwen2_5_omni_talker_tiny/dp_shard", "qwen3_omni_talker_tiny/dp_shard", "qwen3_omni_talker_tiny/ep"]),
    (2, ["qwen3_vit_tiny/dp_shard", "qwen2_5_omni_vision_tiny/dp_shard", "qwen2_5_omni_vision_tiny/tp",
         "code2wav_tiny/dp_shard", "omni_thinker_mixed/tp", "qwen3_omni_thinker_mixed/tp", "moe_skew/tp"]),
    (2, ["qwen3_next/dp_shard", "qwen3_next/tp", "qwen3_next/ep"]),
    (2, ["qwen3_5_vl/dp_shard", "qwen3_5_vl/tp", "qwen3_5_vl/ep"]),
]

#: scenarios whose fp32 rounding exceeds TOL: the Gated DeltaNet's dt_bias / A_log gradients sum many cancelling
#: terms (in one process their fp32 gradient is already 8e-6 from float64), so any other summation order moves
#: them by a few times that: tensor parallel left dt_bias 3.4e-5 from the one-process gradient, expert parallel
#: (another order of the routed rows) 2.0e-5
LOOSER = {"qwen3_5_vl/tp": 1e-4, "qwen3_5_vl/ep": 1e-4, "qwen3_5_vl/dp_shard": 1e-4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, names: list[str], out: Path, backend: str = "gloo") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "OMNIKIT_DIST_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(world), str(_free_port()), str(out), *names],
        env=env, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / f"results_{world}.json").read_text())


def _check(name: str, result: dict, tol: float = TOL) -> None:
    assert "error" not in result, f"{name}: {result.get('error')}"
    assert result["loss_rel"] <= tol, (name, result)
    assert result["grad_rel"] <= tol, (name, result)
    assert result["missing_grads"] == [], (name, result)
    assert result["names_equal"] and result["state_equal"], (name, result)
    assert result["sharded_params"] > 0 and result["dtensor_grads"], (name, result)


def test_quick_strategies_match_one_process_and_checkpoints_reshard(tmp_path: Path) -> None:
    """One launch per world size (one test, so that pytest-xdist runs them once, in order): every
    quick scenario matches one process; world 4 saves a DCP checkpoint that world 2 and one
    process load bit for bit; world 2 exports a load_hf model sharded by FSDP with export_hf, and
    transformers' from_pretrained (and load_hf) of the export give the original's logits."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen3Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    hub = transformers.Qwen3ForCausalLM(config).eval()
    hub.save_pretrained(tmp_path / "hf_snapshot")
    results = {4: _launch(4, QUICK[4], tmp_path)}
    results[2] = _launch(2, QUICK[2], tmp_path)
    refused = "decoder/tp4"  # 2 key/value heads cannot be split over 4 ranks
    assert "`mesh['tp']` size 4 must divide the attention's key/value heads (2)" in results[4][refused]["error"]
    for world, names in QUICK.items():
        for name in names:
            if name not in ("checkpoint", "resume", refused):
                _check(name, results[world][name])
    # expert parallel where every token goes to rank 0's experts: rank 1 receives none
    for world, name in ((2, "moe_skew/ep"), (4, "moe_skew/dp_shard_x_ep")):
        received = results[world][name]["rows_received_per_ep_rank"]
        assert received[0] > 0 and received[1] == 0, (name, received)
    assert results[2]["decoder_ckpt_compile/dp_shard"]["compiled_graphs"] > 0
    assert results[2]["decoder/dp_shard"]["compiled_graphs"] == 0  # the scenarios before it compile nothing
    # LoRA + AdamW + LambdaLR under FSDP: resumed at step 3 == uninterrupted to step 6, bit for bit
    assert results[2]["resume"] == {"adapters": 20, "bit_exact": True}
    assert results[2]["checkpoint"]["bit_exact"]
    assert results[2]["checkpoint"]["tp_logits_rel"] <= TOL
    model = omnikit.create_model("decoder_tiny", tie_embeddings=True)
    load_distributed(model, tmp_path / "dcp")
    with torch.no_grad():  # the checkpoint holds the unwrapped q/k/v row order: the same logits in one process
        torch.testing.assert_close(model(PROBE), torch.load(tmp_path / "logits.pt"), rtol=1e-5, atol=1e-6)
    expected = torch.load(tmp_path / "expected.pt")
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)
    exported = omnikit.load_pretrained(tmp_path / "pretrained").state_dict()
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
    assert len(list((tmp_path / "hf_export").glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(4))
    again = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path / "hf_export").eval()
    with torch.no_grad():
        want = hub(input_ids=ids).logits
        torch.testing.assert_close(again(input_ids=ids).logits, want, rtol=0, atol=0)
        torch.testing.assert_close(load_hf(tmp_path / "hf_export")(ids), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("world", "scenarios"), SLOW, ids=[f"world{w}-{i}" for i, (w, _) in enumerate(SLOW)])
def test_more_strategies_match_one_process(world: int, scenarios: list[str], tmp_path: Path) -> None:
    results = _launch(world, scenarios, tmp_path)
    for scenario in scenarios:
        # bf16 parameters (fp32 reduction) against the fp32 reference: bf16 rounding
        _check(scenario, results[scenario], 5e-2 if "bf16" in scenario else LOOSER.get(scenario, TOL))
    for name in ("moe_skew/dp_replicate_x_ep", "moe_skew/ep_x_tp", "moe_skew_compile/ep"):
        if name in results:  # every token routed to ep rank 0's experts
            assert results[name]["rows_received_per_ep_rank"][1] == 0, (name, results[name])
    if "decoder_bf16/dp_shard" in results:
        assert results["decoder_bf16/dp_shard"]["grad_rel"] > 1e-4  # it did compute in bf16
    if "moe_skew_compile/ep" in results:  # compiled MoE blocks under ep (graph breaks at the host splits)
        assert results["moe_skew_compile/ep"]["compiled_graphs"] > 0


@pytest.mark.slow
def test_example_trains_under_torchrun() -> None:
    root = Path(__file__).parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
         "examples/train_distributed.py", "--steps", "3"],
        env=env, capture_output=True, text=True, timeout=240, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = {name: [float(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith(name)]
              for name in ("omni_early_tiny", "hybrid_moe_tiny")}
    assert all(len(v) == 3 and all(x == x for x in v) for v in losses.values()), proc.stdout
    assert losses["omni_early_tiny"][-1] < losses["omni_early_tiny"][0]  # the same batch every step: it fits


def test_plans_compose_from_declared_parts() -> None:
    model = omnikit.create_model("omni_early_tiny")
    plan = collect_plan(model)
    blocks = list(model.thinker.decoder.blocks)
    assert all(b in plan.fsdp_units for b in blocks) and model.audio in plan.fsdp_units
    assert plan.fsdp_units.index(blocks[0]) < plan.fsdp_units.index(model.audio)  # deepest first
    assert "thinker.decoder.blocks.1.mlp.down" in plan.tp and "thinker.lm_head" in plan.tp
    tied = collect_plan(omnikit.create_model("thinker_talker_tiny")).tied
    assert tied == [("omni.thinker.lm_head.weight", "omni.thinker.embed.weight")]


def test_fusion_adapters_are_units_of_every_fusion_style() -> None:
    """The adapters' plan is on the shared mixin (``HoldsAdapters``): cross-attention fusion gets it too."""
    for name in ("omni_early_tiny", "omni_xattn_tiny"):
        model = omnikit.create_model(name)
        units = collect_plan(model).fsdp_units
        assert model.adapters and all(a in units for a in model.adapters.values()), name


def test_distributed_holds_strategies_and_imports_no_model_family() -> None:
    import ast

    families = ("audio", "vision", "video", "models", "speech", "fusion")
    for path in (Path(__file__).parents[1] / "omnikit" / "distributed").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("omnikit."):
                assert node.module.split(".")[1] not in families, (path.name, node.module)


def test_a_new_class_plugs_in_by_registering_a_plan() -> None:
    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    register_parallel_plan(Pair)(lambda m: ParallelPlan(fsdp_units=[m.a]))
    outer = torch.nn.Sequential(Pair())
    assert collect_plan(outer).fsdp_units == [outer[0].a]


def test_unsupported_meshes_are_refused() -> None:
    class Named:
        def __init__(self, *names: str) -> None:
            self.mesh_dim_names = names

    with pytest.raises(ValueError, match="'ep' and 'tp' takes no other dimension"):
        check_mesh(Named("dp_shard", "ep", "tp"))
    with pytest.raises(ValueError, match="at most one of 'dp_replicate', 'dp_shard'"):
        check_mesh(Named("dp_replicate", "dp_shard", "ep"))
    assert check_mesh(Named("ep", "tp")) == ("ep", "tp")
    with pytest.raises(ValueError, match="subset"):
        check_mesh(Named("data"))
    with pytest.raises(ValueError, match="order"):
        check_mesh(Named("tp", "dp_shard"))


def test_absent_media_dummy_changes_nothing_and_gives_zero_gradients() -> None:
    model = omnikit.create_model("omni_early_tiny")
    inputs = model.contract_inputs([12, 12]).kwargs
    inputs = {k: v for k, v in inputs.items() if k not in ("audio_features", "audio_lengths")}
    inputs["input_ids"] = inputs["input_ids"].masked_fill(inputs["input_ids"] == 3, 9)
    plain = model(**inputs)
    model.run_absent_media = True
    with_dummy = model(**inputs)
    torch.testing.assert_close(with_dummy, plain, rtol=0, atol=0)
    with_dummy.sum().backward()
    audio_grads = [p.grad for p in model.audio.parameters()]
    assert all(g is not None and not g.any() for g in audio_grads)


def test_absent_media_dummy_uses_the_encoders_contract_inputs() -> None:
    """Early fusion with a VideoViT whose merger sets its grid, and the Qwen3-Omni AuT encoder."""
    from omnikit.fusion.adapters import AudioAdapter, VideoAdapter
    from omnikit.fusion.models import _TINY_THINKER, QWEN2_5_OMNI_TINY, TINY_TOKENS
    from omnikit.fusion.omni import EarlyFusionOmni
    from omnikit.fusion.thinker import Thinker
    from omnikit.layers.decoder import DecoderConfig

    thinker = Thinker(DecoderConfig(**_TINY_THINKER), media_tokens=TINY_TOKENS)
    vit = omnikit.create_model("video_vit_tiny", out_dim=64)
    (pt, ph, pw), m = vit.config.patch, vit.config.merge_size or 1
    grid = lambda shape: (-(-shape[1] // pt), shape[3] // (ph * m), shape[4] // (pw * m))
    video = VideoAdapter(vit, 64, project=False, grid=grid, frames_per_step=pt)
    audio = AudioAdapter(omnikit.create_model("qwen3_omni_aut_tiny"), 64)
    model = EarlyFusionOmni(thinker, video=video, audio=audio, scheme=QWEN2_5_OMNI_TINY)
    ids = torch.randint(8, 256, (1, 10))
    plain = model(ids)
    model.run_absent_media = True
    out = model(ids)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    out.sum().backward()
    grads = [p.grad for p in [*model.video.parameters(), *model.audio.parameters()]]
    assert all(g is not None and not g.any() for g in grads)


@pytest.mark.parametrize("qwen3", [False, True])
def test_omni_thinker_absent_towers_change_nothing_and_get_zero_gradients(qwen3: bool) -> None:
    """OmniThinker / Qwen3OmniThinker on text only: with ``run_absent_media`` both towers run (the
    vision tower at the image and the video slot), the logits are unchanged, their gradients zero."""
    model = tiny_omni_thinker(qwen3)
    ids = torch.randint(8, 256, (2, 10))
    plain = model(ids)
    calls = []
    model.vision_encoder.forward_patches = _counting(model.vision_encoder.forward_patches, calls)
    model.run_absent_media = True
    out = model(ids)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    assert len(calls) == 2
    out.sum().backward()
    grads = [p.grad for p in [*model.vision_encoder.parameters(), *model.audio_encoder.parameters()]]
    assert all(g is not None and not g.any() for g in grads)


def _counting(method, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return method(*args, **kwargs)

    return counted


def test_memory_table_in_the_docs_lists_every_published_preset() -> None:
    """docs/distributed.md's table is regenerated by ``python -m omnikit.distributed.memory``; a preset
    published since then (or renamed) must be added to it."""
    from omnikit.distributed.memory import published_presets

    docs = (Path(__file__).parents[1] / "docs" / "distributed.md").read_text()
    listed = {line.split("|")[1].strip() for line in docs.splitlines() if " | DDP | 8 |" in line}
    assert listed == set(published_presets())


def test_head_split_order_puts_each_ranks_heads_together_and_indivisible_degrees_are_refused() -> None:
    from omnikit.distributed.heads import HeadParallelQKV, head_split_order
    from omnikit.distributed.tp_experts import ExpertTensorParallel

    # 4 query heads, 2 kv heads, head_dim 1: rows q0 q1 q2 q3 k0 k1 v0 v1
    assert head_split_order(4, 2, 1, 2).tolist() == [0, 1, 4, 6, 2, 3, 5, 7]
    assert head_split_order(4, 2, 3, 1).tolist() == list(range(24))

    class Mesh:
        def size(self) -> int:
            return 4

    with pytest.raises(ValueError, match=r"`mesh\['tp'\]` size 4 must divide the attention's key/value heads \(2\)"):
        HeadParallelQKV(4, 2, 16).check(Mesh())
    with pytest.raises(ValueError, match=r"`mesh\['tp'\]` size 4 must divide the experts' hidden width, got 6"):
        ExpertTensorParallel(6).check(Mesh())
