"""The hub interface: text <-> tokens with the real GPT-2 BPE, fill_mask on a model trained here
with roberta-train, features and heads, every model format `load_pretrained` reads, errors."""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from roberta.cli import preprocess, train
from roberta.data.bpe import train_byte_level_bpe, train_sentencepiece, vocabulary_symbols
from roberta.data.dictionary import Dictionary
from roberta.demo_corpus import make_sentence
from roberta.errors import UserError
from roberta.hub import InvalidInputError, RobertaHubInterface, from_pretrained
from roberta.models.config import ModelConfig
from roberta.models.hf_export import save_fairseq_checkpoint, save_hf_folder, save_our_checkpoint
from roberta.models.roberta import RobertaModel

GPT2_FILES = ("dict.txt", "encoder.json", "vocab.bpe")
SENTENCES = ["Hello world!", "It's 3.14 degrees, isn't it?", "  Spaces\tand\nnewlines  ",
             "Naïve café — ünïcödé 🙂 中文", "The farmers eat a red apple."]


def tiny_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, encoder_layers=2, encoder_embed_dim=16,
                       encoder_ffn_embed_dim=32, encoder_attention_heads=2, max_positions=64)


def model_folder(folder: Path, model: RobertaModel, files: dict[str, Path]) -> Path:
    """`model.pt` in our layout plus the named vocabulary files, as `from_pretrained` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    save_our_checkpoint(folder / "model.pt", model.state_dict(), model.config)
    for name, source in files.items():
        shutil.copy(source, folder / name)
    return folder


def write_hf_tokenizer(folder: Path, source: Path) -> None:
    """A Hugging Face RoBERTa tokenizer's `vocab.json` (BPE symbol -> model index, which is
    what `dict.txt` makes of the GPT-2 ids) and `merges.txt` (= `vocab.bpe`)."""
    dictionary = Dictionary.load(source / "dict.txt")
    dictionary.add_symbol("<mask>")
    gpt2 = json.loads((source / "encoder.json").read_text(encoding="utf-8"))
    vocab = {symbol: dictionary.index(str(gpt2_id)) for symbol, gpt2_id in gpt2.items()
             if str(gpt2_id) in dictionary}
    vocab.update({dictionary[index]: index for index in range(len(dictionary))
                  if not dictionary[index].isdigit()})
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    shutil.copy(source / "vocab.bpe", folder / "merges.txt")


# ------------------------------------------------------------------ the real GPT-2 vocabulary


@pytest.fixture(scope="module")
def gpt2_model_dir(gpt2_bpe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model over RoBERTa's real vocabulary (50265 symbols)."""
    torch.manual_seed(0)
    model = RobertaModel(tiny_config(len(Dictionary.load(gpt2_bpe_dir / "dict.txt")) + 1))
    return model_folder(tmp_path_factory.mktemp("gpt2") / "model", model,
                        {name: gpt2_bpe_dir / name for name in GPT2_FILES})


@pytest.fixture(scope="module")
def gpt2_hub(gpt2_model_dir: Path) -> RobertaHubInterface:
    return from_pretrained(gpt2_model_dir).eval()


def test_encode_matches_fairseq_readme(gpt2_hub: RobertaHubInterface) -> None:
    tokens = gpt2_hub.encode("Hello world!")
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [0, 31414, 232, 328, 2]
    assert gpt2_hub.mask_idx == 50264 == gpt2_hub.task.mask_idx
    # GPT-2's BPE keeps a leading space inside the word's token.
    assert gpt2_hub.encode("world").tolist() != gpt2_hub.encode(" world").tolist()


def test_decode_inverts_encode(gpt2_hub: RobertaHubInterface) -> None:
    for sentence in SENTENCES:
        assert gpt2_hub.decode(gpt2_hub.encode(sentence)) == sentence


