"""Tiny offline text-encoder fixtures: a real Gemma 3 (6 layers, width 48) with a real sentencepiece tokenizer, and
text-connector weights in the LTX checkpoint's key layout, for both the LTX-2 (19B) and LTX-2.3 (22B) layouts.

Everything is made on the fly in well under a second, deterministically from a seed, with weights that keep every
path alive: unit-gain matrices N(0, 1/fan_in), norm gains away from zero and one, biases with spread.
The Gemma width (48) differs on purpose from the tiny transformer widths (video 64, audio 32), so a swapped
dimension fails loudly. Six layers give Gemma's 5:1 sliding/full attention pattern one full-attention layer.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from .gemma import GEMMA3_12B_HYPERPARAMETERS

TINY_GEMMA = {
    "vocab_size": 512,
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
TINY_MAX_LENGTH = 128  # a multiple of the connectors' 128 learnable registers
SPECIAL_PIECES = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0..4, as in Gemma's vocabulary
USER_PIECES = ("<start_of_turn>", "<end_of_turn>")

_CORPUS = """\
A red fox runs across a snowy field at dawn while the camera tracks it from the left.
A woman with short dark hair speaks softly to the camera in a quiet kitchen; rain taps on the window.
The drone flies low over a turquoise lake, then rises to reveal the mountains behind it.
Two friends laugh on a wooden pier at sunset as seagulls call and waves splash against the posts.
Close-up of hands kneading dough on a floured table, warm light, slow motion, the sound of a radio.
A street musician plays a violin in the old town; footsteps, chatter and a distant church bell.
The robot turns its head, its eyes glow blue, and it says: "Hello, I have been waiting for you."
Thunder rolls over the city at night; neon signs flicker and cars hiss through the puddles.
A cat jumps onto a bookshelf, knocks over a vase, and looks back at the camera innocently.
Cinematic wide shot of a desert highway, heat haze, an old truck approaching with its engine roaring.
Numbers: 1 2 3 4 5 6 7 8 9 0, 24 fps, 121 frames, 768x512 pixels, 16 kHz audio, 8k+1 frames.
"""


@functools.lru_cache(maxsize=1)
def tiny_tokenizer_proto() -> bytes:
    """A BPE sentencepiece model shaped like Gemma's (byte fallback, no dummy prefix, <pad>=0 <eos>=1 <bos>=2)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines()),
        model_writer=out,
        vocab_size=TINY_GEMMA["vocab_size"],
        model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<mask>", *USER_PIECES],
        byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    return out.getvalue()


def _hf_tokenizer():
    """The same vocabulary as a transformers GemmaTokenizer (tokenizer.json), built without protobuf."""
    import sentencepiece as spm
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_proto=tiny_tokenizer_proto())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab), add_bos_token=True, add_eos_token=False)
    extra = [AddedToken(p, special=True, normalized=False) for p in ("<mask>", *USER_PIECES)]
    tokenizer.add_tokens(extra, special_tokens=True)
    return tokenizer


def tiny_gemma_config():
    from transformers import Gemma3TextConfig

    hyper = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GEMMA3_12B_HYPERPARAMETERS.items()}
    return Gemma3TextConfig(**TINY_GEMMA, query_pre_attn_scalar=TINY_GEMMA["head_dim"], **hyper)


def tiny_gemma_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Language-model weights under Gemma3TextModel's names (no prefix), float32."""
    from transformers import Gemma3TextModel

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Gemma3TextModel(tiny_gemma_config()).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if len(shape) >= 2:  # embeddings too: N(0, 1/hidden) times Gemma's sqrt(hidden) scale gives unit inputs
            value = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
        else:  # Gemma's RMSNorm multiplies by (1 + weight): gains of 1 +- 0.3
            value = 0.3 * torch.randn(shape, generator=generator)
        state[name] = value.contiguous()
    return state


def write_tiny_gemma_folder(directory: str | Path, seed: int = 0, multimodal: bool = False) -> Path:
    """A real Gemma 3 Hugging Face folder (save_pretrained): config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json, tokenizer.model. `multimodal=True` writes a Gemma3ForConditionalGeneration with a tiny
    vision tower, like google/gemma-3-12b-it; otherwise a text-only Gemma3ForCausalLM."""
    from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, SiglipVisionConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = tiny_gemma_state_dict(seed)
    torch.manual_seed(seed)  # the vision tower and lm head keep transformers' own (seeded) initialisation
    if multimodal:
        vision = SiglipVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
        )
        model = Gemma3ForConditionalGeneration(
            Gemma3Config(text_config=tiny_gemma_config().to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=1)
        )
        language_model = model.model.language_model
    else:
        model = Gemma3ForCausalLM(tiny_gemma_config())
        language_model = model.model
    language_model.load_state_dict(state, strict=True)
    model.save_pretrained(str(directory))
    _hf_tokenizer().save_pretrained(str(directory))
    (directory / "tokenizer.model").write_bytes(tiny_tokenizer_proto())
    return directory


