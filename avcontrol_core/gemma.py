"""Gemma 3, the language model inside LTX-2's text encoder, loaded through transformers' public API.

Two on-disk forms are accepted:

* a Hugging Face folder: ``config.json`` (``gemma3`` or ``gemma3_text``), ``*.safetensors`` weights (sharded or not),
  ``tokenizer.json`` and/or ``tokenizer.model``;
* one ``.safetensors`` file as ComfyUI keeps it in ``models/text_encoders`` (e.g. ``gemma_3_12B_it.safetensors``):
  language-model weights under ``model.*``, the sentencepiece tokenizer embedded as the uint8 tensor
  ``spiece_model`` (or a tokenizers JSON as ``tokenizer_json``). Its Gemma 3 config is derived from the tensor
  shapes, the remaining hyper-parameters being those of the official Gemma 3 12B release.

Only the language model is built (``Gemma3TextModel``); vision tower, projector and LM head weights are skipped.
ltx-core's own Gemma configurator hard-codes the 12B config and breaks on transformers 5.x, so it is not used.
Parameters are created on the meta device and filled with ``load_state_dict(strict=True, assign=True)`` after an
explicit key and shape comparison; fp8 files (plain casts and ComfyUI's per-tensor ``*_fp8_scaled``) are dequantised;
block-scaled formats (nvfp4, mxfp8) are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch

from .checkpoint import shape_mismatches
from .dtypes import parse_dtype
from .errors import InputError

# Official Gemma 3 12B values for everything the tensor shapes cannot tell (google/gemma-3-12b-it config.json).
# query_pre_attn_scalar equals head_dim (256) in the 1B/4B/12B releases, so it follows the derived head_dim.
GEMMA3_12B_HYPERPARAMETERS = {
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 131072,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "sliding_window": 1024,
    "sliding_window_pattern": 6,
    "attention_bias": False,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}

TOKENIZER_TENSOR_KEYS = ("spiece_model", "tokenizer_json")
# Checked in this order: the ignored (multimodal) prefixes first, since "model." also prefixes "model.vision_tower.".
_IGNORED_PREFIXES = (
    "vision_tower.", "vision_model.", "multi_modal_projector.", "model.vision_tower.", "model.vision_model.",
    "model.multi_modal_projector.", "lm_head.", "model.lm_head.", "language_model.lm_head.",
    "text_embedding_projection.", "hf_asset__",
)
_LM_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
_GEMMA3_MARKERS = (
    "embed_tokens.weight", "norm.weight", "layers.0.self_attn.q_norm.weight", "layers.0.self_attn.q_proj.weight",
    "layers.0.self_attn.k_proj.weight", "layers.0.mlp.gate_proj.weight",
    "layers.0.pre_feedforward_layernorm.weight", "layers.0.post_feedforward_layernorm.weight",
)
_QUANT_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
_FP8 = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, n)}


class PromptTokenizer:
    """Gemma's tokenizer for LTX-2: a leading <bos>, no <eos>, truncation to max_length, left padding with <pad>.

    Backed by the tokenizers library (a tokenizer.json) or by sentencepiece (a tokenizer.model / embedded proto).
    """

    def __init__(self, *, tokenizer_json: str | None = None, spiece_proto: bytes | None = None, source: str = "") -> None:
        self.source = source
        if tokenizer_json is not None:
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_str(tokenizer_json)
            self._hf.no_padding()  # padding and length are ours to apply
            self._hf.no_truncation()
            self._sp = None
            self.bos_id, self.pad_id = self._hf.token_to_id("<bos>"), self._hf.token_to_id("<pad>")
            self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        elif spiece_proto is not None:
            import sentencepiece

            self._hf = None
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=spiece_proto)
            self.bos_id, self.pad_id = self._sp.piece_to_id("<bos>"), self._sp.piece_to_id("<pad>")
            if self._sp.id_to_piece(self.bos_id) != "<bos>":
                self.bos_id = None
            if self._sp.id_to_piece(self.pad_id) != "<pad>":
                self.pad_id = None
            self.vocab_size = self._sp.get_piece_size()
        else:
            raise ValueError("PromptTokenizer needs tokenizer_json or spiece_proto")
        if self.bos_id is None or self.pad_id is None:
            raise InputError(f"{source}: the tokenizer has no <bos> or <pad> token; it is not Gemma's tokenizer")

    def token_ids(self, text: str, max_length: int) -> list[int]:
        """Token ids of the stripped text: <bos> first, no <eos>, at most max_length (longer prompts are cut)."""
        text = text.strip()
        if self._hf is not None:
            ids = self._hf.encode(text, add_special_tokens=True).ids
        else:
            ids = self._sp.encode(text, add_bos=False, add_eos=False)
        if not ids or ids[0] != self.bos_id:
            ids = [self.bos_id, *ids]
        return ids[:max_length]

    def pad_left(self, ids: list[int], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both [max_length] int64, padding on the left as ltx-core's tokenizer does."""
        pad = max_length - len(ids)
        input_ids = torch.tensor([self.pad_id] * pad + ids, dtype=torch.int64)
        mask = torch.cat([torch.zeros(pad, dtype=torch.int64), torch.ones(len(ids), dtype=torch.int64)])
        return input_ids, mask


