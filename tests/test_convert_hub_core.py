"""load_hf / save_hf core: key maps, the Hub layout (shards, index, blob symlinks), parts, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from omnikit.convert import architectures as registry
from omnikit.convert import load as load_module
from omnikit.convert import load_hf, save_hf, supported_architectures
from omnikit.convert import snapshot as snapshot_module
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip, StackExperts
from omnikit.layers.rotary import RotaryEmbedding


class TwoTowers(nn.Module):
    """A model with two parts and a non-persistent buffer (which meta building must keep real)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.experts = nn.Parameter(torch.empty(3, 6, 4))
        self.rotary = RotaryEmbedding(4)


class OneLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 5)


def _tower_map(config: dict) -> KeyMap:
    return KeyMap((
        Fuse("qkv.weight", ("q.weight", "k.weight", "v.weight"), (4, 4, 4)),
        Fuse("qkv.bias", ("q.bias", None, "v.bias"), (4, 4, 4)),
        StackExperts("experts", ("experts.{e}.gate", "experts.{e}.up"), (3, 3)),
        Skip("rotary.inv_freq"),
    ))


@pytest.fixture
def two_parts():
    """Register ``TestTwoParts`` (parts ``tower`` under ``a.`` and ``head`` under ``b.``) for one test."""
    registry.register_architecture("TestTwoParts", parts={
        "tower": registry.Part(lambda c: TwoTowers(), _tower_map, prefix="a."),
        "head": registry.Part(lambda c: OneLayer(), lambda c: KeyMap((Rename("proj.{name}", "proj.{name}"),)),
                              prefix="b."),
    }, default_part="tower")
    yield
    del registry._ARCHITECTURES["TestTwoParts"]


def _tower_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = {"a.q.weight": (4, 4), "a.k.weight": (4, 4), "a.v.weight": (4, 4), "a.q.bias": (4,), "a.v.bias": (4,),
             "a.rotary.inv_freq": (2,)}
    names.update({f"a.experts.{e}.{w}": (3, 4) for e in range(3) for w in ("gate", "up")})
    return {k: torch.randn(*s, generator=g) for k, s in names.items()}


def _write_sharded(directory: Path, shards: list[dict[str, torch.Tensor]], architecture: str = "TestTwoParts") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    weight_map = {}
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _head_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"b.proj.weight": torch.randn(5, 4, generator=g), "b.proj.bias": torch.randn(5, generator=g)}


def test_keymap_plan_slices_fused_and_stacked_tensors():
    plan = _tower_map({}).plan({"qkv.weight": (12, 4), "qkv.bias": (12,), "experts": (3, 6, 4)})
    assert [(p.source, p.index) for p in plan["qkv.bias"]] == [
        ("q.bias", ((0, 0, 4),)), (None, ((0, 4, 4),)), ("v.bias", ((0, 8, 4),))]
    assert [p.source for p in plan["experts"]][:3] == ["experts.0.gate", "experts.0.up", "experts.1.gate"]
    assert plan["experts"][1].shape((3, 6, 4)) == (3, 4)
    with pytest.raises(ValueError, match=r"'unknown.weight' has no rule"):
        _tower_map({}).plan({"unknown.weight": (1,)})


def test_keymap_reused_under_a_prefix_and_prefixed():
    nested = (_tower_map({}).under("audio.") + KeyMap((Rename("head.{p}", "lm_head.{p}"),))).prefixed("thinker.")
    plan = nested.plan({"audio.qkv.weight": (12, 4), "head.bias": (3,)})
    assert [p.source for p in plan["audio.qkv.weight"]] == ["thinker.q.weight", "thinker.k.weight", "thinker.v.weight"]
    assert [p.source for p in plan["head.bias"]] == ["thinker.lm_head.bias"]
    assert nested.skipped("thinker.rotary.inv_freq") and not nested.skipped("rotary.inv_freq")


