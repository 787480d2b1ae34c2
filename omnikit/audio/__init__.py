"""Audio: feature frontends, audio encoders, quantizers and codec tokenizers."""
