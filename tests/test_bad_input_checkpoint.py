"""Checkpoints under failure: atomic saves, header checks before allocation, dtypes, corrupt files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import omnikit
import omnikit.checkpoint as checkpoint
from omnikit.checkpoint_checks import check_against_header, read_safetensors_header
from omnikit.utils.precision import cast_model

REPO = Path(__file__).resolve().parents[1]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = omnikit.create_model("decoder_tiny").eval()
    omnikit.save_pretrained(model, tmp_path)
    return model, tmp_path


def test_failed_weight_write_leaves_previous_checkpoint_whole(saved, monkeypatch) -> None:
    _, directory = saved
    before = _snapshot(directory)

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", half_write)
    with pytest.raises(OSError, match="No space"):
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny", depth=3), directory)
    assert _snapshot(directory) == before, "the old checkpoint changed or a temporary file was left behind"
    omnikit.load_pretrained(directory)


def test_failed_config_write_leaves_previous_checkpoint_whole(saved, monkeypatch) -> None:
    _, directory = saved
    before = _snapshot(directory)
    real_write_text = Path.write_text

    def failing_write_text(self, *args, **kwargs):
        if self.name.startswith(".config.json"):
            real_write_text(self, "{", encoding="utf-8")
            raise OSError(28, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="No space"):
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny", depth=3), directory)
    assert _snapshot(directory) == before


def test_crash_between_renames_is_detected_on_load(saved, monkeypatch) -> None:
    """Weights renamed, process dies before config.json: the old config no longer matches."""
    _, directory = saved
    real_replace = checkpoint.os.replace

    def replace_weights_only(src, dst):
        if Path(dst).name == "config.json":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace_weights_only)
    with pytest.raises(KeyboardInterrupt):
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny"), directory)
    monkeypatch.undo()
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(ValueError, match=r"model\.safetensors.*different saves"):
        omnikit.load_pretrained(directory)


def test_file_size_limit_in_subprocess_keeps_old_checkpoint(saved) -> None:
    """A real write failure: RLIMIT_FSIZE makes the OS refuse the bigger file part way."""
    _, directory = saved
    before = _snapshot(directory)
    script = textwrap.dedent(
        f"""
        import resource, signal
        import omnikit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        model = omnikit.create_model("decoder_tiny", dim=256, mlp_hidden=1024)
        limit = {len(before["model.safetensors"]) + 4096}
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            omnikit.save_pretrained(model, {str(directory)!r})
        except OSError as exc:
            print("failed:", exc)
        else:
            print("saved")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert "failed:" in result.stdout, result.stdout + result.stderr
    assert _snapshot(directory) == before
    omnikit.load_pretrained(directory)


def test_oversized_config_is_refused_before_allocating(saved) -> None:
    """The config asks for ~128 TB of weights: only a check on meta can answer without allocating."""
    _, directory = saved
    config = json.loads((directory / "config.json").read_text())
    config["overrides"] = {"vocab_size": 2**31, "dim": 2**14, "mlp_hidden": 2**16, "depth": 64}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mis-shaped.*embed\.weight") as info:
        omnikit.load_pretrained(directory)
    assert "model.safetensors" in str(info.value)
    with pytest.raises(ValueError, match="mis-shaped"):
        omnikit.create_model("decoder_tiny", pretrained=directory, vocab_size=2**31, dim=2**14)


def test_bf16_checkpoint_comes_back_bf16_and_equal(tmp_path) -> None:
    model = cast_model(omnikit.create_model("decoder_tiny"), torch.bfloat16).eval()
    omnikit.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    for loaded in (omnikit.load_pretrained(tmp_path), omnikit.create_model("decoder_tiny", pretrained=tmp_path)):
        loaded.eval()
        for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert a.dtype == b.dtype and torch.equal(a, b), key
        ids = torch.randint(0, 256, (2, 5))
        assert torch.equal(model(ids), loaded(ids))


def test_uniformly_cast_checkpoint_comes_back_as_saved(tmp_path) -> None:
    model = omnikit.create_model("decoder_tiny").to(torch.float16)
    omnikit.save_pretrained(model, tmp_path)
    loaded = omnikit.load_pretrained(tmp_path)
    assert all(t.dtype == torch.float16 for t in loaded.state_dict().values() if t.is_floating_point())