def test_load_fuses_stacks_zero_fills_and_keeps_real_buffers(tmp_path, two_parts):
    tensors = _tower_tensors()
    _write_sharded(tmp_path, [dict(list(tensors.items())[:5]), dict(list(tensors.items())[5:]), _head_tensors()])
    model = load_hf(tmp_path)
    assert torch.equal(model.qkv.weight, torch.cat([tensors[f"a.{n}.weight"] for n in "qkv"]))
    assert torch.equal(model.qkv.bias, torch.cat([tensors["a.q.bias"], torch.zeros(4), tensors["a.v.bias"]]))
    assert torch.equal(model.experts[2], torch.cat([tensors["a.experts.2.gate"], tensors["a.experts.2.up"]]))
    assert torch.equal(model.rotary.inv_freq, RotaryEmbedding(4).inv_freq)  # computed, not the checkpoint's
    out = tmp_path / "back"
    save_hf(model, out)
    back = load_hf_files(out)
    assert set(back) == set(tensors) - {"a.rotary.inv_freq"}  # skipped and zero parts are not written
    assert all(torch.equal(back[k], tensors[k]) for k in back)


def load_hf_files(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_part_opens_only_its_shards(tmp_path, two_parts, monkeypatch):
    tensors = _tower_tensors()
    _write_sharded(tmp_path, [dict(list(tensors.items())[:5]), dict(list(tensors.items())[5:]), _head_tensors()])
    opened: list[str] = []
    real_open = snapshot_module.safe_open
    monkeypatch.setattr(snapshot_module, "safe_open", lambda path, **kw: opened.append(Path(path).name)
                        or real_open(path, **kw))
    head = load_hf(tmp_path, part="head")
    assert opened == ["model-00003-of-00003.safetensors"]
    assert torch.equal(head.proj.bias, _head_tensors()["b.proj.bias"])
    opened.clear()
    load_hf(tmp_path, part="tower")
    assert opened == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"]
    with pytest.raises(ValueError, match="'nope' is not a part of TestTwoParts; its parts: \\['head', 'tower'\\]"):
        load_hf(tmp_path, part="nope")


def test_hub_cache_symlinks_into_a_blob_store(tmp_path, two_parts):
    staging = tmp_path / "staging"
    _write_sharded(staging, [_tower_tensors(), _head_tensors()])
    blobs = tmp_path / "models--x--y" / "blobs"
    snap = tmp_path / "models--x--y" / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(staging.iterdir())):
        (blobs / f"sha{i}").write_bytes(f.read_bytes())
        os.symlink(Path("..", "..", "blobs", f"sha{i}"), snap / f.name)
    model = load_hf(snap, part="head")
    assert torch.equal(model.proj.weight, load_hf_files(staging)["b.proj.weight"])


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path, two_parts, monkeypatch):
    tensors = _tower_tensors()
    missing = {k: v for k, v in tensors.items() if k != "a.k.weight"}
    _write_sharded(tmp_path / "m", [missing])
    with pytest.raises(ValueError, match=r"missing \(1\): \['a.k.weight'\]"):
        load_hf(tmp_path / "m")
    _write_sharded(tmp_path / "u", [{**tensors, "a.extra": torch.zeros(1)}, _head_tensors()])
    with pytest.raises(ValueError, match=r"unexpected \(1\): \['a.extra'\]"):
        load_hf(tmp_path / "u")
    _write_sharded(tmp_path / "s", [{**tensors, "a.experts.1.up": torch.zeros(2, 4)}])
    reads: list[str] = []
    monkeypatch.setattr(load_module, "_read", lambda *a, **k: reads.append("read"))  # checked before reading
    with pytest.raises(ValueError, match=r"a.experts.1.up: checkpoint \(2, 4\) vs model \(3, 4\)"):
        load_hf(tmp_path / "s")
    assert reads == []