def test_sentence_pairs_use_the_double_separator(gpt2_hub: RobertaHubInterface) -> None:
    first, second, third = SENTENCES[:3]
    hello, question = gpt2_hub.encode(first)[1:-1].tolist(), gpt2_hub.encode(second)[1:-1].tolist()
    pair = gpt2_hub.encode(first, second)
    assert pair.tolist() == [0, *hello, 2, 2, *question, 2]
    assert gpt2_hub.decode(pair) == [first, second]
    assert gpt2_hub.decode(gpt2_hub.encode(first, second, third)) == [first, second, third]
    joined = gpt2_hub.encode(first, second, no_separator=True)
    assert joined.tolist() == [0, *hello, 2, *question, 2]
    assert gpt2_hub.decode(joined) == first + second
    assert gpt2_hub.decode(pair[1:]) == [first, second]  # without <s>


def test_hugging_face_tokenizer_files_replace_dict_and_gpt2_files(
        gpt2_bpe_dir: Path, gpt2_model_dir: Path, gpt2_hub: RobertaHubInterface, tmp_path: Path) -> None:
    shutil.copy(gpt2_model_dir / "model.pt", tmp_path / "model.pt")
    write_hf_tokenizer(tmp_path, gpt2_bpe_dir)
    hub = from_pretrained(tmp_path).eval()
    assert hub.encode("Hello world!").tolist() == [0, 31414, 232, 328, 2]
    assert hub.mask_idx == gpt2_hub.mask_idx and len(hub.dictionary) == len(gpt2_hub.dictionary)
    for sentence in SENTENCES:
        assert hub.encode(sentence, "And a second one.").tolist() == \
            gpt2_hub.encode(sentence, "And a second one.").tolist()
        assert hub.decode(hub.encode(sentence)) == sentence


# ------------------------------------------------------------------ a model trained in the test


def training_flags(root: Path) -> list[str]:
    return [str(root / "data-bin"), "--task", "masked_lm", "--criterion", "masked_lm",
            "--arch", "roberta_tiny", "--max-positions", "64", "--sample-break-mode", "eos",
            "--tokens-per-sample", "32", "--max-tokens", "512", "--optimizer", "adam",
            "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--clip-norm", "0",
            "--lr-scheduler", "polynomial_decay", "--lr", "5e-3", "--warmup-updates", "40",
            "--max-update", "1000", "--total-num-update", "1000", "--dropout", "0.0",
            "--attention-dropout", "0.0", "--disable-validation", "--no-epoch-checkpoints",
            "--save-dir", str(root / "checkpoints"), "--num-workers", "0", "--seed", "3",
            "--log-format", "none", "--cpu"]


