"""The "where to add" table of docs/architecture.md, row by row: each test adds a new block from
outside the package (registered by name where the registry applies) and uses it through the
library's own paths, touching no omnikit file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import omnikit
from omnikit.fusion import (
    AudioAdapter,
    CrossAttentionOmni,
    EarlyFusionOmni,
    VisualGrid,
    apply_recipe,
    parameter_groups,
    tmrope_position_ids,
)
from omnikit.fusion.adapters import AdaptedMedia
from omnikit.fusion.models import QWEN2_5_OMNI_TINY, TINY_TOKENS
from omnikit.fusion.towers import tower_parameters
from omnikit.models import CausalLM
from omnikit.moe import MoE, MoEConfig
from omnikit.moe.router import Routing
from omnikit.outputs import EncoderOutput
from omnikit.registry import _REGISTRY
from omnikit.speech.heads import TALKER_HEADS, Pick, TalkerHead, register_talker_head
from omnikit.vision import FrameEncoder


@pytest.fixture()
def scratch_registry():
    """Register test entrypoints and Talker strategies, and remove them afterwards."""
    models, heads = set(_REGISTRY), set(TALKER_HEADS)
    yield
    for key in set(_REGISTRY) - models:
        del _REGISTRY[key]
    for key in set(TALKER_HEADS) - heads:
        del TALKER_HEADS[key]


class StridedAudioEncoder(nn.Module):
    """``features (B, n_mels, T)`` -> ``(B, T // 2, dim)``: one strided convolution."""

    def __init__(self, n_mels: int = 16, dim: int = 24) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_mels, dim, kernel_size=2, stride=2)
        self.output_dim = dim

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return lengths // 2

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        x = self.conv(features).transpose(1, 2)
        n = torch.full((x.shape[0],), x.shape[1]) if lengths is None else self.output_lengths(lengths)
        return EncoderOutput(x * (torch.arange(x.shape[1]) < n[:, None])[..., None], n)


def test_audio_encoder(scratch_registry) -> None:
    @omnikit.register_model(kind="audio_encoder", modalities=("audio",))
    def strided_audio_tiny(**overrides) -> StridedAudioEncoder:
        return StridedAudioEncoder(**overrides)

    encoder = omnikit.create_model("strided_audio_tiny")
    thinker = omnikit.create_model("thinker_tiny")
    omni = EarlyFusionOmni(thinker, audio=AudioAdapter(encoder, thinker.config.dim), scheme=QWEN2_5_OMNI_TINY)
    ids = torch.tensor([[10] + [TINY_TOKENS.audio] * 4 + [11, 12]])
    logits = omni(ids, audio_features=torch.randn(1, 16, 8), audio_lengths=torch.tensor([8]))
    assert logits.shape == (1, 7, thinker.config.vocab_size)
    with pytest.raises(ValueError, match="audio"):  # 4 placeholders for 5 encoder tokens: refused
        omni(ids[:, 1:], audio_features=torch.randn(1, 16, 10), audio_lengths=torch.tensor([10]))


class PatchBackbone(nn.Module):
    """A timm-style image backbone: ``forward_features((N, 3, H, W)) -> (N, H/4 * W/4, 16)``."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, kernel_size=4, stride=4)
        self.patch_embed.patch_size = (4, 4)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images).flatten(2).transpose(1, 2)


def test_vision_backbone(scratch_registry) -> None:
    @omnikit.register_model(kind="frame_encoder", modalities=("video", "image"))
    def patch_frames_tiny(**overrides) -> FrameEncoder:
        return FrameEncoder(PatchBackbone(), **overrides)

    encoder = omnikit.create_model("patch_frames_tiny").eval()
    frames = torch.rand(2, 3, 3, 8, 8)
    out = encoder(frames)
    backbone = encoder.backbone
    expected = backbone.forward_features(frames.flatten(0, 1))  # (B * T, 4, 16): the backbone's own tokens
    assert out.hidden_states.numel() == expected.numel()
    torch.testing.assert_close(out.hidden_states.reshape(expected.shape), expected)


class MeanTemporal(nn.Module):
    """``tokens (B, N, D)`` -> one token per item ``(B, 1, D)``: the mean of its valid tokens, projected."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        n = torch.full((tokens.shape[0],), tokens.shape[1]) if lengths is None else lengths
        valid = (torch.arange(tokens.shape[1]) < n[:, None])[..., None]
        mean = (tokens * valid).sum(1, keepdim=True) / n[:, None, None]
        return EncoderOutput(self.proj(mean), torch.ones_like(n))

    def fusion_groups(self) -> dict[str, nn.Module]:
        return {"adapters": self}


