"""Omni assembly: early fusion, cross-attention fusion, TMRoPE, Thinker-Talker, turn-taking."""