@pytest.fixture(scope="module")
def grammar_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A masked-LM trained here by roberta-train on generated sentences, one per line.

    With one sentence per sample (`--sample-break-mode eos`) every verb sits a few tokens after
    `<s>`, and 1000 updates of a 64-wide model (seconds) learn which verb an object takes and
    the verb's agreement with its subject; on the paragraphs of `demo_data_bin` a model needs
    several thousand updates before it uses the context at all. The BPE is large enough to keep
    each word whole.
    """
    root = tmp_path_factory.mktemp("grammar")
    rng = random.Random(1)
    (root / "train.txt").write_text("".join(make_sentence(rng) + "\n" for _ in range(4000)),
                                    encoding="utf-8")
    bpe = train_byte_level_bpe([root / "train.txt"], 1000, root / "bpe")
    lines = (root / "train.txt").read_text(encoding="utf-8").splitlines()
    (root / "train.bpe").write_text("".join(bpe.encode(line) + "\n" for line in lines), encoding="utf-8")
    preprocess.main(["--only-source", "--trainpref", str(root / "train.bpe"), "--destdir",
                     str(root / "data-bin"), "--workers", "1"])
    # One thread: the model is too small to gain from two, and on a busy 2-core machine a
    # second thread that waits at every barrier slows training down many times over.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main(training_flags(root))
    finally:
        torch.set_num_threads(threads)
    model_dir = root / "model"
    model_dir.mkdir()
    shutil.copy(root / "checkpoints" / "checkpoint_last.pt", model_dir / "model.pt")
    shutil.copy(root / "data-bin" / "dict.txt", model_dir / "dict.txt")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(root / "bpe" / name, model_dir / name)
    return model_dir


@pytest.fixture(scope="module")
def grammar_hub(grammar_model_dir: Path) -> RobertaHubInterface:
    return from_pretrained(grammar_model_dir).eval()


@pytest.mark.parametrize("masked, expected", [
    ("The farmers <mask> a red apple.", " eat"),   # the object picks the verb, the subject its form
    ("The farmer <mask> a red apple.", " eats"),
    ("My brothers <mask> a small boat.", " ride"),
    ("<mask> farmers eat a red apple.", "The"),    # no space before a sentence's first word
])
def test_fill_mask_predicts_the_grammar(grammar_hub: RobertaHubInterface, masked: str, expected: str) -> None:
    words = [word for _, _, word in grammar_hub.fill_mask(masked, topk=3)]
    assert expected in words, words


def test_fill_mask_returns_consistent_results(grammar_hub: RobertaHubInterface) -> None:
    results = grammar_hub.fill_mask("The farmers <mask> a red apple.", topk=5)
    assert len(results) == 5
    probabilities = [probability for _, probability, _ in results]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 < probability <= 1.0 for probability in probabilities)
    assert sum(probabilities) <= 1.0 + 1e-6
    symbols = {grammar_hub.bpe.decode(symbol) for symbol in grammar_hub.dictionary.symbols}
    for filled, _, word in results:
        assert word in symbols
        assert filled == f"The farmers{word} a red apple."
    # The masked text is encoded as encode() would encode the filled one, with the mask in place
    # of the word's token, and the probability is the LM head's softmax there.
    tokens = grammar_hub.encode(results[0][0])
    word_index = grammar_hub.dictionary.index(grammar_hub.bpe.encode(results[0][2]))
    position = tokens.tolist().index(word_index)
    tokens[position] = grammar_hub.mask_idx
    with torch.no_grad():
        logits, _ = grammar_hub.model(tokens[None])
    assert logits[0, position].softmax(-1).max().item() == pytest.approx(results[0][1], rel=1e-5)
    everything = grammar_hub.fill_mask("The farmers <mask> a red apple.", topk=1000)
    assert len(everything) == len(grammar_hub.dictionary)


def test_fill_mask_predicts_without_dropout_and_restores_the_mode(
        grammar_hub: RobertaHubInterface, grammar_model_dir: Path, tmp_path: Path) -> None:
    noisy = dataclasses.replace(grammar_hub.model.config, dropout=0.3, attention_dropout=0.3)
    model = RobertaModel(noisy)
    model.load_state_dict(grammar_hub.model.state_dict())
    hub = RobertaHubInterface.from_pretrained(
        model_folder(tmp_path, model, {name: grammar_model_dir / name for name in GPT2_FILES}))
    assert hub.training, "as fairseq's, a loaded model is left in training mode"
    tokens = hub.encode("The farmer eats a red apple.")
    assert not torch.equal(hub.extract_features(tokens), hub.extract_features(tokens)), "dropout is on"
    masked = "The farmer <mask> a red apple."
    assert hub.fill_mask(masked) == hub.fill_mask(masked) == grammar_hub.fill_mask(masked)
    assert hub.training and hub.model.training


@pytest.mark.parametrize("masked", ["No mask here.", "<mask> and <mask>.", "<mas k>"])
def test_fill_mask_needs_exactly_one_mask(grammar_hub: RobertaHubInterface, masked: str) -> None:
    with pytest.raises(InvalidInputError, match="exactly one <mask>"):
        grammar_hub.fill_mask(masked)


def test_input_errors_are_user_and_value_errors(grammar_hub: RobertaHubInterface) -> None:
    limit = grammar_hub.model.max_positions()
    assert grammar_hub.extract_features(torch.full((limit,), 5)).shape[1] == limit
    too_long = torch.full((limit + 1,), 5)
    for call in (lambda: grammar_hub.extract_features(too_long),
                 lambda: grammar_hub.predict("any", too_long),
                 lambda: grammar_hub.fill_mask("The farmers eat a red apple. " * 10 + "<mask>"),
                 lambda: grammar_hub.fill_mask("The farmers <mask> a red apple.", topk=0),
                 lambda: grammar_hub.extract_features(torch.tensor([0, len(grammar_hub.dictionary)])),
                 lambda: grammar_hub.extract_features(torch.zeros(3)),
                 lambda: grammar_hub.decode(torch.zeros(2, 3, dtype=torch.long))):
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    with pytest.raises(InvalidInputError, match=f"more than the {limit} positions"):
        grammar_hub.extract_features(too_long)


def test_extract_features_shapes(grammar_hub: RobertaHubInterface) -> None:
    config = grammar_hub.model.config
    tokens = grammar_hub.encode("The farmers eat a red apple.", "Two young girls sing a lullaby.")
    features = grammar_hub.extract_features(tokens)
    assert features.shape == (1, len(tokens), config.encoder_embed_dim)
    states = grammar_hub.extract_features(tokens, return_all_hiddens=True)
    assert len(states) == config.encoder_layers + 1
    assert all(state.shape == features.shape for state in states)
    torch.testing.assert_close(states[-1], features)
    assert not torch.allclose(states[0], features)
    batch = grammar_hub.extract_features(torch.stack([tokens, tokens]))
    assert batch.shape == (2, len(tokens), config.encoder_embed_dim)
    torch.testing.assert_close(batch[1:], features)


def test_predict_with_a_registered_head(grammar_model_dir: Path) -> None:
    hub = from_pretrained(grammar_model_dir).eval()
    hub.register_classification_head("pair", num_classes=3)
    hub.register_classification_head("narrow", num_classes=2, inner_dim=8,
                                     embedding_size=hub.model.config.encoder_embed_dim)
    assert hub.model.classification_heads["narrow"].dense.out_features == 8
    tokens = hub.encode("The farmers eat a red apple.", "My brothers ride a small boat.")
    log_probs = hub.predict("pair", tokens)
    assert log_probs.shape == (1, 3)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(1))
    logits = hub.predict("pair", tokens, return_logits=True)
    torch.testing.assert_close(logits, hub.model.classification_heads["pair"](hub.extract_features(tokens)))
    torch.testing.assert_close(log_probs, logits.log_softmax(-1))
    assert hub.predict("narrow", torch.stack([tokens, tokens])).shape == (2, 2)
    with pytest.raises(UserError, match="no classification head named 'other'"):
        hub.predict("other", tokens)


@pytest.mark.parametrize("arguments, message", [
    ({"num_classes": None}, "num_classes must be a positive integer"),
    ({"num_classes": 2, "embedding_size": 7}, "embedding_size 7 differs"),
    ({"num_classes": 2, "q_noise": 0.1}, "unsupported options"),
])
def test_register_classification_head_rejects(grammar_hub: RobertaHubInterface, arguments: dict,
                                              message: str) -> None:
    with pytest.raises(UserError, match=message):
        grammar_hub.register_classification_head("bad", **arguments)


def test_heads_stored_in_the_checkpoint_are_loaded(grammar_model_dir: Path, tmp_path: Path) -> None:
    hub = from_pretrained(grammar_model_dir).eval()
    hub.register_classification_head("sentiment", num_classes=2, inner_dim=8)
    model_folder(tmp_path, hub.model, {name: grammar_model_dir / name for name in GPT2_FILES})
    loaded = RobertaHubInterface.from_pretrained(tmp_path).eval()
    assert loaded.model.classification_heads["sentiment"].dense.out_features == 8
    tokens = hub.encode("The teacher reads the morning paper.")
    torch.testing.assert_close(loaded.predict("sentiment", tokens), hub.predict("sentiment", tokens))


# ------------------------------------------------------------------------- other model formats


def _fairseq_2019(folder: Path, model: RobertaModel) -> None:
    save_fairseq_checkpoint(folder / "model.pt", model.state_dict(), model.config, generation="2019")


def _fairseq_current(folder: Path, model: RobertaModel) -> None:
    save_fairseq_checkpoint(folder / "model.pt", model.state_dict(), model.config)


def _hugging_face(folder: Path, model: RobertaModel) -> None:
    save_hf_folder(folder, model.state_dict(), model.config)


@pytest.mark.parametrize("write", [_fairseq_2019, _fairseq_current, _hugging_face])
def test_every_model_format_gives_the_same_hub(grammar_model_dir: Path, grammar_hub: RobertaHubInterface,
                                               tmp_path: Path, write) -> None:
    write(tmp_path, grammar_hub.model)
    for name in GPT2_FILES:
        shutil.copy(grammar_model_dir / name, tmp_path / name)
    hub = from_pretrained(tmp_path).eval()
    tokens = hub.encode("The soldiers sing the national anthem.")
    torch.testing.assert_close(hub.extract_features(tokens), grammar_hub.extract_features(tokens))
    expected = grammar_hub.fill_mask("The soldiers <mask> the national anthem.")
    found = hub.fill_mask("The soldiers <mask> the national anthem.")
    assert [word for _, _, word in found] == [word for _, _, word in expected]
    assert [p for _, p, _ in found] == pytest.approx([p for _, p, _ in expected], rel=1e-5)


def test_sentencepiece_model(tmp_path: Path) -> None:
    rng = random.Random(2)
    (tmp_path / "train.txt").write_text("".join(make_sentence(rng) + "\n" for _ in range(2000)),
                                        encoding="utf-8")
    spm = train_sentencepiece([tmp_path / "train.txt"], 80, tmp_path / "spm")
    dictionary = Dictionary()
    for symbol in vocabulary_symbols(spm):
        dictionary.add_symbol(symbol)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    dictionary.save(model_dir / "dict.txt")
    torch.manual_seed(0)
    model_folder(model_dir, RobertaModel(tiny_config(len(dictionary) + 1)),
                 {"sentencepiece.bpe.model": tmp_path / "spm.model"})
    hub = from_pretrained(model_dir, bpe="sentencepiece").eval()
    tokens = hub.encode("The farmers eat a red apple.", "A young girl sings a lullaby.")
    assert hub.dictionary.unk() not in tokens.tolist()
    assert hub.decode(tokens) == ["The farmers eat a red apple.", "A young girl sings a lullaby."]
    results = hub.fill_mask("The farmers <mask> a red apple.", topk=10)
    # Reference: the LM head at the mask; a word-initial piece ("\u2581eat") fills " <mask>"
    # with its space, as fairseq's fill_mask does for sentencepiece models.
    before, after = hub.bpe.encode("The farmers").split(), hub.bpe.encode(" a red apple.").split()
    tokens = torch.tensor([0, *map(hub.dictionary.index, before), hub.mask_idx,
                           *map(hub.dictionary.index, after), 2])
    with torch.no_grad():
        logits, _ = hub.model(tokens[None])
    top = logits[0, len(before) + 1].softmax(-1).topk(10).indices.tolist()
    pieces = [hub.dictionary[index] for index in top]
    expected = [(" " if piece.startswith("\u2581") else "") + hub.bpe.decode(piece) for piece in pieces]
    assert [word for _, _, word in results] == expected
    assert any(piece.startswith("\u2581") and len(piece) > 1 for piece in pieces)
    for filled, _, word in results:
        assert filled == f"The farmers{word} a red apple."


# ---------------------------------------------------------------------------- files and errors


def without(source: Path, target: Path, *names: str) -> Path:
    shutil.copytree(source, target)
    for name in names:
        (target / name).unlink()
    return target


def test_missing_gpt2_files_are_named_not_downloaded(grammar_model_dir: Path, tmp_path: Path) -> None:
    bare = without(grammar_model_dir, tmp_path / "bare", "encoder.json", "vocab.bpe")
    with pytest.raises(UserError, match=r"needs encoder\.json and vocab\.bpe, not found in .*bare.*"
                                        r"never downloaded"):
        from_pretrained(bare)
    half = without(grammar_model_dir, tmp_path / "half", "vocab.bpe")
    with pytest.raises(UserError, match=r"the gpt2 BPE needs vocab\.bpe, not found"):
        from_pretrained(half)
    with pytest.raises(UserError, match="cannot read BPE encoder file"):
        from_pretrained(bare, gpt2_encoder_json=tmp_path / "nowhere.json",
                        gpt2_vocab_bpe=grammar_model_dir / "vocab.bpe")
    hub = from_pretrained(bare, gpt2_encoder_json=grammar_model_dir / "encoder.json",
                          gpt2_vocab_bpe=grammar_model_dir / "vocab.bpe")
    assert hub.decode(hub.encode("The farmers eat a red apple.")) == "The farmers eat a red apple."


def test_dictionary_location_and_mismatch(grammar_model_dir: Path, tmp_path: Path) -> None:
    no_dict = without(grammar_model_dir, tmp_path / "no_dict", "dict.txt")
    with pytest.raises(UserError, match=r"no dict\.txt in"):
        from_pretrained(no_dict)
    data = tmp_path / "RTE-bin"
    (data / "input0").mkdir(parents=True)
    (data / "label").mkdir()
    shutil.copy(grammar_model_dir / "dict.txt", data / "input0" / "dict.txt")
    (data / "label" / "dict.txt").write_text("entailment 10\nnot_entailment 9\n", encoding="utf-8")
    hub = from_pretrained(no_dict, data_name_or_path=str(data))
    assert hub.task.label_dictionary.symbols[4:] == ["entailment", "not_entailment"]
    assert hub.task.source_dictionary is hub.dictionary
    (no_dict / "dict.txt").write_text((grammar_model_dir / "dict.txt").read_text() + "extra 1\n")
    with pytest.raises(UserError, match=r"vocabulary of \d+ symbols, but the dictionary gives"):
        from_pretrained(no_dict)


@pytest.mark.parametrize("arguments, message", [
    ({"checkpoint_file": "checkpoint_best.pt"}, r"checkpoint_best\.pt: no such file"),
    ({"checkpoint_file": "a.pt:b.pt"}, "ensembles"),
    ({"bpe": "wordpiece"}, "unknown bpe 'wordpiece'"),
    ({"gpt2_vocab": "x"}, "does not take gpt2_vocab"),
    ({"bpe": "sentencepiece"}, r"no sentencepiece\.bpe\.model in"),
    ({"data_name_or_path": "./missing"}, "missing does not exist"),
])
def test_from_pretrained_errors(grammar_model_dir: Path, arguments: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        from_pretrained(grammar_model_dir, **arguments)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model folder .* does not exist"):
        from_pretrained(tmp_path / "absent")


def test_device_and_half_precision(grammar_model_dir: Path, grammar_hub: RobertaHubInterface) -> None:
    hub = from_pretrained(grammar_model_dir).eval()
    assert hub.device == torch.device("cpu")
    assert hub.to("cpu") is hub and hub.half() is hub
    assert next(hub.model.parameters()).dtype == torch.float16
    tokens = hub.encode("The farmers eat a red apple.")
    features = hub.extract_features(tokens)
    assert features.dtype == torch.float16
    torch.testing.assert_close(features.float(), grammar_hub.extract_features(tokens), atol=0.05, rtol=0.05)
    assert hub.fill_mask("The farmers <mask> a red apple.", topk=1)[0][2] == \
        grammar_hub.fill_mask("The farmers <mask> a red apple.", topk=1)[0][2]


def test_package_exposes_the_hub_lazily() -> None:
    code = ("import sys, roberta; assert 'torch' not in sys.modules; "
            "from roberta import RobertaHubInterface, from_pretrained; import roberta.hub as hub; "
            "assert from_pretrained is hub.from_pretrained; "
            "assert RobertaHubInterface is hub.RobertaHubInterface")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
