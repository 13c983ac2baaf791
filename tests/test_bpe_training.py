"""Training byte-level BPE and sentencepiece models on generated text."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from roberta.cli.bpe import main as bpe_main
from roberta.data.bpe import (build_bpe, learn_merges, train_byte_level_bpe, train_sentencepiece,
                              vocabulary_symbols)
from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE, bytes_to_unicode
from roberta.data.sentencepiece_bpe import SentencePieceBPE
from roberta.errors import UserError

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu", "ß", "ø"]


def generated_lines(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(150)]
    lines = []
    for _ in range(count):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 15)))
        lines.append(sentence.capitalize() + rng.choice([".", "!", "?", ", 42."]))
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("\n".join(generated_lines(1500, seed=0)) + "\n", encoding="utf-8")
    return path


def naive_merges(piece_counts: dict[str, int], steps: int) -> list[tuple[str, str]]:
    """Reference BPE: recount every pair after every merge."""
    words = {tuple(piece): count for piece, count in piece_counts.items()}
    merges = []
    for _ in range(steps):
        pairs: Counter = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        merges.append(best)
        merged = {}
        for symbols, count in words.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges


def test_incremental_merges_equal_naive_recount() -> None:
    rng = random.Random(3)
    for _ in range(5):
        pieces = {"".join(rng.choice("abcab") for _ in range(rng.randint(1, 9))): rng.randint(1, 6)
                  for _ in range(60)}
        known = set("abc")
        assert learn_merges(pieces, 10_000, known) == naive_merges(pieces, 10_000)


def test_hand_computed_merges() -> None:
    assert learn_merges({"abab": 2, "ab": 1}, 10, set("ab")) == [("a", "b"), ("ab", "ab")]


def test_byte_level_bpe_round_trip_and_files(corpus: Path, tmp_path: Path) -> None:
    bpe = train_byte_level_bpe([corpus], vocab_size=400, out_dir=tmp_path)
    assert sorted(bpe.encoder.values()) == list(range(400))
    assert bpe.encoder["<|endoftext|>"] == 399
    alphabet = sorted(bytes_to_unicode().values())
    assert [bpe.decoder[i] for i in range(256)] == alphabet
    assert (tmp_path / "vocab.bpe").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    reloaded = GPT2BPE.from_dir(tmp_path)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    total_ids = 0
    for line in lines[:300] + ["Unseen: Zürich 😀 tabs\tand  spaces", ""]:
        ids = reloaded.encode_ids(line)
        total_ids += len(ids)
        assert reloaded.decode(reloaded.encode(line)) == line
    assert total_ids < sum(len(line.encode()) for line in lines[:300]) / 3  # it compresses


def test_trained_files_read_by_transformers(corpus: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    bpe = train_byte_level_bpe([corpus], vocab_size=300, out_dir=tmp_path)
    reference = transformers.GPT2Tokenizer(str(tmp_path / "encoder.json"),
                                           str(tmp_path / "vocab.bpe"))
    for line in generated_lines(50, seed=9):
        assert bpe.encode_ids(line) == reference.encode(line)


def test_training_is_deterministic(corpus: Path, tmp_path: Path) -> None:
    train_byte_level_bpe([corpus], vocab_size=350, out_dir=tmp_path / "a")
    train_byte_level_bpe([corpus], vocab_size=350, out_dir=tmp_path / "b")
    for name in ("encoder.json", "vocab.bpe"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_too_small_vocabulary_is_a_user_error(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--vocab-size 100"):
        train_byte_level_bpe([corpus], vocab_size=100, out_dir=tmp_path)


def test_sentencepiece_round_trip(corpus: Path, tmp_path: Path) -> None:
    spm = train_sentencepiece([corpus], vocab_size=120, model_prefix=tmp_path / "sp")
    assert (tmp_path / "sp.model").is_file() and (tmp_path / "sp.vocab").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".spm-")]
    for line in corpus.read_text(encoding="utf-8").splitlines()[:200]:
        encoded = spm.encode(line)
        assert spm.decode(encoded) == line
        assert spm.is_beginning_of_word(encoded.split()[0])
        assert len(spm.encode_ids(line)) == len(encoded.split())
    with pytest.raises(UserError, match="sentencepiece training failed"):
        train_sentencepiece([corpus], vocab_size=100_000, model_prefix=tmp_path / "big")
    assert not (tmp_path / "big.model").exists()


def test_build_bpe_factory(corpus: Path, tmp_path: Path) -> None:
    train_byte_level_bpe([corpus], vocab_size=300, out_dir=tmp_path)
    gpt2 = build_bpe("gpt2", encoder_json=tmp_path / "encoder.json",
                     vocab_bpe=tmp_path / "vocab.bpe")
    assert isinstance(gpt2, GPT2BPE)
    assert vocabulary_symbols(gpt2) == [str(i) for i in range(300)]
    with pytest.raises(UserError, match="--vocab-bpe"):
        build_bpe("gpt2", encoder_json=tmp_path / "encoder.json")
    with pytest.raises(UserError, match="--sentencepiece-model"):
        build_bpe("sentencepiece")
    with pytest.raises(UserError, match="does not exist"):
        build_bpe("sentencepiece", sentencepiece_model=tmp_path / "none.model")
    with pytest.raises(UserError, match="unknown BPE"):
        build_bpe("wordpiece")


@pytest.mark.parametrize("kind", ["gpt2", "sentencepiece"])
def test_train_cli_writes_model_and_dictionary(corpus: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "model"
    size = "300" if kind == "gpt2" else "200"
    bpe_main(["train", "--type", kind, "--vocab-size", size, "--inputs", str(corpus),
              "--output-dir", str(out), "--workers", "2"])
    dictionary = Dictionary.load(out / "dict.txt")
    assert len(dictionary) % 8 == 0
    if kind == "gpt2":
        bpe = build_bpe("gpt2", encoder_json=out / "encoder.json", vocab_bpe=out / "vocab.bpe")
    else:
        bpe = SentencePieceBPE(out / "sentencepiece.bpe.model")
    assert all(symbol in dictionary for symbol in vocabulary_symbols(bpe))
    line = corpus.read_text(encoding="utf-8").splitlines()[0]
    ids = dictionary.encode_line(bpe.encode(line))
    assert dictionary.unk() not in ids.tolist()
    assert bpe.decode(dictionary.string(ids)) == line
    # dict.txt is ordered by corpus frequency.
    first = Counter(tok for text in corpus.read_text(encoding="utf-8").splitlines()
                    for tok in bpe.encode(text).split()).most_common(1)[0][0]
    assert dictionary[4] == first
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
