"""LTX-2's prompt encoder: Gemma 3 hidden states -> feature extractor -> video and audio embeddings connectors.

The feature extractor and connectors are ltx-core's own classes (FeatureExtractorV1 / V2, Embeddings1DConnector,
EmbeddingsProcessor), built with the dimensions of the Gemma model actually loaded instead of ltx-core's hard-coded
12B ones, and filled strictly from the LTX checkpoint (keys `text_embedding_projection.*` and
`model.diffusion_model.{video,audio}_embeddings_connector.*`). Two layouts:

* LTX-2 (19B): FeatureExtractorV1 (per-prompt mean/range norm, one `aggregate_embed`, output = Gemma width); the
  caption projection to the transformer width lives in the transformer (`caption_channels` = Gemma width).
* LTX-2.3 (22B): FeatureExtractorV2 (per-token RMS norm, `video_aggregate_embed` / `audio_aggregate_embed` straight
  to the transformer widths); `caption_proj_before_connector` and friends are set in the config.

Each prompt is encoded on its own (left-padded to max_length, as ltx-core does), so a prompt's context does not
depend on the other prompts of the batch.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from ltx_core.text_encoders.gemma.embeddings_connector import (
    AudioEmbeddings1DConnectorConfigurator,
    Embeddings1DConnectorConfigurator,
)
from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

from . import checkpoint as ckpt
from .errors import InputError, warn
from .conditioning import PromptPair
from .gemma import GemmaEncoder, load_gemma
from .residency import RESIDENCY, Hint
from .sampling import TextContext

MAX_PROMPT_TOKENS = 1024  # ltx-core's tokenizer length for the released models

# checkpoint prefix -> EmbeddingsProcessor prefix (ltx-core's EMBEDDINGS_PROCESSOR_KEY_OPS, audio+video)
PROCESSOR_KEY_PREFIXES = {
    "text_embedding_projection.": "feature_extractor.",
    "model.diffusion_model.video_embeddings_connector.": "video_connector.",
    "model.diffusion_model.audio_embeddings_connector.": "audio_connector.",
}

# LTX-2.3 marks its layout with these transformer-config entries, exactly these values (ltx-core's _V2_EXPECTED_CONFIG)
V2_CONFIG = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
}


def processor_file_key(name: str) -> str:
    """The checkpoint key of an EmbeddingsProcessor state-dict key."""
    for file_prefix, module_prefix in PROCESSOR_KEY_PREFIXES.items():
        if name.startswith(module_prefix):
            return file_prefix + name[len(module_prefix) :]
    raise KeyError(name)


def uses_v2_features(ltx_config: dict) -> bool:
    """True for the LTX-2.3 layout (text projection before the connector), False for LTX-2; raises on a mixture."""
    t = ltx_config.get("transformer", {})
    present = t.keys() & V2_CONFIG.keys()
    if not present:
        return False
    if present != V2_CONFIG.keys():
        raise InputError(f"checkpoint config has a partial LTX-2.3 text layout: missing {sorted(V2_CONFIG.keys() - present)}")
    odd = [f"{k}={t[k]!r} (expected {V2_CONFIG[k]!r})" for k in sorted(present) if t[k] != V2_CONFIG[k]]
    if odd:
        raise InputError(f"checkpoint config has an unsupported text projection layout: {', '.join(odd)}")
    return True


def build_embeddings_processor(ltx_config: dict, gemma_hidden_size: int, gemma_num_layers: int) -> EmbeddingsProcessor:
    """ltx-core's EmbeddingsProcessor (feature extractor + video and audio connectors) for this Gemma's dimensions.

    Built on the current default device (wrap in `torch.device("meta")` to allocate nothing). Where the config does
    not name `rope_type`, the connectors use "split", the default of Lightricks' current source.
    """
    t = dict(ltx_config.get("transformer", {}))
    t.setdefault("rope_type", "split")
    if t.get("connector_ff_bias", True) is not True:
        raise InputError("checkpoint config sets connector_ff_bias=false, which ltx-core 1.0.0 cannot build")
    config = {**ltx_config, "transformer": t}
    video = Embeddings1DConnectorConfigurator.from_config(config)
    audio = AudioEmbeddings1DConnectorConfigurator.from_config(config)
    flat = gemma_hidden_size * (gemma_num_layers + 1)  # every layer's output plus the embeddings
    if uses_v2_features(config):
        video_dim = t["num_attention_heads"] * t["attention_head_dim"]
        audio_dim = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
        extractor = FeatureExtractorV2(
            video_aggregate_embed=torch.nn.Linear(flat, video_dim, bias=True),
            embedding_dim=gemma_hidden_size,
            audio_aggregate_embed=torch.nn.Linear(flat, audio_dim, bias=True),
        )
        where = "the transformer width (num_attention_heads * attention_head_dim, audio_...)"
    else:
        video_dim = audio_dim = gemma_hidden_size
        extractor = FeatureExtractorV1(aggregate_embed=torch.nn.Linear(flat, gemma_hidden_size, bias=False), is_av=True)
        where = "the Gemma hidden size"
        channels = t.get("caption_channels", gemma_hidden_size)
        if channels != gemma_hidden_size:
            raise InputError(
                f"the checkpoint's caption_channels ({channels}) differ from the Gemma hidden size "
                f"({gemma_hidden_size}): this text encoder does not belong to this checkpoint (LTX-2 uses Gemma 3 12B)"
            )
    for name, connector, dim in (("video", video, video_dim), ("audio", audio, audio_dim)):
        if connector.inner_dim != dim:
            raise InputError(
                f"the {name} embeddings connector is {connector.inner_dim} wide but its input, {where}, is {dim}: "
                f"the text encoder and checkpoint do not match"
            )
    return EmbeddingsProcessor(feature_extractor=extractor, video_connector=video, audio_connector=audio)


def load_embeddings_processor(
    checkpoint_path: str | Path,
    gemma_hidden_size: int,
    gemma_num_layers: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    ltx_config: dict | None = None,
) -> EmbeddingsProcessor:
    """The embeddings processor filled from an LTX checkpoint, refusing missing, unexpected or misshapen tensors."""
    path = Path(checkpoint_path)
    config = ltx_config if ltx_config is not None else ckpt.read_config(path)
    with torch.device("meta"):
        processor = build_embeddings_processor(config, gemma_hidden_size, gemma_num_layers)
    expected = processor.state_dict()
    tensors = ckpt.load_tensors(path, ckpt.prefix_renamer(PROCESSOR_KEY_PREFIXES), device=device, dtype=dtype)
    # compare under the checkpoint's own key names, so an error names what to look for in the file
    ckpt.check_keys(
        path.name, "text embeddings connector", map(processor_file_key, expected), map(processor_file_key, tensors)
    )
    wrong = ckpt.shape_mismatches(expected, tensors)
    if wrong:
        raise InputError(
            f"{path.name}: text connector shapes do not match (file vs expected for a Gemma with "
            f"{gemma_num_layers} layers of width {gemma_hidden_size}): {ckpt._short(wrong)}; "
            f"the text encoder does not belong to this checkpoint (LTX-2 uses Gemma 3 12B)"
        )
    processor.load_state_dict(tensors, strict=True, assign=True)
    left = [n for n, t in [*processor.named_parameters(), *processor.named_buffers()] if t.is_meta]
    if left:
        raise InputError(f"{path.name}: text connector tensors left uninitialised: {ckpt._short(left)}")
    return processor.eval().requires_grad_(False)


@dataclass(frozen=True)
class EncodedPrompt:
    """Text conditioning for the LTX-2 transformer, one row per prompt.

    `video_context` [B, L, Dv] and `audio_context` [B, L, Da] go to Modality.context; `context_mask` [B, L] int64
    (1 = attend) to Modality.context_mask. The connectors replace padding with learnable registers, so every position
    is attended and the mask is all ones, as in ltx-core. `token_counts` are the prompt tokens (with <bos>) before
    padding; `truncated` flags prompts cut at max_length.
    """

    video_context: torch.Tensor
    audio_context: torch.Tensor
    context_mask: torch.Tensor
    token_counts: tuple[int, ...]
    truncated: tuple[bool, ...]

    def __post_init__(self) -> None:
        b, length = self.context_mask.shape
        if self.video_context.shape[:2] != (b, length) or self.audio_context.shape[:2] != (b, length):
            raise ValueError(
                f"EncodedPrompt shapes disagree: video {tuple(self.video_context.shape)}, "
                f"audio {tuple(self.audio_context.shape)}, mask {tuple(self.context_mask.shape)}"
            )
        if len(self.token_counts) != b or len(self.truncated) != b:
            raise ValueError(f"EncodedPrompt has {b} rows but {len(self.token_counts)} token counts")

    @property
    def batch_size(self) -> int:
        return self.context_mask.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EncodedPrompt:
        """A copy on another device and/or with contexts in another dtype (the mask stays int64)."""
        return EncodedPrompt(
            video_context=self.video_context.to(device=device, dtype=dtype),
            audio_context=self.audio_context.to(device=device, dtype=dtype),
            context_mask=self.context_mask.to(device=device),
            token_counts=self.token_counts,
            truncated=self.truncated,
        )

    def select(self, indices: Sequence[int]) -> EncodedPrompt:
        """The rows at `indices`, in that order (repeats allowed, e.g. one prompt for several samples)."""
        idx = torch.tensor(list(indices), dtype=torch.long)
        return EncodedPrompt(
            video_context=self.video_context[idx.to(self.video_context.device)],
            audio_context=self.audio_context[idx.to(self.audio_context.device)],
            context_mask=self.context_mask[idx.to(self.context_mask.device)],
            token_counts=tuple(self.token_counts[i] for i in indices),
            truncated=tuple(self.truncated[i] for i in indices),
        )

    @staticmethod
    def cat(parts: Sequence[EncodedPrompt]) -> EncodedPrompt:
        """Rows of several encodings stacked in order (e.g. positive then negative)."""
        return EncodedPrompt(
            video_context=torch.cat([p.video_context for p in parts]),
            audio_context=torch.cat([p.audio_context for p in parts]),
            context_mask=torch.cat([p.context_mask for p in parts]),
            token_counts=tuple(c for p in parts for c in p.token_counts),
            truncated=tuple(c for p in parts for c in p.truncated),
        )


class PromptEncoder:
    """Tokenizer + Gemma 3 + embeddings processor: prompts in, video and audio contexts out.

    Empty prompts are allowed (a negative prompt may be empty); callers decide where they are an error.
    `unload()` drops the models so the memory can go to the transformer once the prompts are encoded.
    """

    def __init__(self, gemma: GemmaEncoder, processor: EmbeddingsProcessor, max_length: int = MAX_PROMPT_TOKENS) -> None:
        registers = [c.num_learnable_registers for c in (processor.video_connector, processor.audio_connector)]
        for r in registers:
            if not isinstance(max_length, int) or max_length < 1 or (r and max_length % r):
                raise InputError(
                    f"max_length must be a positive multiple of the connectors' {r} learnable registers, "
                    f"got {max_length!r} (the released models use {MAX_PROMPT_TOKENS})"
                )
        self._gemma: GemmaEncoder | None = gemma
        self._processor: EmbeddingsProcessor | None = processor
        self.max_length = max_length
        self.visit: torch.device | None = None  # see visiting()

    def visiting(self, device: torch.device | str) -> PromptEncoder:
        """Wait in host memory and visit `device` only while encoding (with an offload budget: the residency makes
        room first, and the memory goes back after each call)."""
        self.visit = torch.device(device)
        return self

    def release(self) -> None:
        """Give back the device memory a visiting encoder holds (none between calls); a resident one stays."""
        if self.visit is not None and self._gemma is not None:
            self.to("cpu")

    @classmethod
    def load(
        cls,
        gemma_path: str | Path,
        checkpoint_path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = "auto",
        max_length: int = MAX_PROMPT_TOKENS,
        ltx_config: dict | None = None,
    ) -> PromptEncoder:
        """Gemma from `gemma_path` (HF folder or ComfyUI single file), connectors from the LTX checkpoint.

        `dtype`: a torch dtype or "auto" / "bf16" / "fp16" / "fp32", for both Gemma and the connectors."""
        gemma = load_gemma(gemma_path, device=device, dtype=dtype)
        processor = load_embeddings_processor(
            checkpoint_path, gemma.hidden_size, gemma.num_layers, device=device, dtype=gemma.dtype, ltx_config=ltx_config
        )
        return cls(gemma, processor, max_length)

    @property
    def loaded(self) -> bool:
        return self._gemma is not None

    @property
    def gemma(self) -> GemmaEncoder:
        if self._gemma is None:
            raise RuntimeError("PromptEncoder was unloaded; load it again to encode prompts")
        return self._gemma

    @property
    def processor(self) -> EmbeddingsProcessor:
        self.gemma  # noqa: B018 -- raises when unloaded
        return self._processor

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> EncodedPrompt:
        """Encode each prompt alone (deterministic and independent of the batch) and stack the rows."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        if not prompts:
            raise InputError("prompts must hold at least one prompt, got an empty list")
        if self.visit is None:
            return self._encode(prompts)
        weights = torch.nn.ModuleList([self.gemma.model, self.processor])  # moved in place: the encoder's own modules
        hint = Hint("text encoder device", self.visit.type, "cpu encodes without the GPU, slower")
        with RESIDENCY.on_device(weights, self.visit, "encoding the prompt", hints=[hint]):
            return self._encode(prompts)

    def _encode(self, prompts: Sequence[str]) -> EncodedPrompt:
        gemma, processor = self.gemma, self.processor
        dtype = next(processor.parameters()).dtype
        rows, counts, cut = [], [], []
        for prompt in prompts:
            ids = gemma.tokenizer.token_ids(prompt, self.max_length + 1)
            cut.append(len(ids) > self.max_length)
            ids = ids[: self.max_length]
            counts.append(len(ids))
            input_ids, mask = gemma.tokenizer.pad_left(ids, self.max_length)
            states = gemma.hidden_states(input_ids[None], mask[None])
            device = states[0].device
            out = processor.process_hidden_states(
                tuple(s.to(dtype) for s in states), mask[None].to(device), padding_side="left"
            )
            rows.append(out)
        return EncodedPrompt(
            video_context=torch.cat([r.video_encoding for r in rows]),
            audio_context=torch.cat([r.audio_encoding for r in rows]),
            context_mask=torch.cat([r.attention_mask for r in rows]).to(torch.int64),
            token_counts=tuple(counts),
            truncated=tuple(cut),
        )

    def to(self, device: torch.device | str) -> PromptEncoder:
        self.gemma.to(device)
        self.processor.to(device)
        return self

    def unload(self) -> None:
        """Drop Gemma and the connectors and return their memory (CUDA cache included)."""
        on_cuda = self._gemma is not None and self._gemma.device.type == "cuda"
        self._gemma = None
        self._processor = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()


