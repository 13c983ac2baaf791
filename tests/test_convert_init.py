"""`roberta-convert --init ARCH --dict DICT OUTPUT`: a freshly initialised model, as roberta-train starts it.

The file restores in masked-LM training and in fine-tuning on data binarized with DICT (no size
mismatch: the vocabulary has the `<mask>` every task appends); its weights are roberta-train's own
starting weights for the same sizes, dictionary and --seed; every layout reads back identically;
a wrong command line is one line and writes nothing.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from roberta.cli import convert, setup, train
from roberta.models.pretrained import load_pretrained
from support.cli import Command, assert_one_line_error
from support.paths import REPO
from support.race_data import generated_race_bin
from support.train_args import model_size_flags, tiny_args

SHARED_DICT = REPO.parent / "shared" / "data" / "gpt2_bpe" / "dict.txt"
SIZES = model_size_flags(layers=2, embed_dim=32, ffn_dim=64, heads=2)
HEAD = "sentence_classification_head"


def fresh(dictionary: Path, output: Path, *extra: str, to: str = "ours") -> Path:
    """A fresh 2 x 32 model written at `output`."""
    convert.main(["--init", "roberta_base", "--dict", str(dictionary), *SIZES, *extra, str(output), "--to", to])
    return output


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_pretrained(path).state_dict


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert set(ours) == set(theirs)
    different = [key for key in ours if not torch.equal(ours[key], theirs[key])]
    assert not different, different


@pytest.fixture(scope="module")
def small_dictionary(tmp_path_factory) -> Path:
    """A generated dict.txt of 300 symbols: small files for the tests that write many models."""
    path = tmp_path_factory.mktemp("dict") / "dict.txt"
    path.write_text("".join(f"{index} {1000 - index}\n" for index in range(300)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dictionary(small_dictionary: Path) -> Path:
    """GPT-2's dict.txt (the released RoBERTa models' vocabulary) where present, else the generated one."""
    return SHARED_DICT if SHARED_DICT.is_file() else small_dictionary


def entries(dictionary: Path) -> int:
    return len(dictionary.read_text(encoding="utf-8-sig").splitlines())


def test_the_model_has_the_requested_sizes_and_the_tasks_vocabulary(dictionary: Path, tmp_path: Path) -> None:
    loaded = load_pretrained(fresh(dictionary, tmp_path / "fresh.pt", "--max-positions", "64"))
    config = loaded.config
    assert config is not None and loaded.source == "ours" and loaded.heads == {}
    assert (config.encoder_layers, config.encoder_embed_dim, config.encoder_ffn_embed_dim) == (2, 32, 64)
    assert (config.encoder_attention_heads, config.max_positions) == (2, 64)
    # <s> <pad> </s> <unk>, the file's symbols, then the <mask> every RoBERTa task adds.
    assert config.vocab_size == 4 + entries(dictionary) + 1
    if dictionary == SHARED_DICT:
        assert config.vocab_size == 50265  # roberta.base's embedding rows
    state = loaded.state_dict
    assert state["encoder.sentence_encoder.embed_tokens.weight"].shape == (config.vocab_size, 32)
    assert state["encoder.sentence_encoder.embed_positions.weight"].shape == (64 + 2, 32)
    assert state["encoder.sentence_encoder.layers.1.fc1.weight"].shape == (64, 32)
    assert not any(key.startswith("encoder.sentence_encoder.layers.2.") for key in state)


def test_its_weights_are_the_ones_roberta_train_starts_from(demo_data_bin: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    started: dict[str, torch.Tensor] = {}
    build_task = setup.build_task

    def recording(*args, **kwargs):
        task, model = build_task(*args, **kwargs)
        started.update({key: value.clone() for key, value in model.state_dict().items()})
        return task, model

    monkeypatch.setattr(setup, "build_task", recording)
    flags = [*SIZES, "--max-positions", "128", "--seed", "7"]
    train.main(tiny_args(demo_data_bin, tmp_path / "run", *flags, "--max-update", "1", "--no-save",
                         "--disable-validation"))
    convert.main(["--init", "roberta_tiny", "--dict", str(demo_data_bin / "dict.txt"), *flags,
                  str(tmp_path / "fresh.pt"), "--to", "ours"])
    assert started and not started["encoder.lm_head.bias"].any()
    assert_same_weights(weights(tmp_path / "fresh.pt"), started)


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(small_dictionary: Path, tmp_path: Path) -> None:
    first = weights(fresh(small_dictionary, tmp_path / "a.pt", "--seed", "5"))
    assert_same_weights(weights(fresh(small_dictionary, tmp_path / "b.pt", "--seed", "5")), first)
    other = weights(fresh(small_dictionary, tmp_path / "c.pt", "--seed", "6"))
    key = "encoder.sentence_encoder.layers.0.fc1.weight"
    assert not torch.equal(other[key], first[key])
    default = weights(fresh(small_dictionary, tmp_path / "d.pt"))
    assert_same_weights(weights(fresh(small_dictionary, tmp_path / "e.pt", "--seed", "1")), default)


def test_initial_weights_follow_fairseqs_bert_init(small_dictionary: Path, tmp_path: Path) -> None:
    """N(0, 0.02) weights, zero biases, layer norms at 1 and 0, zero padding rows; 256 wide, so
    each weight matrix holds enough draws to pin its standard deviation."""
    convert.main(["--init", "roberta_small", "--dict", str(small_dictionary), "--encoder-layers", "1",
                  str(tmp_path / "small.pt"), "--to", "ours"])
    state = weights(tmp_path / "small.pt")
    layer = "encoder.sentence_encoder.layers.0."
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"):
        weight = state[f"{layer}{name}.weight"]
        assert abs(weight.mean().item()) < 1e-3 and weight.std().item() == pytest.approx(0.02, rel=0.03), name
        assert not state[f"{layer}{name}.bias"].any(), name
    for name in ("embed_tokens", "embed_positions"):
        table = state[f"encoder.sentence_encoder.{name}.weight"]
        assert not table[1].any(), name  # the padding row
        assert table[2:].std().item() == pytest.approx(0.02, rel=0.03), name
    for norm in (f"{layer}self_attn_layer_norm", f"{layer}final_layer_norm",
                 "encoder.sentence_encoder.layernorm_embedding", "encoder.lm_head.layer_norm"):
        assert torch.all(state[f"{norm}.weight"] == 1) and not state[f"{norm}.bias"].any(), norm
    assert state["encoder.lm_head.dense.weight"].std().item() == pytest.approx(0.02, rel=0.03)
    assert not state["encoder.lm_head.bias"].any()


@pytest.mark.parametrize("to", ["fairseq", "fairseq-2019", "huggingface"])
def test_every_layout_reads_back_with_the_same_weights(small_dictionary: Path, tmp_path: Path, to: str) -> None:
    ours = weights(fresh(small_dictionary, tmp_path / "ours.pt"))
    loaded = load_pretrained(fresh(small_dictionary, tmp_path / to / "model", to=to))
    assert loaded.source == to and not loaded.missing and loaded.heads == {}
    assert_same_weights(loaded.state_dict, ours)


def test_masked_lm_training_restores_it(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    model = fresh(demo_data_bin / "dict.txt", tmp_path / "fresh.pt", "--max-positions", "128")
    # --arch roberta_tiny is 64 wide: the sizes come from the file.
    train.main(tiny_args(demo_data_bin, tmp_path / "run", "--restore-file", str(model), "--log-format", "json",
                         "--disable-validation"))
    log = capfd.readouterr().err
    assert f"loaded {len(weights(model))} tensors from {model}" in log
    assert '"train_num_updates": "2"' in log
    trained = load_pretrained(tmp_path / "run" / "checkpoint_last.pt").config
    assert trained == load_pretrained(model).config


def test_race_fine_tuning_restores_it_with_a_new_head(tmp_path: Path, capfd) -> None:
    race = generated_race_bin(tmp_path / "race", {"train": 8, "dev": 4, "test": 2}, seed=2)
    model = fresh(race / "input0" / "dict.txt", tmp_path / "fresh.pt", "--max-positions", "128")
    train.main([str(race), "--restore-file", str(model), "--reset-optimizer", "--reset-dataloader",
                "--reset-meters", "--task", "sentence_ranking", "--criterion", "sentence_ranking", "--num-classes",
                "4", "--init-token", "0", "--separator-token", "2", "--max-option-length", "32",
                "--truncate-sequence", "--arch", "roberta_base", "--optimizer", "adam", "--lr", "1e-4",
                "--batch-size", "4", "--required-batch-size-multiple", "1", "--max-update", "2",
                "--disable-validation", "--save-dir", str(tmp_path / "run"), "--num-workers", "0", "--cpu",
                "--log-format", "json"])
    log = capfd.readouterr().err
    assert f"loaded {len(weights(model))} tensors from {model}" in log
    assert f"newly initialized classification heads: {HEAD}" in log
    trained = load_pretrained(tmp_path / "run" / "checkpoint_last.pt")
    assert trained.config == load_pretrained(model).config and HEAD in trained.heads


def test_converting_still_takes_input_and_output_around_the_flags(small_dictionary: Path, tmp_path: Path) -> None:
    source = fresh(small_dictionary, tmp_path / "fresh.pt")
    convert.main([str(source), "--to", "fairseq", str(tmp_path / "model.pt")])
    assert_same_weights(weights(tmp_path / "model.pt"), weights(source))


@pytest.mark.parametrize("to", ["ours", "huggingface"])
def test_a_failed_write_leaves_nothing_behind(small_dictionary: Path, tmp_path: Path, command: Command,
                                              monkeypatch: pytest.MonkeyPatch, to: str) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    output = tmp_path / "new" / "folder" / "model"
    result = command("convert", "--init", "roberta_tiny", "--dict", small_dictionary, output, "--to", to)
    assert_one_line_error(result, "roberta-convert", f"could not write {output}: {os.strerror(errno.ENOSPC)}; "
                                                     f"nothing was left behind")
    assert list(tmp_path.iterdir()) == []


def bad_dictionaries(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "malformed.txt").write_text("the 10\nwithout-a-count\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    return {"malformed": tmp_path / "malformed.txt", "empty": tmp_path / "empty.txt"}


ERRORS = {
    "input with --init": (["--init", "roberta_base", "--dict", "{dict}", "{model}", "{out}"],
                          "--init writes a fresh model and reads no INPUT"),
    "no input without --init": (["{out}"], "OUTPUT is missing: give INPUT OUTPUT"),
    "--dict without --init": (["--dict", "{dict}", "{model}", "{out}"], "--dict only applies with --init"),
    "size without --init": (["--encoder-layers", "2", "{model}", "{out}"],
                            "--encoder-layers only applies with --init"),
    "--init without --dict": (["--init", "roberta_base", "{out}"], "--init needs --dict DICT"),
    "head name with --init": (["--init", "roberta_base", "--dict", "{dict}", "--classification-head-name", "x",
                               "{out}"], "--classification-head-name only applies when converting an INPUT"),
    "unknown arch": (["--init", "roberta_huge", "--dict", "{dict}", "{out}"],
                     "--init 'roberta_huge' is not an architecture; choose from: roberta,"),
    "missing dict": (["--init", "roberta_base", "--dict", "{tmp}/nope.txt", "{out}"],
                     "dictionary file {tmp}/nope.txt does not exist"),
    "malformed dict": (["--init", "roberta_base", "--dict", "{malformed}", "{out}"], "malformed.txt, line 2"),
    "empty dict": (["--init", "roberta_base", "--dict", "{empty}", "{out}"], "empty.txt holds no symbols"),
    "heads not dividing": (["--init", "roberta_base", "--dict", "{dict}", "--encoder-embed-dim", "32",
                            "--encoder-attention-heads", "5", "{out}"],
                           "--encoder-embed-dim 32 is not divisible by --encoder-attention-heads 5"),
    "zero layers": (["--init", "roberta_base", "--dict", "{dict}", "--encoder-layers", "0", "{out}"],
                    "--encoder-layers must be >= 1, got 0"),
}


@pytest.fixture(scope="module")
def model(dictionary: Path, tmp_path_factory) -> Path:
    return fresh(dictionary, tmp_path_factory.mktemp("model") / "model.pt")


@pytest.mark.parametrize("case", list(ERRORS))
def test_a_wrong_command_line_is_one_line_and_writes_nothing(dictionary: Path, model: Path, tmp_path: Path,
                                                             command: Command, case: str) -> None:
    values = {"dict": dictionary, "model": model, "out": tmp_path / "out" / "model.pt", "tmp": tmp_path,
              **bad_dictionaries(tmp_path)}
    argv, fragment = ERRORS[case]
    before = sorted(tmp_path.rglob("*"))
    result = command("convert", *(arg.format(**values) for arg in argv), "--to", "ours")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_one_line_error(result, "roberta-convert", fragment.format(**values))
    assert sorted(tmp_path.rglob("*")) == before


def test_the_usage_shows_both_forms() -> None:
    usage = convert.build_parser().format_usage()
    assert "roberta-convert INPUT OUTPUT --to FORMAT" in usage
    assert "roberta-convert --init ARCH --dict DICT OUTPUT --to FORMAT" in usage
