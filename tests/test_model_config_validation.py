"""A model's config is checked before anything is built from it.

Every size a file states (a Hugging Face `config.json`, our checkpoint's `cfg`, fairseq's `args` or
`cfg.model`) must be the one its stored tensors have: `num_hidden_layers: 100000` next to the
weights of two layers is one line naming the field and both numbers, within a second, and no
model, not even one on the meta device, is built. Every `config.json` field we read is checked for
its type and range: a wrong one is one line naming config.json, the field and the value.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from roberta.errors import UserError
from roberta.models import ModelConfig, RobertaModel
from roberta.models import pretrained as pretrained_module
from roberta.models.hf_export import save_fairseq_checkpoint, save_hf_folder, save_our_checkpoint
from roberta.models.pretrained import load_pretrained

pytestmark = pytest.mark.reliability

TRUE = ModelConfig(vocab_size=12, encoder_layers=2, encoder_embed_dim=8, encoder_ffn_embed_dim=16,
                   encoder_attention_heads=2, max_positions=6)
SIZE_FIELDS = ("vocab_size", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "max_positions")
HF_SIZES = {"vocab_size": 12, "num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 16,
            "max_position_embeddings": 8}
SECONDS = 2.0
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
sizes = st.one_of(st.integers(-3, 40), st.integers(2**31, 10**30), st.sampled_from([100_000, 10**12]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
DELETED = object()


@functools.cache
def hf_files() -> tuple[dict, bytes]:
    """A Hugging Face folder's config.json (as a dict) and model.safetensors (as bytes)."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        save_hf_folder(folder, RobertaModel(TRUE).state_dict(), TRUE)
        return json.loads((Path(folder) / "config.json").read_text()), (Path(folder) / "model.safetensors").read_bytes()


@functools.cache
def our_state() -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        return torch.load(save_our_checkpoint(Path(folder) / "m.pt", RobertaModel(TRUE).state_dict(), TRUE),
                          weights_only=True)


@functools.cache
def fairseq_state(generation: str) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = save_fairseq_checkpoint(Path(folder) / "model.pt", RobertaModel(TRUE).state_dict(), TRUE, generation)
        return torch.load(path, weights_only=False)


@contextlib.contextmanager
def models_built():
    """The configs of the models `load_pretrained` builds (on the meta device) while inside."""
    built, real = [], pretrained_module.RobertaModel

    def recording(config: ModelConfig) -> RobertaModel:
        built.append(config)
        return real(config)

    with mock.patch.object(pretrained_module, "RobertaModel", recording):
        yield built


def load_timed(path: Path, unsafe: bool = False):
    """load_pretrained's result, or its UserError (asserted one line naming `path`, within SECONDS),
    and whether a model was built."""
    started = time.monotonic()
    with models_built() as built:
        try:
            return load_pretrained(path, unsafe=unsafe), bool(built)
        except UserError as error:
            assert str(path) in str(error) and "\n" not in str(error), str(error)
            assert time.monotonic() - started < SECONDS
            return error, bool(built)


def write_hf(folder: Path, config: dict | str | bytes) -> Path:
    if not (folder / "model.safetensors").exists():
        (folder / "model.safetensors").write_bytes(hf_files()[1])
    text = config if isinstance(config, (str, bytes)) else json.dumps(config)
    (folder / "config.json").write_bytes(text.encode() if isinstance(text, str) else text)
    return folder


# ---------------------------------------------------------------------------- sizes


@PROPERTY
@given(field=st.sampled_from(sorted(HF_SIZES)), value=sizes)
def test_hf_sizes_must_match_the_weights(tmp_path, field, value) -> None:
    config = {**hf_files()[0], field: value}
    result, built = load_timed(write_hf(tmp_path, config))
    if value == HF_SIZES[field]:
        assert result.config == TRUE
        return
    assert isinstance(result, UserError) and not built
    assert "config.json: " in str(result) and field in str(result), str(result)


@PROPERTY
@given(field=st.sampled_from(["num_attention_heads", "pad_token_id"]), value=sizes)
def test_hf_heads_and_padding_load_or_are_refused_naming_the_field(tmp_path, field, value) -> None:
    """Neither is a tensor's size: a head count must divide hidden_size, the padding index fit the
    vocabulary and the position table."""
    result, built = load_timed(write_hf(tmp_path, {**hf_files()[0], field: value}))
    if isinstance(result, UserError):
        assert field in str(result) and not built
    else:
        assert value >= 0 and (field != "num_attention_heads" or 8 % value == 0)