def test_unsupported_architecture_and_corrupt_files_are_named(tmp_path, two_parts):
    _write_sharded(tmp_path / "a", [_tower_tensors()], architecture="LlamaForCausalLM")
    with pytest.raises(ValueError, match=r"'LlamaForCausalLM' is not supported.*Qwen3ForCausalLM"):
        load_hf(tmp_path / "a")
    assert "Qwen3ForCausalLM" in supported_architectures()
    _write_sharded(tmp_path / "j", [_tower_tensors()])
    (tmp_path / "j" / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model.safetensors.index.json' is not valid JSON"):
        load_hf(tmp_path / "j")
    _write_sharded(tmp_path / "c", [_tower_tensors()])
    (tmp_path / "c" / "model-00001-of-00001.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(ValueError, match=r"model-00001-of-00001.safetensors' is not a readable safetensors file"):
        load_hf(tmp_path / "c")


def test_dtype_cast_keeps_fp32_modules(tmp_path, two_parts):
    _write_sharded(tmp_path, [_tower_tensors()])
    model = load_hf(tmp_path, dtype=torch.bfloat16)
    assert model.qkv.weight.dtype == torch.bfloat16 and model.experts.dtype == torch.bfloat16
    assert model.rotary.inv_freq.dtype == torch.float32
    with pytest.raises(ValueError, match="`device` cannot be 'meta'"):
        load_hf(tmp_path, device="meta")


def test_default_dtype_is_the_checkpoints(tmp_path, two_parts):
    _write_sharded(tmp_path, [{k: v.half() for k, v in _tower_tensors().items()}])
    model = load_hf(tmp_path)
    assert model.qkv.weight.dtype == torch.float16 and model.rotary.inv_freq.dtype == torch.float32
    assert torch.equal(model.qkv.bias[:4], _tower_tensors()["a.q.bias"].half())


def test_save_hf_shards_with_index_and_removes_stale_files(tmp_path, two_parts):
    _write_sharded(tmp_path / "src", [_tower_tensors()])
    model = load_hf(tmp_path / "src")
    out = tmp_path / "out"
    save_hf(model, out, max_shard_size=200)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and sorted(p.name for p in out.glob("*.safetensors")) == files
    assert not list(out.glob(".*tmp*"))
    save_hf(model, out)  # now fits one file: the shards and the index go
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert torch.equal(load_hf(out).qkv.weight, model.qkv.weight)


def test_large_loads_show_a_progress_bar(tmp_path, two_parts, monkeypatch, capsys):
    _write_sharded(tmp_path, [_tower_tensors()])
    load_hf(tmp_path)
    assert "load_hf" not in capsys.readouterr().err
    monkeypatch.setattr(load_module, "PROGRESS_MIN_BYTES", 0)
    load_hf(tmp_path)
    assert "load_hf" in capsys.readouterr().err


def test_save_hf_and_hf_inputs_refuse_models_without_an_architecture(tmp_path):
    from omnikit.convert import hf_inputs

    with pytest.raises(ValueError, match=r"Linear.*was not loaded by load_hf"):
        save_hf(nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match=r"Linear.*was not loaded by load_hf"):
        hf_inputs(nn.Linear(2, 2), {"input_ids": torch.zeros(1, 2)})


def test_integer_tensor_where_the_model_holds_floats_is_refused(tmp_path, two_parts):
    """An int32 tensor is not silently cast into a float parameter (it would load as garbage)."""
    tensors = _tower_tensors()
    tensors["a.q.weight"] = tensors["a.q.weight"].to(torch.int32)
    _write_sharded(tmp_path, [tensors])
    with pytest.raises(ValueError, match=r"wrong dtype \(1\): \['a.q.weight: checkpoint torch.int32 vs model"):
        load_hf(tmp_path)


def test_non_finite_tensors_are_refused(tmp_path, two_parts):
    tensors = _tower_tensors()
    tensors["a.v.bias"][1] = float("inf")
    _write_sharded(tmp_path, [tensors])
    with pytest.raises(ValueError, match=r"hold NaN or inf: \['qkv.bias'\]"):
        load_hf(tmp_path)


def test_links_and_index_entries_outside_the_snapshot_are_refused(tmp_path, two_parts):
    outside = tmp_path / "elsewhere"
    _write_sharded(outside, [_tower_tensors()])
    snap = tmp_path / "snap"
    snap.mkdir()
    for f in outside.iterdir():
        os.symlink(f, snap / f.name)
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        load_hf(snap)
    traversal = tmp_path / "traversal"
    _write_sharded(traversal, [_tower_tensors()])
    index = json.loads((traversal / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: "../elsewhere/model-00001-of-00001.safetensors" for k in index["weight_map"]}
    (traversal / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        load_hf(traversal)
