"""EnCodec through the ``encodec`` package, behind the omnikit codec interface.

::

    tok = omnikit.convert.from_encodec(encodec.EncodecModel.encodec_model_24khz(), bandwidth=6.0)
    codes = tok.encode(wav)            # (B, 1, S) at 24 kHz -> (B, 8, ceil(S / 320)) int64
    audio = tok.decode(codes)          # -> (B, 1, F * 320)

The bandwidth fixes the number of codebooks (24 kHz: 1.5/3/6/12/24 kbps -> 2/4/8/16/32 of 1024
codes at 75 frames/s). Codes and audio are exactly the package's. :func:`load_encodec` builds the
24 kHz model from local weights (safetensors, or the official ``.th`` pickle with
``allow_pickle=True``); no network access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from omnikit.audio.signal import check_sample_rate, check_waveform
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_tensor

__all__ = ["EncodecTokenizer", "load_encodec", "require_encodec"]


def require_encodec() -> Any:
    """Import the ``encodec`` package or explain how to install it."""
    try:
        import encodec
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("EnCodec support needs the encodec package: pip install omnikit[audio]") from error
    return encodec


class EncodecTokenizer(nn.Module):
    """Codec interface over an ``encodec.EncodecModel`` (held as ``.model``, weights unchanged)."""

    def __init__(self, model: nn.Module, bandwidth: float | None = None) -> None:
        super().__init__()
        encodec = require_encodec()
        if not isinstance(model, encodec.EncodecModel):
            raise OmnikitTypeError(f"`model` expected an encodec.EncodecModel but got {type(model).__name__}")
        if model.segment is not None or model.normalize:
            raise OmnikitValueError(
                "`model` segments or normalises its input (the 48 kHz EnCodec); only models coding the whole "
                "signal at once, like encodec_model_24khz, are supported"
            )
        self.model = model
        self.bandwidth = bandwidth if bandwidth is not None else (model.bandwidth or 6.0)

    @property
    def bandwidth(self) -> float:
        """Target bandwidth in kbps; sets :attr:`num_codebooks`."""
        return self._bandwidth

    @bandwidth.setter
    def bandwidth(self, value: float) -> None:
        allowed = list(self.model.target_bandwidths)
        if value not in allowed:
            raise OmnikitValueError(f"`bandwidth` expected one of {allowed} (kbps) but got {value!r}")
        self._bandwidth = float(value)

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.frame_rate)

    @property
    def hop(self) -> int:
        """Samples per frame (320 at 24 kHz)."""
        return int(self.model.encoder.hop_length)

    @property
    def codebook_size(self) -> int:
        return int(self.model.quantizer.bins)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.quantizer.get_num_quantizers_for_bandwidth(self.model.frame_rate, self.bandwidth))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per item: ``ceil(lengths / hop)`` (the last frame is zero-padded)."""
        return -(-torch.as_tensor(lengths) // self.hop)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, *, sample_rate: int | None = None) -> torch.Tensor:
        """``wav (B, channels, S)`` at :attr:`sample_rate` -> ``codes (B, K, ceil(S / hop))`` int64; a given
        ``sample_rate`` must be the codec's."""
        check_sample_rate(sample_rate, self.sample_rate)
        x, _ = check_waveform(wav, channels=int(self.model.channels))
        self.model.set_target_bandwidth(self.bandwidth)
        (codes, _scale), = self.model.encode(x.to(next(self.model.parameters()).dtype))
        return codes.long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K, F) -> wav (B, channels, F * hop)``."""
        check_tensor(codes, "codes", shape=("B", self.num_codebooks, "F"), floating=False)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise OmnikitValueError(f"`codes` expected values in [0, {self.codebook_size})")
        return self.model.decode([(codes, None)])

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, channels, S)``: ``decode(encode(wav))`` trimmed to the input length."""
        return self.decode(self.encode(wav))[..., : wav.shape[-1]]


def load_encodec(path: str | Path, *, bandwidth: float = 6.0, allow_pickle: bool = False) -> EncodecTokenizer:
    """The 24 kHz EnCodec with weights from a local file, strictly loaded.

    ``path`` is a ``.safetensors`` file (e.g. written with ``safetensors.torch.save_file(
    tok.model.state_dict(), path)``) or, with ``allow_pickle=True``, the official ``.th`` checkpoint.
    """
    encodec = require_encodec()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no EnCodec weights at {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif allow_pickle:
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise OmnikitValueError(
            f"refusing to unpickle {str(path)!r}; convert it to .safetensors or pass allow_pickle=True if you trust it"
        )
    model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OmnikitValueError(f"EnCodec weights {str(path)!r} do not fit: missing {missing}, unexpected {unexpected}")
    return EncodecTokenizer(model.eval(), bandwidth)
