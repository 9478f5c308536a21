"""The text side: Gemma 3 loading (HF folder and ComfyUI single file), the embeddings processor, PromptEncoder.

Offline: tiny real Gemma 3 models with a real sentencepiece tokenizer, tiny LTX checkpoints in the real key layout.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from avcontrol_core import tiny, tiny_text
from avcontrol_core.errors import InputError
from avcontrol_core.gemma import load_gemma
from avcontrol_core.text_encoder import (
    EncodedPrompt,
    PromptEncoder,
    build_embeddings_processor,
    load_embeddings_processor,
)

L = tiny_text.TINY_MAX_LENGTH
PROMPT = "A red fox runs across a snowy field at dawn; the camera tracks it."
LONG = "Thunder rolls over the city at night, neon signs flicker and cars hiss through the puddles. " * 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return {
        "folder": tiny_text.write_tiny_gemma_folder(root / "gemma"),
        "multimodal": tiny_text.write_tiny_gemma_folder(root / "gemma-mm", multimodal=True),
        "single": tiny_text.write_tiny_gemma_single_file(root / "gemma_tiny.safetensors"),
        "single_json": tiny_text.write_tiny_gemma_single_file(root / "gemma_json.safetensors", tokenizer="tokenizer_json"),
        "fp8": tiny_text.write_tiny_gemma_single_file(root / "gemma_fp8.safetensors", fp8_scaled=True),
        "ltx2": tiny.write_tiny_checkpoint(root / "ltx2.safetensors", "ltx2"),
        "ltx2.3": tiny.write_tiny_checkpoint(root / "ltx23.safetensors", "ltx2.3"),
        "root": root,
    }


def _states(gemma, text=PROMPT):
    ids = gemma.tokenizer.token_ids(text, L)
    input_ids, mask = gemma.tokenizer.pad_left(ids, L)
    with torch.no_grad():
        return ids, gemma.hidden_states(input_ids[None], mask[None])


@pytest.fixture(scope="module")
def encoders(files):
    return {
        v: PromptEncoder.load(files["single"], files[v], dtype=torch.float32, max_length=L) for v in ("ltx2", "ltx2.3")
    }


def test_transformers_is_5x():
    import transformers

    assert int(transformers.__version__.split(".")[0]) >= 5, transformers.__version__


def test_folder_single_file_and_multimodal_agree(files):
    ids_ref, ref = _states(load_gemma(files["folder"], dtype=torch.float32))
    assert ids_ref[0] == 2 and len(ids_ref) > 10  # <bos> first
    assert len(ref) == tiny_text.TINY_GEMMA["num_hidden_layers"] + 1
    for name in ("single", "single_json", "multimodal"):
        gemma = load_gemma(files[name], dtype=torch.float32)
        ids, states = _states(gemma)
        assert ids == ids_ref, name
        for a, b in zip(states, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # tokenizer.json (tokenizers) and tokenizer.model (sentencepiece) agree on awkward text too
    hf = load_gemma(files["folder"], dtype=torch.float32).tokenizer
    sp = load_gemma(files["single"], dtype=torch.float32).tokenizer
    for text in ["", "  two  spaces\tand\nlines ", "<start_of_turn>user 123 über 🦊<end_of_turn>", LONG]:
        assert hf.token_ids(text, 500) == sp.token_ids(text, 500), text


def test_hidden_states_match_transformers_from_pretrained(files):
    from transformers import Gemma3ForCausalLM

    reference = Gemma3ForCausalLM.from_pretrained(str(files["folder"]), dtype=torch.float32).eval()
    gemma = load_gemma(files["folder"], dtype=torch.float32)
    ids, ours = _states(gemma)
    input_ids, mask = gemma.tokenizer.pad_left(ids, L)
    with torch.no_grad():
        theirs = reference.model(input_ids=input_ids[None], attention_mask=mask[None], output_hidden_states=True)
    for a, b in zip(ours, theirs.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not any(s.isnan().any() for s in ours)


def test_fp8_scaled_single_file_is_dequantised(files):
    _, ref = _states(load_gemma(files["single"], dtype=torch.float32))
    gemma = load_gemma(files["fp8"], dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in gemma.model.parameters())
    _, states = _states(gemma)
    err = (states[-1] - ref[-1]).norm() / ref[-1].norm()
    assert 0 < err < 0.1


@pytest.mark.parametrize("version, dims", [("ltx2", (48, 48)), ("ltx2.3", (64, 32))])
def test_encode_shapes_and_transformer_dims(encoders, files, version, dims):
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    out = encoders[version].encode([PROMPT, ""])
    assert out.video_context.shape == (2, L, dims[0]) and out.audio_context.shape == (2, L, dims[1])
    assert out.context_mask.dtype == torch.int64 and bool((out.context_mask == 1).all())  # registers fill padding
    assert out.token_counts[1] == 1 and out.truncated == (False, False)  # the empty prompt is just <bos>
    assert torch.isfinite(out.video_context).all() and torch.isfinite(out.audio_context).all()
    # the contexts fit the tiny transformer built from the same config
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(tiny.tiny_config(version))
    block = model.transformer_blocks[0]
    if version == "ltx2":
        assert model.caption_projection.linear_1.in_features == dims[0]
        assert model.audio_caption_projection.linear_1.in_features == dims[1]
        widths = (model.caption_projection.linear_2.out_features, model.audio_caption_projection.linear_2.out_features)
    else:
        assert not hasattr(model, "caption_projection")
        widths = dims
    assert (block.attn2.to_k.in_features, block.audio_attn2.to_k.in_features) == widths == (64, 32)


def test_batch_independent_and_deterministic(encoders):
    for encoder in encoders.values():
        alone = encoder.encode([PROMPT])
        batch = encoder.encode([LONG, PROMPT, ""])
        again = encoder.encode([PROMPT])
        for field in ("video_context", "audio_context"):
            torch.testing.assert_close(getattr(batch, field)[1:2], getattr(alone, field), rtol=1e-6, atol=1e-6)
            assert torch.equal(getattr(again, field), getattr(alone, field))


def test_different_prompts_differ_everywhere(encoders):
    for encoder in encoders.values():
        out = encoder.encode([PROMPT, "A cat jumps onto a bookshelf and knocks over a vase.", ""])
        n = min(out.token_counts[:2])
        for ctx in (out.video_context, out.audio_context):
            assert (ctx[0, :n] - ctx[1, :n]).abs().mean() > 0.1 * ctx[0, :n].abs().mean()
            assert (ctx[0, -8:] - ctx[2, -8:]).abs().mean() > 1e-3  # registers see the prompt too


def _reference_features(version, processor, states, mask):
    """The feature extractors as Lightricks' current source writes them (mask-based, padding-side agnostic)."""
    x = torch.stack(states, dim=-1)  # [1, T, D, layers]
    b, t, d, layers = x.shape
    valid = mask.bool()[None, :, None, None]
    if version == "ltx2":
        masked = x.masked_fill(~valid, 0.0)
        mean = masked.sum(dim=(1, 2), keepdim=True) / (mask.sum() * d + 1e-6)
        lo = x.masked_fill(~valid, float("inf")).amin(dim=(1, 2), keepdim=True)
        hi = x.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        normed = (8 * (x - mean) / (hi - lo + 1e-6)).reshape(b, t, d * layers).masked_fill(~valid[..., 0], 0.0)
        feats = processor.feature_extractor.aggregate_embed(normed)
        return feats, feats
    normed = x * torch.rsqrt(x.pow(2).mean(dim=2, keepdim=True) + 1e-6)
    normed = normed.reshape(b, t, d * layers).masked_fill(~valid[..., 0], 0.0)
    video, audio = processor.feature_extractor.video_aggregate_embed, processor.feature_extractor.audio_aggregate_embed
    return video(normed * (video.out_features / d) ** 0.5), audio(normed * (audio.out_features / d) ** 0.5)