def test_wrong_dtype_tensor_is_refused(saved) -> None:
    _, directory = saved
    state = load_file(str(directory / "model.safetensors"))
    state["embed.weight"] = state["embed.weight"].to(torch.float16)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match=r"wrong dtype.*embed\.weight: checkpoint float16 vs model float32"):
        omnikit.load_pretrained(directory)
    with pytest.raises(ValueError, match=r"wrong dtype.*embed\.weight"):
        checkpoint.load_weights(omnikit.create_model("decoder_tiny"), directory)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an omnikit config"),
        ('{"format_version": 1, "name": 3}', "`name` expected a str"),
        ('{"format_version": 1, "name": "decoder_tiny", "overrides": [1]}', "`overrides` expected a dict"),
        ('{"format_version": 1, "name": "decoder_tiny", "dtype": "int8"}', "`dtype` expected a floating"),
        ('{"format_version": 1, "name": "no_such_model"}', "cannot be built.*no_such_model"),
        ('{"format_version": 1, "name": "decoder_tiny", "overrides": {"depth": "2"}}', "cannot be built.*depth"),
    ],
)
def test_bad_config_json_names_the_file(saved, text, message) -> None:
    _, directory = saved
    (directory / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        omnikit.load_pretrained(directory)
    assert "config.json" in str(info.value)


@pytest.mark.parametrize("size", [0, 5, 8, 200])
def test_truncated_weights_name_the_file(saved, size) -> None:
    _, directory = saved
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    with pytest.raises(ValueError, match=r"model\.safetensors.*not a valid safetensors"):
        omnikit.load_pretrained(directory)


def test_header_check_is_reusable_on_meta(saved) -> None:
    model, directory = saved
    header = read_safetensors_header(directory / "model.safetensors")
    with torch.device("meta"):
        meta = omnikit.create_model("decoder_tiny", depth=3)
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): \['decoder\.blocks\.2"):
        check_against_header(meta.state_dict(), header, source="x")
    check_against_header(model.state_dict(), header, source="x")


_ORIGINAL: dict[str, bytes] = {}


def _original_bytes(tmp_path_factory) -> tuple[bytes, torch.Tensor, torch.Tensor]:
    if not _ORIGINAL:
        directory = tmp_path_factory.mktemp("orig")
        torch.manual_seed(0)
        model = omnikit.create_model("decoder_tiny", depth=1).eval()
        omnikit.save_pretrained(model, directory)
        ids = torch.randint(0, 256, (1, 4))
        _ORIGINAL.update(
            weights=(directory / "model.safetensors").read_bytes(),
            config=(directory / "config.json").read_bytes(),
            ids=ids,
            logits=model(ids).detach(),
        )
    return _ORIGINAL["weights"], _ORIGINAL["ids"], _ORIGINAL["logits"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_is_a_clear_error_or_harmless(tmp_path_factory, data) -> None:
    """Flip, overwrite or cut bytes anywhere: ValueError naming the file, or the same model."""
    weights, ids, logits = _original_bytes(tmp_path_factory)
    (header_size,) = __import__("struct").unpack("<Q", weights[:8])
    corrupted = bytearray(weights)
    region = data.draw(st.sampled_from(["size", "header", "data", "truncate"]))
    if region == "truncate":
        corrupted = corrupted[: data.draw(st.integers(0, len(weights) - 1))]
    else:
        lo, hi = {"size": (0, 8), "header": (8, 8 + header_size), "data": (8 + header_size, len(weights))}[region]
        for _ in range(data.draw(st.integers(1, 4))):
            corrupted[data.draw(st.integers(lo, hi - 1))] = data.draw(st.integers(0, 255))
    directory = tmp_path_factory.mktemp("bad")
    (directory / "config.json").write_bytes(_ORIGINAL["config"])
    (directory / "model.safetensors").write_bytes(bytes(corrupted))
    try:
        loaded = omnikit.load_pretrained(directory).eval()
    except ValueError as exc:
        assert "model.safetensors" in str(exc) or "config.json" in str(exc), str(exc)
    else:
        assert torch.equal(loaded(ids), logits), f"silently different model after corrupting {region}"


def test_saved_files_follow_the_umask(tmp_path: Path) -> None:
    """Checkpoints written on a shared cluster are readable by the team: the umask decides, not the 0600 of
    mkstemp and safetensors (save_hf writes through the same ``write_atomically``)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny"), tmp_path / "ours")
        os.umask(0o027)
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny"), tmp_path / "group")
    finally:
        os.umask(old)
    modes = {p.parent.name + "/" + p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("*/*")}
    assert modes == {"ours/model.safetensors": 0o644, "ours/config.json": 0o644,
                     "group/model.safetensors": 0o640, "group/config.json": 0o640}, modes


def test_non_finite_weights_are_refused_on_load(saved) -> None:
    model, directory = saved
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    omnikit.save_pretrained(model, directory)
    with pytest.raises(ValueError, match=r"hold NaN or inf: \['embed.weight'\]"):
        omnikit.load_pretrained(directory)


def test_links_may_not_escape_the_checkpoint_folder(saved, tmp_path_factory) -> None:
    """A symlinked weights file elsewhere on disk is refused (the Hub cache's snapshots/ -> blobs/ links are
    allowed: tests/test_convert_hub_core.py)."""
    import os

    _, directory = saved
    linked = tmp_path_factory.mktemp("linked")
    for name in ("model.safetensors", "config.json"):
        os.symlink(directory / name, linked / name)
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        omnikit.load_pretrained(linked)