def write_tiny_gemma_single_file(
    path: str | Path, seed: int = 0, tokenizer: str = "spiece_model", fp8_scaled: bool = False
) -> Path:
    """The same weights in ComfyUI's single-file layout: `model.*` language model, a few `vision_model.*` /
    `multi_modal_projector.*` tensors (ignored by the loader), and the tokenizer embedded as a uint8 tensor:
    `spiece_model` (the sentencepiece proto, as ComfyUI ships it) or `tokenizer_json` (a tokenizers JSON).
    `fp8_scaled=True` stores the linear weights as float8_e4m3fn with a per-tensor `scale_weight`."""
    if tokenizer not in ("spiece_model", "tokenizer_json", None):
        raise ValueError(f"tokenizer must be 'spiece_model', 'tokenizer_json' or None, got {tokenizer!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in tiny_gemma_state_dict(seed).items()}
    if fp8_scaled:
        for key in [k for k, v in tensors.items() if v.ndim == 2 and "embed_tokens" not in k]:
            scale = tensors[key].abs().amax() / 448.0
            tensors[key] = (tensors[key] / scale).to(torch.float8_e4m3fn)
            tensors[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        tensors["scaled_fp8"] = torch.zeros(1, dtype=torch.float8_e4m3fn)
    generator = torch.Generator().manual_seed(seed + 1)
    tensors["vision_model.embeddings.patch_embedding.weight"] = torch.randn(16, 3, 14, 14, generator=generator)
    tensors["multi_modal_projector.mm_input_projection.weight"] = torch.randn(16, 48, generator=generator)
    if tokenizer == "spiece_model":
        tensors["spiece_model"] = torch.frombuffer(bytearray(tiny_tokenizer_proto()), dtype=torch.uint8)
    elif tokenizer == "tokenizer_json":
        data = _hf_tokenizer().backend_tokenizer.to_str().encode("utf-8")
        tensors["tokenizer_json"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


# --- the LTX side: connector config entries and weights ----------------------------------------------------------


def tiny_connector_config(version: str) -> dict:
    """Entries to merge into a tiny LTX config's "transformer" section so the text connectors line up with the tiny
    Gemma (width 48) and the tiny transformer (video 4 x 16 = 64, audio 4 x 8 = 32).

    "ltx2" (19B layout): the connectors run at the Gemma width and the transformer's caption projections map
    caption_channels (= Gemma width) to its widths. "ltx2.3" (22B layout): the feature extractor projects to the
    transformer widths before the connectors, which run at those widths (gated attention, as the 22B transformer).
    """
    from .text_encoder import V2_CONFIG

    common = {"connector_num_layers": 2, "connector_positional_embedding_max_pos": [4096]}
    if version == "ltx2":
        return {
            **common,
            "caption_channels": TINY_GEMMA["hidden_size"],
            "connector_num_attention_heads": 3,
            "connector_attention_head_dim": 16,
        }
    if version == "ltx2.3":
        return {
            **common,
            **V2_CONFIG,
            "connector_num_attention_heads": 4,
            "connector_attention_head_dim": 16,
            "audio_connector_num_attention_heads": 4,
            "audio_connector_attention_head_dim": 8,
            "audio_connector_num_layers": 2,
            "connector_apply_gated_attention": True,
        }
    raise ValueError(f"version must be 'ltx2' or 'ltx2.3', got {version!r}")


def connector_state_dict(
    ltx_config: dict,
    gemma_hidden: int = TINY_GEMMA["hidden_size"],
    gemma_layers: int = TINY_GEMMA["num_hidden_layers"],
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random text-connector and feature-extractor weights under their full LTX checkpoint key names."""
    from .text_encoder import build_embeddings_processor, processor_file_key

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_embeddings_processor(ltx_config, gemma_hidden, gemma_layers).state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 7)
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("learnable_registers"):  # ltx-core's own init: uniform in [-1, 1)
            value = torch.rand(shape, generator=generator) * 2 - 1
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
        elif "norm" in name:
            value = 1.0 + 0.3 * torch.randn(shape, generator=generator)
        else:
            value = 0.1 * torch.randn(shape, generator=generator)
        state[processor_file_key(name)] = value.contiguous()
    return state