@dataclass
class GemmaEncoder:
    """Gemma 3's language model and tokenizer; `hidden_states` gives the embeddings plus every layer's output."""

    model: torch.nn.Module  # transformers Gemma3TextModel
    tokenizer: PromptTokenizer
    source: Path

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """num_layers + 1 tensors [B, T, hidden]: embeddings, layer outputs, the last one after the final norm.

        No position ids are passed, as in ltx-core: left-padded tokens keep positions T - n .. T - 1.
        """
        out = self.model(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device), output_hidden_states=True
        )
        states = tuple(out.hidden_states)
        if len(states) != self.num_layers + 1:
            raise RuntimeError(f"Gemma returned {len(states)} hidden states, expected {self.num_layers + 1}")
        return states

    def to(self, device: torch.device | str) -> GemmaEncoder:
        self.model.to(device)
        return self


def load_gemma(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.bfloat16
) -> GemmaEncoder:
    """Load Gemma 3's language model and tokenizer from a Hugging Face folder or a ComfyUI single file.

    `dtype` is a torch dtype or one of "auto" (bf16 on CUDA, fp32 elsewhere), "bf16", "fp16", "fp32". Raises InputError naming the path and what is
    missing or wrong.
    """
    path = Path(path)
    dtype = parse_dtype(dtype, device)
    if path.is_dir():
        config, shards, tokenizer = _read_folder(path)
        tensors = _iter_folder_tensors(shards)
    elif path.is_file():
        config, tokenizer = _read_single_file(path)
        tensors = _iter_file_tensors(path)
    else:
        raise InputError(f"Gemma text encoder not found: {path}")
    if tokenizer.vocab_size > config.vocab_size:
        raise InputError(
            f"{path.name}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}; "
            f"the tokenizer belongs to another model"
        )
    model = _build_model(config, tensors, torch.device(device), dtype, path.name)
    return GemmaEncoder(model=model, tokenizer=tokenizer, source=path)


# --- folders -----------------------------------------------------------------------------------------------------


def _read_folder(folder: Path):
    from transformers import AutoConfig

    where = f"Gemma folder {folder}"
    if not (folder / "config.json").is_file():
        raise InputError(f"{where} has no config.json; expected a Hugging Face Gemma 3 folder (e.g. gemma-3-12b-it)")
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{where}: config.json is not a JSON object: {exc}") from exc
    if model_type not in ("gemma3", "gemma3_text"):
        raise InputError(f"{where}: config.json declares model_type {model_type!r}, expected a Gemma 3 model ('gemma3')")
    shards = _weight_shards(folder)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True).get_text_config()
    if (folder / "tokenizer.json").is_file():
        tokenizer = PromptTokenizer(tokenizer_json=(folder / "tokenizer.json").read_text(encoding="utf-8"), source=where)
    elif (folder / "tokenizer.model").is_file():
        tokenizer = PromptTokenizer(spiece_proto=(folder / "tokenizer.model").read_bytes(), source=where)
    else:
        raise InputError(f"{where} has no tokenizer: expected tokenizer.json or tokenizer.model beside config.json")
    return config, shards, tokenizer


