"""GPT-2 byte-level BPE: the README anchor, round trips on real prose, parity with transformers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import GPT2BPE, bytes_to_unicode
from roberta.errors import UserError

AUSTEN = ["emma.txt", "pride_and_prejudice.txt", "sense_and_sensibility.txt"]
TRICKY = ["Hello world!", "  two  leading spaces", "trailing spaces   ", "tab\tand\u00a0nbsp",
          "I'm, you're, they've, we'll, he'd, it's, 'S", "numbers 12345 67,890.1", "",
          "naïve café — “quotes” 😀🎉 日本語", "\u200bzero width", "x" * 300, "a\n\nb"]


@pytest.fixture(scope="module")
def bpe(gpt2_bpe_dir: Path) -> GPT2BPE:
    return GPT2BPE.from_dir(gpt2_bpe_dir)


def austen_lines(shared_data: Path, count: int = 2000) -> list[str]:
    lines = []
    for name in AUSTEN:
        with open(shared_data / "mlm" / name, encoding="utf-8") as handle:
            lines += [line.rstrip("\n") for _, line in zip(range(count), handle)]
    return lines


def test_hello_world_matches_fairseq_readme(bpe: GPT2BPE, gpt2_bpe_dir: Path) -> None:
    assert bpe.encode("Hello world!") == "15496 995 0"
    assert bpe.encode_ids("Hello world!") == [15496, 995, 0]
    dictionary = Dictionary.load(gpt2_bpe_dir / "dict.txt")
    tokens = [dictionary.bos()] + dictionary.encode_line(bpe.encode("Hello world!")).tolist()
    assert tokens == [0, 31414, 232, 328, 2]
    assert bpe.decode(dictionary.string(tokens)) == "Hello world!"


def test_round_trip_on_austen(bpe: GPT2BPE, shared_data: Path) -> None:
    lines = austen_lines(shared_data)
    assert len(lines) == 6000
    for line in lines + TRICKY:
        assert bpe.decode(bpe.encode(line)) == line


def test_same_ids_as_transformers(bpe: GPT2BPE, gpt2_bpe_dir: Path, shared_data: Path) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2Tokenizer(str(gpt2_bpe_dir / "encoder.json"),
                                           str(gpt2_bpe_dir / "vocab.bpe"))
    for line in austen_lines(shared_data, count=300) + TRICKY:
        assert bpe.encode_ids(line) == reference.encode(line), line


def test_byte_alphabet() -> None:
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "\u0120" and table[ord("\n")] == "\u010a"
    assert table[ord("A")] == "A" and table[0xAD] == chr(323)
    assert all(table[byte] == chr(byte) for byte in range(33, 127))


def test_decode_passes_specials_and_word_starts(bpe: GPT2BPE) -> None:
    assert bpe.decode("15496 <mask> 0") == "Hello<mask>!"
    assert bpe.is_beginning_of_word("995")  # " world"
    assert not bpe.is_beginning_of_word("15496")  # "Hello"
    assert not bpe.is_beginning_of_word("<mask>")


def test_tiny_hand_made_model(tmp_path: Path) -> None:
    alphabet = sorted(bytes_to_unicode().values())
    encoder = {symbol: index for index, symbol in enumerate(alphabet)}
    encoder.update({"lo": 256, "low": 257, "Ġlow": 258})
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nl o\nlo w\nĠ low\n", encoding="utf-8")
    bpe = GPT2BPE.from_dir(tmp_path)
    assert bpe.encode_ids("low low lower") == [257, 258, 258, encoder["e"], encoder["r"]]
    assert bpe.decode(bpe.encode("low low lower")) == "low low lower"


def test_bad_model_files_are_user_errors(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    with pytest.raises(UserError, match="encoder.json"):
        GPT2BPE(tmp_path / "encoder.json", gpt2_bpe_dir / "vocab.bpe")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\nthree parts here\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"vocab\.bpe, line 3"):
        GPT2BPE(gpt2_bpe_dir / "encoder.json", tmp_path / "vocab.bpe")
    (tmp_path / "encoder.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError, match="JSON object"):
        GPT2BPE(tmp_path / "encoder.json", gpt2_bpe_dir / "vocab.bpe")
