"""Qwen2.5-Omni token2wav: omnikit's ``Token2Wav`` vs transformers' ``Qwen2_5OmniToken2WavModel``, side by side.

A tiny-but-real config: the published block pattern (24-frame blocks, look-back and look-ahead layers),
repeats, mel bins, ECAPA-TDNN layout, BigVGAN rates and kernels (24 kHz, 480 samples per code), at reduced
widths (DiT 256 x 4 layers, ECAPA channels / 4, BigVGAN 128 initial channels). Every parameter random; the
same weights, codes, voice and initial noise go to both. Prints the time of the offline decode (10 steps,
guidance 0.5), of its DiT and vocoder parts, the chunked decode's time to first audio and real-time factor,
and how far the chunked waveform is from the offline one.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_token2wav.py --codes 100 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch
from common import format_table, interleaved_medians

from omnikit.audio import Token2WavStream
from omnikit.convert import from_transformers

DIT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, head_dim=64, emb_dim=128, enc_emb_dim=192,
           enc_dim=128, enc_channels=[64, 64, 64, 64, 192], enc_attention_channels=32, enc_se_channels=32,
           num_embeds=8193, mel_dim=80, block_size=24, look_ahead_layers=[2], look_backward_layers=[0, 3])
BIGVGAN = dict(mel_dim=80, upsample_initial_channel=128, resblock_kernel_sizes=[3, 7, 11],
               resblock_dilation_sizes=[[1, 3, 5]] * 3, upsample_rates=[5, 3, 2, 2, 2, 2],
               upsample_kernel_sizes=[11, 7, 4, 4, 4, 4])


def build(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as config
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as modeling

    torch.manual_seed(seed)
    hf = modeling.Qwen2_5OmniToken2WavModel(config.Qwen2_5OmniToken2WavConfig(dit_config=DIT, bigvgan_config=BIGVGAN))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.05
            p.copy_(noise + 1 if p.ndim == 1 and name.endswith("weight") else noise)
        hf.code2wav_bigvgan_model.conv_post.weight.mul_(0.02)
    hf.eval()
    return hf, from_transformers(hf).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=100, help="codes decoded (50 per second of audio)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    hf, ours = build()
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 8193, (1, args.codes), generator=g)
    voice = {"conditioning": torch.randn(1, 192, generator=g),
             "reference_mel": torch.randn(1, 300, 80, generator=g) - 5}
    frames = 2 * args.codes
    seconds = args.codes / ours.frame_rate

    def hf_decode() -> torch.Tensor:
        torch.manual_seed(2)
        return hf(codes, voice["conditioning"], voice["reference_mel"]).reshape(1, -1)

    torch.manual_seed(2)
    noise = torch.randn(1, frames, 80)
    ref, wav = hf_decode(), ours.token2wav(codes, noise=noise, **voice)
    parity = float((wav - ref).abs().max() / ref.abs().max())
    mel = ours.dit.sample(codes, voice["conditioning"], voice["reference_mel"], noise)

    def stream_decode() -> tuple[float, torch.Tensor]:
        start, first, pieces = time.perf_counter(), None, []
        stream = Token2WavStream(ours, noise=noise, **voice)
        for i in range(0, args.codes, 4):  # codes arrive 4 at a time (a Talker step is one code)
            piece = stream.push(codes[:, i : i + 4])
            if piece.shape[-1] and first is None:
                first = time.perf_counter() - start
            pieces.append(piece)
        pieces.append(stream.finish())
        return first if first is not None else time.perf_counter() - start, torch.cat(pieces, dim=-1)

    _, streamed = stream_decode()
    chunk_error = float((streamed - wav).abs().max() / wav.abs().max())
    chunk_rel = float((streamed - wav).norm() / wav.norm())
    times = interleaved_medians({
        "hf": hf_decode,
        "ours": lambda: ours.token2wav(codes, noise=noise, **voice),
        "hf_dit": lambda: hf.code2wav_dit_model.sample(voice["conditioning"], voice["reference_mel"], codes),
        "ours_dit": lambda: ours.dit.sample(codes, voice["conditioning"], voice["reference_mel"], noise),
        "hf_vocoder": lambda: hf.code2wav_bigvgan_model(mel.transpose(1, 2)),
        "ours_vocoder": lambda: ours.vocoder(mel.transpose(1, 2)),
        "ours_stream": lambda: stream_decode(),
    }, repeats=args.repeats, warmup=1)
    firsts = [stream_decode()[0] for _ in range(args.repeats)]
    rows = [
        ["offline decode (DiT 10 steps + BigVGAN)", f"{times['hf'] * 1e3:.0f}", f"{times['ours'] * 1e3:.0f}",
         f"{times['hf'] / times['ours']:.2f}"],
        ["DiT sampling", f"{times['hf_dit'] * 1e3:.0f}", f"{times['ours_dit'] * 1e3:.0f}",
         f"{times['hf_dit'] / times['ours_dit']:.2f}"],
        ["BigVGAN", f"{times['hf_vocoder'] * 1e3:.0f}", f"{times['ours_vocoder'] * 1e3:.0f}",
         f"{times['hf_vocoder'] / times['ours_vocoder']:.2f}"],
        ["chunked decode, all chunks (omnikit only)", "-", f"{times['ours_stream'] * 1e3:.0f}", "-"],
    ]
    print(format_table(["token2wav, " + f"{args.codes} codes = {seconds:.1f} s of audio", "transformers (ms)",
                        "omnikit (ms)", "transformers / omnikit"], rows))
    print()
    print(f"waveform vs transformers: max |diff| / peak = {parity:.2e}")
    print(f"real-time factor (compute s / audio s): transformers offline {times['hf'] / seconds:.3f}, omnikit offline "
          f"{times['ours'] / seconds:.3f}, omnikit chunked {times['ours_stream'] / seconds:.3f}")
    print(f"time to first audio: transformers offline = its whole decode, {times['hf'] * 1e3:.0f} ms; omnikit chunked "
          f"{sorted(firsts)[len(firsts) // 2] * 1e3:.0f} ms (all codes available; chunk 72 frames, past 48, future 24, "
          f"vocoder context {ours.vocoder.context_frames()} frames)")
    print(f"chunked vs offline (same noise): max |diff| / peak = {chunk_error:.2e}, relative L2 = {chunk_rel:.2e}")


if __name__ == "__main__":
    main()