def _weight_shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise InputError(f"Gemma folder {folder} lacks weight shards listed in its index: {missing}")
        return [folder / n for n in names]
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found {pickled}: pickled weights are refused, convert them to .safetensors)" if pickled else ""
        raise InputError(f"Gemma folder {folder} has no weights: expected model*.safetensors{hint}")
    return shards


def _iter_folder_tensors(shards: list[Path]) -> Iterator[tuple[str, torch.Tensor | None]]:
    for shard in shards:
        yield from _iter_file_tensors(shard)


# --- single files ------------------------------------------------------------------------------------------------


def _open(path: Path):
    try:
        return safetensors.safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{path.name} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def _read_single_file(path: Path):
    if path.suffix.lower() != ".safetensors":
        raise InputError(
            f"Gemma text encoder must be a .safetensors file or a Hugging Face folder, got {path.name} "
            f"(pickled .bin/.pt/.ckpt files are refused: loading them can run code)"
        )
    with _open(path) as f:
        meta = f.metadata() or {}
        keys = list(f.keys())
        _refuse_ltx_checkpoint(path, meta, keys)
        shapes = {}
        for key in keys:
            name = _lm_name(key)
            if name is not None and not name.endswith(_QUANT_SUFFIXES):
                shapes[name] = tuple(f.get_slice(key).get_shape())
        missing = [m for m in _GEMMA3_MARKERS if m not in shapes]
        if missing:
            raise InputError(
                f"{path.name} is not a Gemma 3 text encoder: it lacks {missing} (found e.g. {sorted(keys)[:5]}); "
                f"LTX-2 needs Gemma 3 12B, e.g. gemma_3_12B_it.safetensors"
            )
        if "spiece_model" in keys:
            tokenizer = PromptTokenizer(spiece_proto=_tensor_bytes(f.get_tensor("spiece_model")), source=path.name)
        elif "tokenizer_json" in keys:
            tokenizer = PromptTokenizer(
                tokenizer_json=_tensor_bytes(f.get_tensor("tokenizer_json")).decode("utf-8"), source=path.name
            )
        else:
            raise InputError(
                f"{path.name} holds Gemma 3 weights but no embedded tokenizer (tensor 'spiece_model' or "
                f"'tokenizer_json'); use ComfyUI's gemma_3_12B_it.safetensors or a Hugging Face folder with its tokenizer"
            )
    if "gemma_config" in meta:  # Lightricks' packed text-encoder files carry their HF config
        from transformers import AutoConfig

        cfg = json.loads(meta["gemma_config"])
        config = AutoConfig.for_model(**cfg).get_text_config()
    else:
        config = text_config_from_shapes(shapes, path.name)
    return config, tokenizer


def _refuse_ltx_checkpoint(path: Path, meta: dict, keys: list[str]) -> None:
    is_ltx = any(k.startswith(("model.diffusion_model.", "vae.", "audio_vae.", "vocoder.")) for k in keys)
    if not is_ltx and "config" in meta:
        try:
            is_ltx = "transformer" in json.loads(meta["config"])
        except (ValueError, TypeError):
            pass
    if is_ltx:
        raise InputError(
            f"{path.name} is an LTX-2 model checkpoint, not the Gemma 3 text encoder: choose the checkpoint as the "
            f"model and a Gemma 3 12B file (e.g. gemma_3_12B_it.safetensors) as the text encoder"
        )


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().flatten().to(torch.uint8).numpy().tobytes()


