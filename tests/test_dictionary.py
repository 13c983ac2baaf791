"""Dictionary: fairseq dict.txt semantics, building, encoding, and the line reader."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from roberta.data.dictionary import (Dictionary, build_dictionary, count_tokens,
                                     find_line_offsets, iter_lines)
from roberta.errors import UserError


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_real_roberta_dictionary(shared_data: Path) -> None:
    dictionary = Dictionary.load(shared_data / "gpt2_bpe" / "dict.txt")
    assert len(dictionary) == 50264
    assert dictionary.add_symbol("<mask>") == 50264
    assert len(dictionary) == 50265
    assert [dictionary.bos(), dictionary.pad(), dictionary.eos(), dictionary.unk()] == [0, 1, 2, 3]
    assert dictionary.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert dictionary.index("13") == 4  # first line of the file is "." (GPT-2 id 13)
    assert [dictionary.index(i) for i in ("15496", "995", "0")] == [31414, 232, 328]
    assert dictionary[50263] == "madeupword0002"


def test_save_load_round_trip_is_byte_identical(tmp_path: Path) -> None:
    text = "the 10\nx y z 7\n, 3\nmadeupword0000 0\n"
    source = write(tmp_path / "dict.txt", text)
    dictionary = Dictionary.load(source)
    assert dictionary.index("x y z") == 5  # split on the last space only
    assert dictionary.count[5] == 7
    dictionary.save(tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_text(encoding="utf-8") == text
    assert not list(tmp_path.glob("*.tmp"))
    assert Dictionary.load(tmp_path / "copy.txt") == dictionary


def test_duplicate_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "dict.txt", "a 3\nb 2\na 1\n")
    with pytest.raises(UserError, match=r"dict\.txt, line 3: duplicate symbol 'a'"):
        Dictionary.load(path)


def test_overwrite_flag_replaces_earlier_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "dict.txt", "a 3\nb 2\na 1 #fairseq:overwrite\n")
    dictionary = Dictionary.load(path)
    assert len(dictionary) == 7
    assert dictionary.index("a") == 6 and dictionary.count[6] == 1
    dictionary.save(tmp_path / "again.txt")  # the saved file must load again
    assert Dictionary.load(tmp_path / "again.txt").index("a") == 6


@pytest.mark.parametrize("bad_line", ["lonely", "word x", "", " 5", "a b c #fairseq:overwrite"])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    path = write(tmp_path / "dict.txt", f"good 1\n{bad_line}\nalso 1\n")
    with pytest.raises(UserError) as error:
        Dictionary.load(path)
    assert str(path) in str(error.value) and "line 2" in str(error.value)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        Dictionary.load(tmp_path / "nope.txt")


def test_finalize_sorts_by_count_then_alphabet_and_pads() -> None:
    dictionary = Dictionary()
    for symbol, count in [("b", 5), ("a", 5), ("z", 9), ("c", 1), ("d", 2)]:
        dictionary.add_symbol(symbol, n=count)
    dictionary.finalize(padding_factor=8)
    assert dictionary.symbols == ["<s>", "<pad>", "</s>", "<unk>", "z", "a", "b", "d", "c",
                                  "madeupword0000", "madeupword0001", "madeupword0002",
                                  "madeupword0003", "madeupword0004", "madeupword0005",
                                  "madeupword0006"]
    assert dictionary.count[4:9] == [9, 5, 5, 2, 1]
    assert dictionary.index("a") == 5


def test_finalize_threshold_and_nwords() -> None:
    def built(**kwargs: int) -> list[str]:
        dictionary = Dictionary()
        for symbol, count in [("a", 4), ("b", 3), ("c", 2), ("d", 1)]:
            dictionary.add_symbol(symbol, n=count)
        dictionary.finalize(padding_factor=1, **kwargs)
        return dictionary.symbols[4:]

    assert built() == ["a", "b", "c", "d"]
    assert built(threshold=2) == ["a", "b", "c"]
    assert built(nwords=6) == ["a", "b"]  # nwords counts the 4 specials
    assert built(nwords=6, threshold=4) == ["a"]


def test_encode_line_and_string() -> None:
    dictionary = Dictionary()
    for symbol in ["hello", "world"]:
        dictionary.add_symbol(symbol)
    replaced = []
    ids = dictionary.encode_line("  hello\tmystery world \n",
                                 consumer=lambda word, index: replaced.append((word, index)))
    assert ids.dtype == torch.int32
    assert ids.tolist() == [4, 3, 5, 2]
    assert replaced == [("hello", 4), ("mystery", 3), ("world", 5)]
    assert dictionary.encode_line("hello", append_eos=False).tolist() == [4]
    assert dictionary.string(ids) == "hello <unk> world"
    assert dictionary.string(ids, escape_unk=True) == "hello <<unk>> world"
    assert dictionary.string(torch.tensor([0, 4, 2]), include_eos=True) == "hello </s>"
    assert dictionary.string(torch.tensor([[4, 2], [5, 2]])) == "hello\nworld"
    assert dictionary.encode_line("new", add_if_not_exist=True).tolist() == [6, 2]
    assert dictionary[99] == "<unk>"


def test_iter_lines_matches_python_text_mode(tmp_path: Path) -> None:
    rng = random.Random(0)
    pieces = ["a", "bé", " ", "\n", "\r\n", "\r", "\r\r\n", "\t", "x y", "😀"]
    text = "".join(rng.choice(pieces) for _ in range(3000)) + "tail\r"
    path = write(tmp_path / "mixed.txt", text)
    with open(path, encoding="utf-8") as handle:
        expected = [line.rstrip("\n") for line in handle]
    assert list(iter_lines(path)) == expected
    for chunks in (2, 3, 7, 50):
        offsets = find_line_offsets(path, chunks)
        assert offsets[0] == 0 and offsets[-1] == path.stat().st_size
        assert offsets == sorted(offsets)
        pieces_read = [line for start, end in zip(offsets, offsets[1:])
                       for line in iter_lines(path, start, end)]
        assert pieces_read == expected


def test_iter_lines_reports_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(UserError, match=r"bad\.txt: the line at byte offset 5 is not UTF-8"):
        list(iter_lines(path))


def test_build_dictionary_counts_tokens_and_eos(tmp_path: Path) -> None:
    rng = random.Random(1)
    words = [f"w{i}" for i in range(40)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(500)]
    path = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    single = build_dictionary([path], workers=1)
    double = build_dictionary([path], workers=2)
    assert double.symbols == single.symbols and double.count == single.count
    expected = count_tokens(path)
    assert expected["</s>"] == 500
    assert single.count[single.eos()] == 1 + 500
    for word in words:
        assert single.count[single.index(word)] == expected[word]
    assert len(single) == 48  # 4 specials + 40 words, padded to a multiple of 8
    ranked = single.count[4:44]
    assert ranked == sorted(ranked, reverse=True)
    extended = build_dictionary([path], extra_symbols=["never", "w3"], padding_factor=1)
    assert extended.symbols[-1] == "never" and extended.count[-1] == 0
    assert extended.count[extended.index("w3")] == expected["w3"]
