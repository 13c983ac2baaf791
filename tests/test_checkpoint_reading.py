"""Reading damaged checkpoints and weights: every prefix, flipped bytes, NaN, integer tensors, heads.

Whatever the bytes, a reader (`load_checkpoint`, and `load_pretrained` behind roberta-train,
roberta-validate, roberta-convert and the hub) either returns or raises one line naming the file:
never an OSError from torch's zip reader, a struct.error from a cut pickle, or a traceback.
"""
from __future__ import annotations

import functools
import logging
import os
import pickletools
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from roberta.checkpoint.files import build_checkpoint_state, load_checkpoint
from roberta.errors import UserError
from roberta.models import ModelConfig, RobertaModel
from roberta.models.hf_export import save_our_checkpoint
from roberta.models.pretrained import load_pretrained
from roberta.models.weights import load_model_weights

pytestmark = pytest.mark.reliability

TINY = ModelConfig(vocab_size=12, encoder_layers=1, encoder_embed_dim=8, encoder_ffn_embed_dim=8,
                   encoder_attention_heads=2, max_positions=6)
SPAN, ANSWERABLE = "squad_span", "squad_answerable"  # tasks/squad2.py's heads
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def small_training_state() -> dict:
    """A checkpoint of a two-weight model with its Adam state and history: a few kilobytes."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(linear.parameters())
    linear(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    return build_checkpoint_state(
        cfg={"arch": "roberta_tiny"}, model_state=linear.state_dict(), criterion_name="masked_lm",
        optimizer_name="adam", optimizer_state=optimizer.state_dict(), lr_scheduler_state={"step": 1},
        num_updates=1, train_iterator={"epoch": 1, "iterations_in_epoch": 0})


def tiny_model(seed: int = 0) -> RobertaModel:
    torch.manual_seed(seed)
    return RobertaModel(TINY)


@functools.cache
def file_bytes() -> dict[str, bytes]:
    """The bytes of each kind of file: zip and legacy (pickle) format, training state and model.
    (Not a fixture: hypothesis would print all of them with every failing example.)"""
    state, model, made = small_training_state(), tiny_model(), {}
    with tempfile.TemporaryDirectory() as folder:
        for name, legacy in (("small_zip", False), ("small_legacy", True), ("model_zip", False),
                             ("model_legacy", True)):
            path = Path(folder) / f"{name}.pt"
            if name.startswith("model"):
                save_our_checkpoint(path, model.state_dict(), TINY)
                state = torch.load(path, weights_only=True)
            torch.save(state, path, _use_new_zipfile_serialization=not legacy)
            made[name] = path.read_bytes()
    return made


def assert_one_line_naming(error: UserError, path: Path) -> None:
    message = str(error)
    assert str(path) in message and "\n" not in message, message


def load_or_one_line_error(read, path: Path) -> None:
    try:
        read(path)
    except UserError as error:
        assert_one_line_naming(error, path)


def load_model(path: Path) -> RobertaModel:
    """What roberta-validate and the hub do with a file: read it, build its model, load the weights."""
    pretrained = load_pretrained(path)
    model = RobertaModel(pretrained.config)
    pretrained.register_heads(model)
    load_model_weights(model, pretrained.state_dict, path=path)
    return model


# ------------------------------------------------------------------------------ truncation


def test_every_prefix_of_a_zip_checkpoint_is_truncated_or_corrupt(tmp_path) -> None:
    """All ~4,000 prefixes (os.truncate, shortest last: rewriting files is slow on some disks)."""
    data, path = file_bytes()["small_zip"], tmp_path / "cut.pt"
    path.write_bytes(data)
    assert load_checkpoint(path)["optimizer_history"]
    started = time.monotonic()
    for size in range(len(data) - 1, 0, -1):
        os.truncate(path, size)
        with pytest.raises(UserError, match="truncated or corrupt|not a PyTorch checkpoint") as caught:
            load_checkpoint(path)
        assert_one_line_naming(caught.value, path)
    assert time.monotonic() - started < 20


def legacy_prefix_sizes(data: bytes) -> list[int]:
    """Every 4th prefix of a legacy file, and every one within 3 bytes of the end of one of its
    pickles (torch reads five before the raw tensor data) or of the file."""
    ends, offset = [], 0
    for _ in range(5):
        *_, (_, _, stop) = pickletools.genops(data[offset:])
        offset += stop + 1
        ends.append(offset)
    near = {end + delta for end in [*ends, len(data)] for delta in range(-3, 4)}
    return sorted({size for size in [*range(1, len(data), 4), *near] if 0 < size < len(data)})


def test_prefixes_of_a_legacy_pickle_checkpoint_are_truncated_or_corrupt(tmp_path) -> None:
    data, path = file_bytes()["small_legacy"], tmp_path / "cut.pt"
    for size in legacy_prefix_sizes(data):
        path.write_bytes(data[:size])
        with pytest.raises(UserError, match="truncated or corrupt") as caught:
            load_checkpoint(path)
        assert_one_line_naming(caught.value, path)


@PROPERTY
@given(kind=st.sampled_from(["model_zip", "model_legacy"]), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_a_cut_model_fails_in_load_pretrained_in_one_line(tmp_path, kind, fraction) -> None:
    data, path = file_bytes()[kind], tmp_path / "model.pt"
    path.write_bytes(data[:int(fraction * len(data))])
    with pytest.raises(UserError) as caught:
        load_pretrained(path)
    assert_one_line_naming(caught.value, path)


def test_a_cut_pytorch_model_bin_of_a_hugging_face_folder(tmp_path) -> None:
    """The same reader serves a Hugging Face folder's pickled weights."""
    from roberta.models.hf_export import save_hf_folder

    model = tiny_model()
    save_hf_folder(tmp_path, model.state_dict(), TINY)
    weights = tmp_path / "pytorch_model.bin"
    (tmp_path / "model.safetensors").unlink()
    torch.save({"roberta." + key: value for key, value in model.state_dict().items()}, weights)
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated or corrupt") as caught:
        load_pretrained(tmp_path)
    assert_one_line_naming(caught.value, weights)