def test_a_hundred_thousand_layers_name_both_numbers(tmp_path) -> None:
    result, built = load_timed(write_hf(tmp_path, {**hf_files()[0], "num_hidden_layers": 100_000}))
    assert isinstance(result, UserError) and not built
    assert "config.json: num_hidden_layers is 100000, but the weights hold 2 layers" in str(result)


def our_checkpoint(path: Path, layout: str, field: str, value) -> Path:
    state = dict(our_state())
    if layout == "model":
        state["cfg"] = {"model": {**state["cfg"]["model"], field: value}}
    else:  # a flat cfg of flags and a registered --arch, as older roberta-train files have
        flags = {name: getattr(TRUE, name) for name in (*SIZE_FIELDS[1:], "encoder_attention_heads")}
        state["cfg"] = {"arch": "roberta_base", **flags, field: value}
    torch.save(state, path)
    return path


@PROPERTY
@given(layout=st.sampled_from(["model", "flat"]), field=st.sampled_from(SIZE_FIELDS[1:]), value=sizes)
def test_our_checkpoint_sizes_must_match_the_weights(tmp_path, layout, field, value) -> None:
    result, built = load_timed(our_checkpoint(tmp_path / "checkpoint.pt", layout, field, value))
    if value == getattr(TRUE, field):
        assert result.config == TRUE
        return
    assert isinstance(result, UserError) and not built
    assert field in str(result) or field.replace("_", "-") in str(result), str(result)


@PROPERTY
@given(field=st.sampled_from(sorted(TRUE.to_dict())), value=st.one_of(json_values, sizes))
def test_any_value_in_our_model_config_loads_or_is_one_line(tmp_path, field, value) -> None:
    result, built = load_timed(our_checkpoint(tmp_path / "checkpoint.pt", "model", field, value))
    if isinstance(result, UserError):
        assert not built
    elif field in SIZE_FIELDS:
        assert value == getattr(TRUE, field) and not isinstance(value, bool)


def fairseq_checkpoint(path: Path, generation: str, field: str, value) -> Path:
    state = dict(fairseq_state(generation))
    if generation == "2019":
        state["args"] = argparse.Namespace(**{**vars(state["args"]), field: value})
    else:
        group = state["cfg"]["model"]
        values = {**(vars(group) if isinstance(group, argparse.Namespace) else group), field: value}
        state["cfg"] = {**state["cfg"], "model": argparse.Namespace(**values)}
    torch.save(state, path)
    return path


@settings(PROPERTY, max_examples=50)  # each example pickles a legacy fairseq file
@given(generation=st.sampled_from(["2019", "current"]),
       field=st.sampled_from([*SIZE_FIELDS[1:], "encoder_attention_heads", "dropout", "attention_dropout",
                              "activation_dropout", "pooler_dropout"]),
       value=st.one_of(json_values, sizes))
def test_fairseq_flags_load_or_are_one_line(tmp_path, generation, field, value) -> None:
    """fairseq's sizes are read off the weights, whatever its flags say; the rest is checked."""
    result, built = load_timed(fairseq_checkpoint(tmp_path / "model.pt", generation, field, value))
    if isinstance(result, UserError):
        assert not built and field in str(result).replace("-", "_"), str(result)
    else:
        sized = {name: getattr(result.config, name) for name in SIZE_FIELDS}
        assert sized == {name: getattr(TRUE, name) for name in SIZE_FIELDS}


@pytest.mark.parametrize("layout", ["model", "flat", "2019", "current"])
@pytest.mark.parametrize("field", ["encoder_layers", "encoder_attention_heads", "dropout"])
def test_an_integer_too_long_to_print(tmp_path, layout, field) -> None:
    """A pickle, unlike JSON, holds integers past the 4,300 digits Python prints. torch's safe
    loader refuses the opcode; with --unsafe-load the value reaches the checks, which describe it."""
    path = tmp_path / "checkpoint.pt"
    if layout in ("model", "flat"):
        our_checkpoint(path, layout, field, 10**5000)
    else:
        fairseq_checkpoint(path, layout, field, 10**5000)
    assert "it may need arbitrary code" in str(load_timed(path)[0])
    result, built = load_timed(path, unsafe=True)
    if layout in ("model", "flat") or field != "encoder_layers":  # fairseq's layer count is the weights'
        assert isinstance(result, UserError) and not built and "<an integer of 16610 bits>" in str(result)