def _connector_current_scheme(connector, feats, n):
    """Current source: valid tokens first, register i at position i, then full attention."""
    registers = connector.learnable_registers.to(feats.dtype)
    x = torch.cat([feats[0, L - n :], registers[n:L]])[None]
    saved, connector.num_learnable_registers = connector.num_learnable_registers, 0
    try:
        return connector(x, torch.zeros(1, 1, 1, L))[0][0]
    finally:
        connector.num_learnable_registers = saved


@pytest.mark.parametrize("version", ["ltx2", "ltx2.3"])
def test_processor_matches_current_source_by_hand(encoders, version):
    """Feature extraction and the connectors' register scheme recomputed the way Lightricks' current source does
    (ltx-core 1.0.0 gets there by another route), for a short prompt and an empty one."""
    encoder = encoders[version]
    gemma, processor = encoder.gemma, encoder.processor
    for text in (PROMPT, ""):
        ids = gemma.tokenizer.token_ids(text, L)
        input_ids, mask = gemma.tokenizer.pad_left(ids, L)
        with torch.no_grad():
            states = gemma.hidden_states(input_ids[None], mask[None])
            video, audio = _reference_features(version, processor, states, mask)
            expected_video = _connector_current_scheme(processor.video_connector, video, len(ids))
            expected_audio = _connector_current_scheme(processor.audio_connector, audio, len(ids))
        out = encoder.encode([text])
        torch.testing.assert_close(out.video_context[0], expected_video, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.audio_context[0], expected_audio, rtol=1e-5, atol=1e-5)


def test_truncation_select_cat_to_and_unload(files):
    encoder = PromptEncoder.load(files["folder"], files["ltx2"], dtype="fp32", max_length=L)
    out = encoder.encode([LONG * 4, PROMPT])
    assert out.truncated == (True, False) and out.token_counts[0] == L
    pair = EncodedPrompt.cat([out.select([1]), out.select([0])])
    assert torch.equal(pair.video_context[0], out.video_context[1]) and pair.token_counts == out.token_counts[::-1]
    assert pair.to(dtype=torch.float64).video_context.dtype == torch.float64
    assert encoder.to("cpu") is encoder
    with pytest.raises(InputError, match="list of strings"):
        encoder.encode(PROMPT)
    encoder.unload()
    assert not encoder.loaded
    with pytest.raises(RuntimeError, match="unloaded"):
        encoder.encode([PROMPT])