# --------------------------------------------------------------------------- flipped bytes


FLIPS = st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4)


def write_flipped(tmp_path: Path, kind: str, flips: list[tuple[float, int]]) -> Path:
    """The stored file `kind` with the given bits flipped (positions as fractions of its length)."""
    data = bytearray(file_bytes()[kind])
    for fraction, bit in flips:
        data[int(fraction * len(data))] ^= 1 << bit
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    return path


@PROPERTY
@given(kind=st.sampled_from(["small_zip", "small_legacy"]), flips=FLIPS)
def test_flipped_bits_load_or_fail_in_one_line(tmp_path, kind, flips) -> None:
    load_or_one_line_error(load_checkpoint, write_flipped(tmp_path, kind, flips))


@PROPERTY
@given(kind=st.sampled_from(["model_zip", "model_legacy"]), flips=FLIPS)
def test_flipped_bits_in_a_model_load_or_fail_in_one_line(tmp_path, kind, flips) -> None:
    load_or_one_line_error(load_model, write_flipped(tmp_path, kind, flips))


# ------------------------------------------------------------------------- weight values


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_them(tmp_path, value) -> None:
    state = tiny_model().state_dict()
    state["encoder.sentence_encoder.layers.0.fc1.weight"][0, 0] = value
    state["encoder.sentence_encoder.layers.0.fc2.bias"][1] = value
    path = save_our_checkpoint(tmp_path / "diverged.pt", state, TINY)
    with pytest.raises(UserError, match=r"2 weights hold NaN or infinite values \(encoder\.sentence_encoder\."
                                        r"layers\.0\.fc1\.weight, .*fc2\.bias\).*use an earlier checkpoint"):
        load_pretrained(path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_weights_that_are_not_floating_point_are_refused(tmp_path, dtype) -> None:
    state = tiny_model().state_dict()
    key = "encoder.sentence_encoder.layers.0.fc1.bias"
    state[key] = state[key].to(dtype)
    path = save_our_checkpoint(tmp_path / "ints.pt", state, TINY)
    with pytest.raises(UserError, match=rf"the weight {key} has dtype {str(dtype)[6:]}; weights must be "
                                        r"floating point") as caught:
        load_pretrained(path)
    assert_one_line_naming(caught.value, path)


def test_half_precision_weights_load(tmp_path) -> None:
    state = {key: value.half() for key, value in tiny_model().state_dict().items()}
    assert load_pretrained(save_our_checkpoint(tmp_path / "fp16.pt", state, TINY)).config == TINY


# -------------------------------------------------------------------------------- heads


def squad_model() -> RobertaModel:
    model = tiny_model()
    model.register_span_head(SPAN)  # as tasks/squad2.py builds it
    model.register_classification_head(ANSWERABLE, num_classes=1)
    return model


def test_a_squad_checkpoint_lacks_nothing(tmp_path, caplog) -> None:
    """The span head has no dense layer; none is expected of it, and the hub rebuilds it as one."""
    model = squad_model()
    path = save_our_checkpoint(tmp_path / "squad.pt", model.state_dict(), TINY)
    with caplog.at_level(logging.INFO):
        pretrained = load_pretrained(path)
    assert "weights the model needs" not in caplog.text and not pretrained.missing
    assert "classification heads: squad_span (span), squad_answerable (1 classes)" in caplog.text
    assert pretrained.span_heads == [SPAN] and set(pretrained.heads) == {SPAN, ANSWERABLE}
    rebuilt = RobertaModel(pretrained.config)
    pretrained.register_heads(rebuilt)
    load_model_weights(rebuilt, pretrained.state_dict, path=path)
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


@pytest.mark.parametrize("dropped", ["classification_heads.squad_answerable.dense.bias",
                                     "encoder.sentence_encoder.layers.0.fc2.bias",
                                     "classification_heads.squad_span.out_proj.bias"])
def test_a_weight_that_is_really_missing_is_still_reported(tmp_path, caplog, dropped) -> None:
    state = squad_model().state_dict()
    del state[dropped]
    path = save_our_checkpoint(tmp_path / "squad.pt", state, TINY)
    with caplog.at_level(logging.WARNING):
        pretrained = load_pretrained(path)
    assert pretrained.missing == [dropped]
    assert f"lacks 1 weights the model needs: {dropped}" in caplog.text
