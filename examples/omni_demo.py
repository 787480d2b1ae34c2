"""The omni demo: video + audio + text in, text and speech codes out, a WAV file written, timings printed.

``run_omni_demo(out_dir)`` builds the registered ``thinker_talker_tiny`` (random weights: the
answer is noise, the point is the wiring and the streaming), feeds it a synthetic clip, streams
text and speech together, writes ``omni_demo.wav`` and ``omni_demo_layout.png`` (the token layout
and its TMRoPE ids) and returns the timings. ``quickstart.py`` runs it.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import torch

import omnikit
from omnikit.fusion.models import TINY_TOKENS, tiny_omni_prompt

__all__ = ["run_omni_demo", "write_wav"]


def write_wav(path: str | Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write a mono waveform ``(S,)`` in ``[-1, 1]`` as 16-bit PCM (standard library only)."""
    samples = (wav.detach().float().clamp(-1, 1) * 32767).round().to(torch.int16)
    out = Path(path)
    with wave.open(str(out), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(samples.numpy().tobytes())
    return out


def run_omni_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    max_new_tokens: int = 24,
    max_frames: int = 50,
    chunk_frames: int = 5,
    plot: bool = True,
    verbose: bool = True,
) -> dict[str, object]:
    """Run the omni demo and return its outputs and timings.

    Returns a dict with ``text_tokens`` (list of ids), ``codes`` ``(1, K, F)``, ``wav_path``,
    ``layout_path`` (None without ``plot``), ``time_to_first_audio_s``, ``total_s``,
    ``audio_s`` and ``chunks``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = omnikit.create_model("thinker_talker_tiny").eval()
    ids, media = tiny_omni_prompt(torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    chunks = list(model.stream(ids, max_new_tokens=max_new_tokens, max_frames=max_frames,
                               chunk_frames=chunk_frames, **media))
    total = time.perf_counter() - started
    codes = torch.cat([c.codes for c in chunks], dim=2)
    wav = torch.cat([c.wav for c in chunks], dim=-1)[0, 0]
    sample_rate = model.codec.sample_rate
    wav_path = write_wav(out / "omni_demo.wav", wav, sample_rate)
    first_audio = next((c.elapsed for c in chunks if c.wav.shape[-1]), total)
    layout_path = None
    if plot:
        from omnikit.fusion.plotting import plot_token_layout

        fused = model.omni.fuse(ids, **media)
        layout_path = plot_token_layout(ids[0], fused.positions[:, 0], TINY_TOKENS, out / "omni_demo_layout.png",
                                        title="omni demo prompt: token layout and TMRoPE ids")
    result = {
        "text_tokens": torch.cat([c.text_tokens for c in chunks], dim=1)[0].tolist(),
        "codes": codes,
        "wav_path": wav_path,
        "layout_path": layout_path,
        "time_to_first_audio_s": first_audio,
        "total_s": total,
        "audio_s": wav.shape[-1] / sample_rate,
        "chunks": len(chunks),
    }
    if verbose:
        print(f"prompt: {ids.shape[1]} tokens (32 video, 16 audio, text); reply: {len(result['text_tokens'])} tokens")
        print(f"speech: {codes.shape[1]} codebooks x {codes.shape[2]} frames -> {result['audio_s']:.2f} s at "
              f"{sample_rate} Hz in {len(chunks)} chunks, written to {wav_path}")
        print(f"time to first audio chunk: {first_audio * 1000:.0f} ms; total: {total * 1000:.0f} ms "
              f"(real-time factor {total / max(result['audio_s'], 1e-9):.2f})")
    return result