def test_temporal_module(scratch_registry) -> None:
    @omnikit.register_model(kind="temporal", modalities=("video",))
    def mean_temporal_tiny(**overrides) -> MeanTemporal:
        return MeanTemporal(**overrides)

    temporal = omnikit.create_model("mean_temporal_tiny")
    tokens = torch.randn(2, 5, 8)
    out = temporal(tokens, torch.tensor([5, 3]))
    torch.testing.assert_close(out.hidden_states[1, 0], temporal.proj(tokens[1, :3].mean(0)))
    model = nn.ModuleDict({"lm": omnikit.create_model("thinker_tiny"), "temporal": temporal})
    assert set(parameter_groups(model)["adapters"]) == {f"temporal.{n}" for n, _ in temporal.named_parameters()}


class PrefixFusionOmni(nn.Module):
    """Prefix fusion (a fusion style the package does not have): audio tokens, adapted to the LM
    width, are prepended to the text embeddings; logits of the text positions come back."""

    def __init__(self, lm: CausalLM, audio: AudioAdapter) -> None:
        super().__init__()
        self.lm, self.audio = lm, audio

    def forward(self, input_ids: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        self.lm.check_ids(input_ids)
        media = self.audio(audio_features).tokens.view(input_ids.shape[0], -1, self.lm.config.dim)
        hidden = self.lm.decoder(torch.cat((media, self.lm.embed(input_ids)), dim=1))
        return self.lm.lm_head(hidden[:, media.shape[1]:])


def test_fusion_style(scratch_registry) -> None:
    @omnikit.register_model(kind="omni", modalities=("text", "audio"))
    def prefix_omni_tiny(**overrides) -> PrefixFusionOmni:
        lm = omnikit.create_model("decoder_tiny", **overrides)
        return PrefixFusionOmni(lm, AudioAdapter(StridedAudioEncoder(), lm.config.dim))

    model = omnikit.create_model("prefix_omni_tiny")
    ids = torch.randint(8, 256, (2, 5))
    logits = model(ids, torch.randn(2, 16, 6))
    assert logits.shape == (2, 5, 256)
    trainable = apply_recipe(model, "adapters")  # the recipes know the new style through fusion_groups
    assert trainable and all(name.startswith("audio.projector") for name in trainable)
    assert set(parameter_groups(model)["encoders"]) == {f"audio.encoder.{n}" for n, _ in
                                                        model.audio.encoder.named_parameters()}


class PatchImageAdapter(nn.Module):
    """Images ``(N, 3, H, W)`` -> one token per 4x4 patch, width ``dim``, and a ``(1, H/4, W/4)`` grid per image."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, kernel_size=4, stride=4)

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> AdaptedMedia:
        x = self.patch(images)  # (N, dim, h, w)
        n, dim, h, w = x.shape
        return AdaptedMedia(x.flatten(2).transpose(1, 2).reshape(-1, dim), [VisualGrid(1, h, w)] * n)

    def fusion_groups(self) -> dict[str, nn.Module]:
        return {"adapters": self}


def test_modality_adapter(scratch_registry) -> None:
    @omnikit.register_model(kind="adapter", modalities=("image",))
    def patch_image_adapter_tiny(**overrides) -> PatchImageAdapter:
        return PatchImageAdapter(**overrides)

    torch.manual_seed(0)
    thinker = omnikit.create_model("thinker_tiny").eval()
    adapter = omnikit.create_model("patch_image_adapter_tiny").eval()
    omni = EarlyFusionOmni(thinker, adapters={"image": adapter}, scheme=QWEN2_5_OMNI_TINY)
    ids = torch.tensor([[10, 11] + [TINY_TOKENS.image] * 4 + [12, 13]])
    images = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        logits = omni(ids, media={"image": images})
        positions, _ = tmrope_position_ids(ids, TINY_TOKENS, images=[VisualGrid(1, 2, 2)], scheme=QWEN2_5_OMNI_TINY)
        expected = thinker(ids, media={"image": adapter(images).tokens}, positions=positions)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="image"):  # 4 placeholders, 16 patches: refused
        omni(ids, media={"image": torch.randn(1, 3, 16, 16)})
    image_params = {f"adapters.image.{n}" for n, _ in adapter.named_parameters()}
    assert set(parameter_groups(omni)["adapters"]) == image_params == set(tower_parameters(omni)["projector"])
    early = omnikit.create_model("omni_early_tiny")  # a registered model takes one more modality too
    early.adapters["image"] = adapter
    kwargs = early.contract_inputs([40]).kwargs
    kwargs["input_ids"][0, 30:34] = TINY_TOKENS.image
    assert early(**kwargs, media={"image": images}).shape == (1, 40, 256)
    xattn = CrossAttentionOmni(omnikit.create_model("decoder_tiny"), media_tokens=TINY_TOKENS,
                               adapters={"image": PatchImageAdapter(32)}, media_dim=32)
    marked = torch.tensor([[10, TINY_TOKENS.image, 11, 12]])
    assert set(xattn.encode_media(media={"image": images})) == {"image"}
    assert xattn(marked, media={"image": images}).shape == (1, 4, 256)


class ParallelHead(TalkerHead):
    """All ``K`` codebooks of a frame from one step, ``K`` independent linear heads, no delay."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.heads = nn.Linear(config.dim, config.num_codebooks * config.vocab, bias=False)
        self.modules = {"heads": self.heads}

    def logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.heads(h).unflatten(-1, (self.config.num_codebooks, self.config.vocab))

    def next_column(self, h: torch.Tensor, step: int, pick: Pick) -> torch.Tensor:
        logits = self.heads(h).unflatten(-1, (self.config.num_codebooks, self.config.vocab))
        return torch.stack([pick(k, logits[:, k]) for k in range(self.config.num_codebooks)], dim=1)


def test_talker_strategy(scratch_registry) -> None:
    register_talker_head("parallel")(ParallelHead)
    with pytest.raises(ValueError, match="already registered"):
        register_talker_head("parallel")(ParallelHead)
    talker = omnikit.create_model("talker_tiny", strategy="parallel").eval()
    assert {n.split(".")[0] for n, _ in talker.named_parameters()} >= {"heads"} and talker.predictor is None
    codes = torch.randint(0, 64, (2, 4, 5))
    text = torch.randn(2, 5, 64)
    logits = talker(codes, text)
    assert logits.shape == (2, 5, 4, talker.config.vocab) and talker.delay == 0
    streamed = torch.stack(list(talker.stream_codes(iter(text.unbind(1)), batch_size=2, max_frames=3)), dim=2)
    assert streamed.shape == (2, 4, 3) and int(streamed.max()) < 64  # never bos / eos as a code
    with pytest.raises(ValueError, match="`strategy` expected one of"):
        omnikit.create_model("talker_tiny", strategy="nonexistent")


class HashRouter(nn.Module):
    """Token ``i`` goes to experts ``i mod E .. (i + k - 1) mod E`` with equal weights (a fixed router)."""

    keep_fp32 = True

    def __init__(self, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = x.new_zeros(x.shape[0], self.num_experts, dtype=torch.float32)
        return logits, logits.softmax(-1)

    def forward(self, x: torch.Tensor) -> Routing:
        logits, scores = self.score(x)
        first = torch.arange(x.shape[0], device=x.device)[:, None]
        index = (first + torch.arange(self.top_k, device=x.device)) % self.num_experts
        return Routing(logits, scores, index, torch.full(index.shape, 1 / self.top_k, device=x.device))


def test_moe_router(scratch_registry) -> None:
    @omnikit.register_model(kind="moe", modalities=("text",))
    def hash_moe_tiny(**overrides) -> MoE:
        config = MoEConfig(**{"dim": 16, "num_experts": 4, "top_k": 2, "expert_hidden": 8, **overrides})
        return MoE(config, router=HashRouter(config.num_experts, config.top_k))

    moe = omnikit.create_model("hash_moe_tiny")
    x = torch.randn(1, 8, 16)
    y, aux = moe(x, return_aux=True)
    assert y.shape == x.shape
    assert aux.tokens_per_expert.tolist() == [4, 4, 4, 4]  # 8 tokens x 2 choices spread evenly by the hash


def test_codec(scratch_registry) -> None:
    """A codec (here a mu-law scalar quantizer, 1 codebook, hop 1) implements the codec protocol, is
    registered as a ``codec`` and is accepted where a codec is expected (a Thinker-Talker)."""
    from omnikit.audio import Codec, check_codec
    from omnikit.speech.thinker_talker import ThinkerTalker

    class MuLawCodec(nn.Module):
        sample_rate, frame_rate, num_codebooks = 8000, 8000.0, 1

        def __init__(self, codebook_size: int = 16) -> None:
            super().__init__()
            self.codebook_size = codebook_size

        def encode(self, wav: torch.Tensor) -> torch.Tensor:
            mu = self.codebook_size - 1
            y = torch.sign(wav) * torch.log1p(mu * wav.abs().clamp(max=1)) / torch.log1p(torch.tensor(mu))
            return ((y + 1) / 2 * mu).round().long()

        def decode(self, codes: torch.Tensor) -> torch.Tensor:
            mu = self.codebook_size - 1
            y = codes.float() / mu * 2 - 1
            return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu

    omnikit.register_model(kind="codec", modalities=("audio",))(lambda **kw: MuLawCodec(**kw))
    codec = MuLawCodec()
    assert isinstance(codec, Codec)
    wav = torch.linspace(-1, 1, 9).view(1, 1, 9)
    assert (codec.decode(codec.encode(wav)) - wav).abs().max() < 0.2
    tiny = omnikit.create_model("thinker_talker_tiny")
    with pytest.raises(TypeError, match="lacks \\['encode', 'decode'"):
        check_codec(nn.Linear(2, 2), "codec")
    config = tiny.talker.config
    codec = MuLawCodec(config.codebook_size)
    codec.num_codebooks = config.num_codebooks
    assert ThinkerTalker(tiny.omni, tiny.talker, codec).codec is codec


@pytest.fixture()
def scratch_architectures():
    """An empty slate for test architectures (the docs' example may have registered Mistral in this
    process); the registry is restored afterwards."""
    from omnikit.convert import architectures

    saved = dict(architectures._ARCHITECTURES)
    architectures._ARCHITECTURES.pop("MistralForCausalLM", None)
    yield
    architectures._ARCHITECTURES.clear()
    architectures._ARCHITECTURES.update(saved)


def test_published_architecture(scratch_architectures, tmp_path) -> None:
    """A published architecture whose blocks exist (Mistral: Llama-style layers, no qk-norm) is a
    config map and a key map: load_hf then gives transformers' logits, save_hf writes it back."""
    transformers = pytest.importorskip("transformers")
    from references import randomise_norms_and_biases

    from omnikit.convert import load_hf, save_hf
    from omnikit.convert.architectures import Mapped, register_architecture
    from omnikit.convert.configmap import ConfigMap, Constant, Field, Fixed, Refuse, Same
    from omnikit.convert.hub_qwen import DECODER, lm_key_map
    from omnikit.convert.inputs import text_inputs

    mistral = DECODER + ConfigMap((
        Refuse("sliding_window", (None,)), Fixed("mrope_sections", None), Fixed("qk_norm", False),
        Field("qkv_bias", "attention_bias", False, bool), Same("out_bias", "qkv_bias"),
        Constant("model_type", "mistral"),
    ))
    register_architecture("MistralForCausalLM", default_part="text_model", parts={
        "text_model": Mapped(mistral, CausalLM, lm_key_map).part(inputs=text_inputs)})

    config = transformers.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, sliding_window=None)
    torch.manual_seed(0)
    hf = randomise_norms_and_biases(transformers.MistralForCausalLM(config)).eval()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    ours = load_hf(tmp_path / "hf")
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        assert float((ours(**text_inputs(ours, {"input_ids": ids})) - ref).abs().max() / ref.abs().max()) <= 1e-4
        save_hf(ours, tmp_path / "back")
        again = transformers.MistralForCausalLM.from_pretrained(tmp_path / "back")
        assert torch.equal(again(input_ids=ids).logits, ref)
    with pytest.raises(ValueError, match="sliding_window=4096 is not supported"):
        mistral({**config.to_dict(), "sliding_window": 4096})


def test_parallel_strategy() -> None:
    """A block declares its parallel plan beside its forward (roles, or any DTensor style); a class
    from elsewhere is given one by registration. parallelize reads both through collect_plan."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

    from omnikit.distributed import collect_plan, register_parallel_plan
    from omnikit.utils.parallel import COLWISE, ROWWISE, ParallelPlan

    class GatedMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(torch.relu(self.up(x)))

        def parallel_plan(self) -> ParallelPlan:
            return ParallelPlan(tp={"up": COLWISE, "down": ROWWISE})

    class Norm(nn.LayerNorm):
        pass

    register_parallel_plan(Norm)(lambda norm: ParallelPlan(tp={"": SequenceParallel()}))
    model = nn.Sequential(GatedMLP(), Norm(8))
    plan = collect_plan(model)
    assert isinstance(plan.tp["0.up"], ColwiseParallel) and isinstance(plan.tp["0.down"], RowwiseParallel)
    assert isinstance(plan.tp["1."], SequenceParallel)