def test_max_length_must_fit_the_registers(files):
    with pytest.raises(InputError, match="multiple of the connectors' 128"):
        PromptEncoder.load(files["single"], files["ltx2"], dtype=torch.float32, max_length=100)


# --- refusals ----------------------------------------------------------------------------------------------------


def _copy_folder(files, name, drop):
    target = files["root"] / name
    shutil.copytree(files["folder"], target)
    for f in drop:
        (target / f).unlink()
    return target


def test_refuses_broken_folders(files):
    cases = [
        ("no-config", ["config.json"], "config.json"),
        ("no-weights", ["model.safetensors"], "no weights"),
        ("no-tokenizer", ["tokenizer.json", "tokenizer.model"], "no tokenizer"),
    ]
    for name, drop, needle in cases:
        folder = _copy_folder(files, name, drop)
        with pytest.raises(InputError, match=needle) as err:
            load_gemma(folder)
        assert str(folder) in str(err.value)
    # a weight missing from the shard is named
    folder = _copy_folder(files, "missing-tensor", [])
    weights = load_file(str(folder / "model.safetensors"))
    del weights["model.layers.3.mlp.up_proj.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(InputError, match=r"1 missing: layers\.3\.mlp\.up_proj\.weight"):
        load_gemma(folder)
    # only tokenizer.model left: sentencepiece takes over
    folder = _copy_folder(files, "spm-only", ["tokenizer.json"])
    assert load_gemma(folder).tokenizer.token_ids(PROMPT, L) == load_gemma(files["folder"]).tokenizer.token_ids(PROMPT, L)


def test_refuses_wrong_files(files):
    root = files["root"]
    no_tok = root / "gemma_no_tokenizer.safetensors"
    tiny_text.write_tiny_gemma_single_file(no_tok, tokenizer=None)
    pickled = root / "gemma.bin"
    pickled.write_bytes(b"\x80\x04not really")
    other = root / "clip.safetensors"
    save_file({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(4, 4)}, str(other))
    cases = [
        (no_tok, "no embedded tokenizer.*spiece_model"),
        (pickled, r"\.safetensors"),
        (files["ltx2"], "LTX-2 model checkpoint, not the Gemma 3 text encoder"),
        (other, "not a Gemma 3 text encoder"),
        (root / "absent.safetensors", "not found"),
    ]
    for path, needle in cases:
        with pytest.raises(InputError, match=needle) as err:
            load_gemma(path)
        assert path.name in str(err.value)


def test_processor_refuses_missing_unexpected_and_mismatched(files):
    config = tiny.tiny_config("ltx2")
    path = files["root"] / "ltx2-broken.safetensors"
    weights = load_file(str(files["ltx2"]))
    del weights["model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.1.ff.net.2.bias"]
    weights["text_embedding_projection.extra.weight"] = torch.zeros(2, 2)
    save_file(weights, str(path), metadata={"config": json.dumps(config)})
    with pytest.raises(InputError) as err:
        load_embeddings_processor(path, 48, 6, dtype=torch.float32)
    message = str(err.value)
    assert "ltx2-broken.safetensors" in message
    assert "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.1.ff.net.2.bias" in message
    assert "text_embedding_projection.extra.weight" in message
    # a Gemma of another width or depth than the checkpoint expects
    with pytest.raises(InputError, match="caption_channels"):
        load_embeddings_processor(files["ltx2"], 64, 6, dtype=torch.float32)
    with pytest.raises(InputError, match="5 layers of width 48.*does not belong"):
        load_embeddings_processor(files["ltx2.3"], 48, 5, dtype=torch.float32)
    # a partial LTX-2.3 layout is refused rather than guessed
    partial = tiny.tiny_config("ltx2.3")
    del partial["transformer"]["caption_proj_input_norm"]
    with pytest.raises(InputError, match="partial"):
        build_embeddings_processor(partial, 48, 6)


def test_a_prompt_cut_at_the_limit_is_reported_by_the_node(files, capfd):
    """The node says so where the user looks (stderr here; a toast and a line on the node inside ComfyUI)."""
    from tests.workflow_defs import pack_display_names, pack_node_classes

    node, title = pack_node_classes()["AVCPromptEncode"](), pack_display_names()["AVCPromptEncode"]
    encoder = PromptEncoder.load(files["single"], files["ltx2"], dtype="fp32", max_length=L)
    node.encode(encoder, PROMPT, "")
    assert "warning" not in capfd.readouterr().err
    node.encode(encoder, PROMPT, LONG * 4)
    err = capfd.readouterr().err
    assert f"[AVControl] warning, {title}: negative prompt is longer than the text encoder's {L} tokens" in err
    assert "positive prompt" not in err