def text_config_from_shapes(shapes: dict[str, tuple[int, ...]], source: str = "Gemma file"):
    """A Gemma3TextConfig from language-model tensor shapes (keys without prefix), other values from Gemma 3 12B."""
    from transformers import Gemma3TextConfig

    vocab, hidden = shapes["embed_tokens.weight"]
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("layers."))
    head_dim = shapes["layers.0.self_attn.q_norm.weight"][0]
    heads, rem_q = divmod(shapes["layers.0.self_attn.q_proj.weight"][0], head_dim)
    kv_heads, rem_k = divmod(shapes["layers.0.self_attn.k_proj.weight"][0], head_dim)
    if rem_q or rem_k:
        raise InputError(f"{source}: tensor shapes do not form a Gemma 3 attention/MLP layout")
    return Gemma3TextConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, query_pre_attn_scalar=head_dim,
        intermediate_size=shapes["layers.0.mlp.gate_proj.weight"][0],
        **{k: (dict(v) if isinstance(v, dict) else v) for k, v in GEMMA3_12B_HYPERPARAMETERS.items()},
    )


# --- tensors and the model ---------------------------------------------------------------------------------------


def _lm_name(key: str) -> str | None:
    """Language-model name of a checkpoint key (no prefix), '' for keys to skip, None for keys outside Gemma."""
    if key in TOKENIZER_TENSOR_KEYS or key.startswith(_IGNORED_PREFIXES) or key.endswith("scaled_fp8"):
        return ""
    for prefix in _LM_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return None


def _iter_file_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor | None]]:
    """(key, tensor) of one safetensors file, tensors read lazily; skipped keys are not read."""
    with _open(path) as f:
        for key in f.keys():
            name = _lm_name(key)
            yield key, (f.get_tensor(key) if name else None)


def _collect(tensors: Iterator[tuple[str, torch.Tensor | None]], source: str, place) -> tuple[dict, list[str]]:
    """Language-model tensors by name, each placed (cast, moved) as it is read, fp8 ones dequantised; and the keys
    that belong to no known part of Gemma."""
    weights, scales, unknown = {}, {}, []
    for key, tensor in tensors:
        name = _lm_name(key)
        if name is None:
            unknown.append(key)
        elif not name:
            continue
        elif name.endswith((".scale_weight", ".weight_scale")):
            scales[name.rsplit(".", 1)[0] + ".weight"] = tensor
        elif name.endswith(".comfy_quant"):
            conf = json.loads(_tensor_bytes(tensor).decode("utf-8"))
            if "float8" not in str(conf.get("format", "")):
                raise InputError(f"{source}: quantisation {conf.get('format')!r} is not supported; use the bf16 file")
        elif not name.endswith((".scale_input", ".input_scale")):
            weights[name] = tensor if tensor.dtype in _FP8 else place(tensor)
    for name, scale in scales.items():
        if name not in weights or scale.numel() != 1:
            raise InputError(f"{source}: block-scaled quantisation ({name}) is not supported; use the bf16 or fp8 file")
        weights[name] = place(weights[name].float() * scale.float())
    for name in [n for n, t in weights.items() if t.dtype in _FP8]:  # plain fp8 casts (no scale) load as they are
        weights[name] = place(weights[name].float())
    return weights, unknown


def _build_model(config, tensors, device: torch.device, dtype: torch.dtype, source: str) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from transformers import Gemma3TextModel

    with init_empty_weights(include_buffers=False):  # parameters on meta; rotary / embed-scale buffers computed
        model = Gemma3TextModel(config)
    expected = model.state_dict()
    weights, unknown = _collect(tensors, source, lambda t: t.to(dtype=dtype).to(device))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected)) + unknown
    if missing or unexpected:
        raise InputError(
            f"{source}: Gemma 3 weights do not match the model config ({len(missing)} missing: {_short(missing)}; "
            f"{len(unexpected)} unexpected: {_short(unexpected)})"
        )
    wrong = shape_mismatches(expected, weights)
    if wrong:
        raise InputError(f"{source}: Gemma 3 tensor shapes do not match config.json: {_short(wrong)}")
    model.load_state_dict(weights, strict=True, assign=True)
    model.to(device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise InputError(f"{source}: Gemma tensors left uninitialised after loading: {_short(left)}")
    return model.eval().requires_grad_(False)


def _short(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "") if keys else "none"