def test_a_layer_count_with_no_layers_stored_names_both_numbers(tmp_path) -> None:
    state = dict(our_state())
    weights = {key: value for key, value in state["model"].items() if ".layers." not in key}
    path = tmp_path / "no_layers.pt"
    torch.save({**state, "model": weights}, path)
    result, built = load_timed(path)
    assert isinstance(result, UserError) and not built
    assert "its model config: encoder_layers is 2, but the weights hold 0 layers" in str(result)


def test_a_stray_layer_index_is_refused_before_building(tmp_path) -> None:
    state = dict(our_state())
    weights = dict(state["model"])
    weights["encoder.sentence_encoder.layers.99999.fc1.bias"] = torch.zeros(16)
    path = tmp_path / "stray.pt"
    torch.save({**state, "model": weights}, path)
    result, built = load_timed(path)
    assert isinstance(result, UserError) and not built
    assert "holds weights of layers 0, 1, 99999, but none of layer 2" in str(result)


# ------------------------------------------------------------------------- config.json types


HF_FIELDS_READ = (*HF_SIZES, "num_attention_heads", "pad_token_id", "model_type", "hidden_act",
                  "position_embedding_type", "type_vocab_size", "is_decoder", "tie_word_embeddings",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "layer_norm_eps")


@PROPERTY
@given(field=st.sampled_from(HF_FIELDS_READ), value=st.one_of(json_values, st.just(DELETED)))
def test_any_value_of_a_config_json_field_loads_or_is_one_line(tmp_path, field, value) -> None:
    config = dict(hf_files()[0])
    if value is DELETED:
        config.pop(field, None)
    else:
        config[field] = value
    result, built = load_timed(write_hf(tmp_path, config))
    if isinstance(result, UserError):
        assert not built and "config.json: " in str(result)
        assert field in str(result) or field in ("pad_token_id", "num_attention_heads"), str(result)
    else:
        assert all(math.isfinite(number) for number in (result.config.dropout, result.config.layer_norm_eps))


@pytest.mark.parametrize("field, value, expected", [
    ("pad_token_id", "x", 'pad_token_id is "x"; expected an integer >= 0'),
    ("pad_token_id", None, "pad_token_id is null; expected an integer >= 0"),
    ("pad_token_id", True, "pad_token_id is true; expected an integer >= 0"),
    ("layer_norm_eps", "abc", 'layer_norm_eps is "abc"; expected a small positive number'),
    ("layer_norm_eps", -1e-5, "layer_norm_eps is -1e-05; expected a small positive number"),
    ("layer_norm_eps", float("nan"), "layer_norm_eps is NaN; expected a small positive number"),
    ("hidden_dropout_prob", float("inf"), "hidden_dropout_prob is Infinity; expected a number in [0, 1)"),
    ("num_hidden_layers", 2.0, "num_hidden_layers is 2.0; expected an integer >= 1"),
    ("num_hidden_layers", [2], "num_hidden_layers is a JSON list; expected an integer >= 1"),
    ("vocab_size", 10**30, "vocab_size is 1000000000000000000000000000000, but "),
    ("tie_word_embeddings", "yes", 'tie_word_embeddings is "yes"; expected true or false'),
    ("classifier_dropout", {}, "classifier_dropout is a JSON object; expected a number in [0, 1) or null"),
])
def test_config_json_faults_name_the_field_and_value(tmp_path, field, value, expected) -> None:
    result, _ = load_timed(write_hf(tmp_path, {**hf_files()[0], field: value}))
    assert isinstance(result, UserError) and expected in str(result), str(result)


@pytest.mark.parametrize("content, expected", [
    ("[1, 2]", "a JSON object is expected, found a JSON list"),
    ("null", "a JSON object is expected, found null"),
    ('{"vocab_size": ', "not a readable JSON config"),
    (b'{"model_type": "\xff"}', "not a readable JSON config"),
    ("[" * 100_000 + "]" * 100_000, "not a readable JSON config"),
    ('{"vocab_size": ' + "9" * 5000 + "}", "not a readable JSON config"),
], ids=["list", "null", "cut", "not-utf8", "deeply-nested", "5000-digit-number"])
def test_a_config_json_that_is_not_an_object(tmp_path, content, expected) -> None:
    result, _ = load_timed(write_hf(tmp_path, content))
    assert isinstance(result, UserError) and "config.json: " in str(result) and expected in str(result)