def load_prompt_encoder(
    gemma_path: str | Path, checkpoint_path: str | Path, ltx_config: dict | None,
    device: torch.device | str = "cpu", dtype: torch.dtype | str = "auto",
) -> PromptEncoder:
    """The prompt encoder for one LTX-2 checkpoint (its text connectors) and one Gemma 3 (folder or single file)."""
    return PromptEncoder.load(gemma_path, checkpoint_path, device=device, dtype=dtype, ltx_config=ltx_config)


def encode_prompt_pair(encoder: PromptEncoder, positive: str, negative: str) -> PromptPair:
    """Encode the positive prompt (must not be empty) and the negative one (may be empty) in one call."""
    if not isinstance(positive, str) or not positive.strip():
        raise InputError(f"positive prompt must describe the clip, got {positive!r}")
    encoded = encoder.encode([positive, negative or ""]).to(device="cpu", dtype=torch.float32)
    for name, cut in zip(("positive", "negative"), encoded.truncated):
        if cut:
            warn(f"{name} prompt is longer than the text encoder's {encoder.max_length} tokens: only its first "
                 f"{encoder.max_length} tokens were encoded, the rest was cut (shorten it to keep all of it)")
    return PromptPair(
        positive=TextContext(encoded.video_context[:1], encoded.audio_context[:1]),
        negative=TextContext(encoded.video_context[1:], encoded.audio_context[1:]),
        positive_text=positive,
        negative_text=negative or "",
    )
