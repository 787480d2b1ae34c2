"""Context parallel ("cp" mesh dimension) on gloo: loss and gradients equal one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import omnikit
from omnikit.distributed.cp import apply_context_parallel, cp_media_rows, cp_positions
from omnikit.distributed.mesh import check_mesh
from omnikit.layers import Attention
from omnikit.layers.linear_attention import (
    GatedDeltaNet,
    gated_delta_rule_recurrent,
    gated_delta_rule_transition,
    l2_normalize,
)

WORKER = Path(__file__).with_name("cp_worker.py")
TOL = 1e-5
#: The Gated DeltaNet's A_log and dt_bias gradients are tiny (norm ~1e-5), sums of cancelling terms computed in
#: float32 inside the layer whatever the model's dtype: in ONE process, the sum of A_log's gradients over the 4
#: shards' positions differs from the gradient of the whole loss by 2.7e-5 (relative); cp, which also passes
#: the state in a different association order, measures 1.3e-5 at most (dt_bias, cp 4).
HYBRID_GRAD_TOL = 1e-4
LAUNCHES = {
    2: ["dense/cp", "moe/cp", "thinker/cp", "hybrid/cp", "omni/cp", "qwen3_omni/cp", "qwen3_5_vl/cp",
        "qwen3_5_omni/cp"],
    4: ["dense/cp4", "dense/dp_shard_x_cp", "moe/dp_shard_x_cp", "thinker/dp_shard_x_cp", "hybrid/cp4",
        "hybrid/dp_shard_x_cp", "qwen3_omni/cp4", "qwen3_5_vl/cp4", "qwen3_5_omni/cp4"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_positions_are_load_balanced() -> None:
    assert cp_positions(8, (0, 2)).tolist() == [0, 1, 6, 7]
    assert cp_positions(8, (1, 2)).tolist() == [2, 3, 4, 5]
    every = torch.cat([cp_positions(16, (r, 4)) for r in range(4)])
    assert sorted(every.tolist()) == list(range(16))
    causal_work = [int(cp_positions(16, (r, 4)).add(1).sum()) for r in range(4)]  # keys each rank's queries see
    assert len(set(causal_work)) == 1
    with pytest.raises(ValueError, match="multiple of 2 \\* cp = 4"):
        cp_positions(6, (0, 2))


def test_media_rows_follow_their_placeholders_into_the_shard() -> None:
    placeholders = torch.zeros(2, 8, dtype=torch.bool)
    placeholders[0, 1:3] = True  # rows 0, 1: positions 1, 2 (rank 0 and rank 1 at cp 2)
    placeholders[1, 5:7] = True  # rows 2, 3: positions 5, 6 (rank 1 and rank 0)
    assert cp_media_rows(placeholders, cp_positions(8, (0, 2))).tolist() == [0, 3]
    assert cp_media_rows(placeholders, cp_positions(8, (1, 2))).tolist() == [1, 2]
    with pytest.raises(ValueError, match="placeholders"):
        cp_media_rows(placeholders.long(), torch.arange(4))


def test_unsupported_combinations_are_refused() -> None:
    class Named:
        def __init__(self, *names: str) -> None:
            self.mesh_dim_names = names

    assert check_mesh(Named("dp_shard", "cp")) == ("dp_shard", "cp")
    for names in (("cp", "tp"), ("dp_replicate", "cp"), ("cp", "ep")):
        with pytest.raises(ValueError, match="'cp' takes at most 'dp_shard'"):
            check_mesh(Named(*names))
    with pytest.raises(TypeError, match="no decoder"):
        apply_context_parallel(omnikit.create_model("moe_tiny"), None)
    attn = Attention(16, 2)
    attn.context_parallel = object()
    with pytest.raises(ValueError, match="context parallel attention takes no padding"):
        attn(torch.randn(1, 4, 16), key_padding_mask=torch.ones(1, 4, dtype=torch.bool))


def test_delta_rule_piece_is_affine_in_its_entering_state() -> None:
    """What the DeltaNet layers pass between ranks: one run from a zero state gives the piece's outputs and
    final state for any entering state (7 steps in chunks of 3: a padded last chunk)."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4, generator=g), l2_normalize(torch.randn(2, 3, 7, 4, generator=g))
    v, entering = torch.randn(2, 3, 7, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    decay, beta = -torch.rand(2, 3, 7, generator=g), torch.rand(2, 3, 7, generator=g)
    want_out, want_state = gated_delta_rule_recurrent(q, k, v, decay, beta, entering)
    out0, basis, final, transition = gated_delta_rule_transition(q, k, v, decay, beta, chunk_size=3, backend="torch")
    assert transition.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out0 + basis @ entering, want_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(transition @ entering + final, want_state, rtol=0, atol=1e-5)


def test_context_parallel_delta_net_refuses_what_it_cannot_split() -> None:
    layer = GatedDeltaNet(16, 2)
    layer.context_parallel = object()
    with pytest.raises(ValueError, match="takes no padding mask"):
        layer(torch.randn(1, 4, 16), key_padding_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="two equal pieces but got length 3"):
        layer(torch.randn(1, 3, 16))


def save_published_thinker(out_dir: Path) -> bool:
    """A tiny random transformers Qwen2.5-Omni Thinker saved in shards, and processor inputs of two unpadded
    24-token rows (row 0: image placeholders at 4-9 and audio at 14-20, across the shard boundaries 6 and 18 at
    cp 2; row 1: audio at 3-6, image at 11-16), for the worker's ``omni`` case. False without transformers."""
    try:
        from test_convert_hub_qwen2_5_omni import THINKER, Prompt, randomise
        from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni, modeling_qwen2_5_omni
    except ImportError:
        return False
    torch.manual_seed(0)
    config = configuration_qwen2_5_omni.Qwen2_5OmniThinkerConfig(**THINKER)
    randomise(modeling_qwen2_5_omni.Qwen2_5OmniThinkerForConditionalGeneration(config)).save_pretrained(
        out_dir / "omni_thinker", max_shard_size="40KB")
    prompt = Prompt(7)
    prompt.rows.append(prompt.text(3) + prompt.image(16, 24) + prompt.text(2) + prompt.audio(30) + prompt.text(2))
    prompt.rows.append(prompt.text(2) + prompt.audio(17) + prompt.text(1) + prompt.image(24, 16) + prompt.text(7))
    batch = prompt.batch()
    assert batch.pop("attention_mask").all() and batch["input_ids"].shape == (2, 24)
    torch.save(batch, out_dir / "omni_batch.pt")
    return True


def save_qwen3_omni_thinker(out_dir: Path) -> bool:
    """A tiny random transformers Qwen3-Omni Thinker (deepstack vision tower, AuT, MoE text model) saved alone in
    shards, for the worker's ``qwen3_omni`` case (it writes its own prompts). False without transformers."""
    try:
        from qwen3_omni_reference import TINY_FULL, randomise
        from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe, modeling_qwen3_omni_moe
    except ImportError:
        return False
    torch.manual_seed(0)
    config = configuration_qwen3_omni_moe.Qwen3OmniMoeThinkerConfig(**TINY_FULL["thinker_config"])
    randomise(modeling_qwen3_omni_moe.Qwen3OmniMoeThinkerForConditionalGeneration(config), scale=0.3).save_pretrained(
        out_dir / "qwen3_omni_thinker", max_shard_size="60KB")
    return True


#: Cases read from checkpoints the test saves (skipped without transformers).
SAVED = {"omni/": save_published_thinker, "qwen3_omni/": save_qwen3_omni_thinker}


@pytest.mark.parametrize("world", sorted(LAUNCHES))
def test_cp_equals_one_process(world: int, tmp_path: Path) -> None:
    """Dense and MoE decoders, an M-RoPE Thinker whose audio item crosses the shard boundary, the published
    Qwen2.5-Omni Thinker (load_hf; its image and audio items cross shard boundaries; cp 2), the published
    Qwen3-Omni Thinker (load_hf; deepstack features follow the image and video tokens into the shards) and the
    hybrid Thinkers (qwen3_5_vl_tiny, qwen3_5_omni_tiny's Thinker) with items across the boundaries, their media
    towers each encoding a share of the items (cp 2 and 4), the
    hybrid Gated DeltaNet + attention MoE stack (its state passed across the ranks; at cp 4 a piece is 2 steps,
    shorter than the convolution's 3-step history), cp over 2 and 4 ranks and dp_shard x cp (FSDP over both)."""
    saved = {prefix: save(tmp_path) for prefix, save in SAVED.items()
             if any(n.startswith(prefix) for n in LAUNCHES[world])}
    names = [n for n in LAUNCHES[world] if saved.get(n[: n.index("/") + 1], True)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(world), str(_free_port()), str(tmp_path), *names],
        env=env, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / f"cp_{world}.json").read_text())
    for name in names:
        result = results[name]
        assert "error" not in result, f"{name}: {result.get('error')}"
        grad_tol = HYBRID_GRAD_TOL if name.startswith(("hybrid", "qwen3_5")) else TOL  # Gated DeltaNet layers
        assert result["loss_rel"] <= TOL and result["out_rel"] <= TOL and result["grad_rel"] <= grad_tol, (name, result)
        assert result["missing_grads"] == [], (name, result)
        assert result["block_calls"] > 0, (name, "the mask-free attention path was not taken")
        # the omni Thinkers' vision towers encode a round-robin share of the items (one process: all of them)
        assert result.get("vision_share", 0) <= 0.6, (name, result)
