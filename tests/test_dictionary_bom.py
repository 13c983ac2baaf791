"""Odd `dict.txt` files (a byte-order mark, CRLF, stray bytes) and the other text files the data
readers take: each loads as its content means or fails with one UserError line naming it."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roberta.data.dictionary import Dictionary, build_dictionary, iter_lines
from roberta.data.gpt2_bpe import read_encoder, read_merges
from roberta.errors import UserError
from roberta.task import read_text_lines

pytestmark = pytest.mark.reliability

BOM = "\ufeff"
ENTRIES = "the 9\n, 7\nof 5\n"


def fairseq_entries(text: str) -> list[tuple[str, int]] | None:
    """fairseq 0.12.2's Dictionary.add_from_file on already decoded text (None: it raises)."""
    # Text mode reads '\r\n' and a lone '\r' as '\n'; readlines() keeps a last line without one.
    *lines, last = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines += [last] if last else []
    symbols: set[str] = {"<s>", "<pad>", "</s>", "<unk>"}
    entries = []
    for line in lines:
        try:
            word, field = line.rstrip().rsplit(" ", 1)
            if field == "#fairseq:overwrite":
                overwrite = True
                word, field = word.rsplit(" ", 1)
            else:
                overwrite = False
            count = int(field)
        except ValueError:
            return None
        if word in symbols and not overwrite:
            return None
        symbols.add(word)
        entries.append((word, count))
    return entries


def test_a_byte_order_mark_changes_no_id(tmp_path: Path) -> None:
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text(ENTRIES, encoding="utf-8")
    marked.write_bytes((BOM + ENTRIES).replace("\n", "\r\n").encode("utf-8"))
    assert Dictionary.load(marked).symbols == Dictionary.load(plain).symbols
    assert Dictionary.load(marked).encode_line("the , of").tolist() == [4, 5, 6, 2]


def test_a_byte_order_mark_after_the_start_stays_a_symbol(tmp_path: Path) -> None:
    path = tmp_path / "dict.txt"
    path.write_text(f"the 9\n{BOM}x 1\n", encoding="utf-8")
    assert Dictionary.load(path).symbols[4:] == ["the", f"{BOM}x"]


@pytest.mark.parametrize("content, fragment", [
    (b"the 9\nof 5\nthe 3\n", "line 3: duplicate symbol 'the'"),
    (b"the 9\n\xff\xfe 5\n", "line 2: not UTF-8 text"),
    (b"the nine\n", "line 1: expected '<symbol> <count>"),
    (b"the\t9\n", "line 1: expected"),
    (b"\x00" * 500, "found '\\x00\\x00"),
    (b"<s> 1\n", "duplicate symbol '<s>'"),
    (b"the 9\n\xe2\x80\xa8 1\n\xe2\x80\xa8 1\n", "duplicate symbol '\\u2028'"),
], ids=["duplicate", "not-utf8", "count-not-int", "tab", "nul-bytes", "special-symbol", "line-separator-symbol"])
def test_a_broken_dict_txt_is_one_line_naming_the_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "dict.txt"
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        Dictionary.load(path)
    message = str(error.value)
    assert message.startswith(str(path)) and fragment in message and len(message.splitlines()) == 1
    assert len(message) < 300


PIECES = st.sampled_from(["the", "of", " ", "  ", "1", "42", "-3", "x", "\n", "\r\n", "\r", "\t", BOM, "\x00",
                          "#fairseq:overwrite", "<s>", "\u2028", "\x85", "é", "1_0"])


@st.composite
def dictionary_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=60))
    text = "".join(draw(st.lists(PIECES, max_size=25)))
    raw = text.encode("utf-8")
    if draw(st.booleans()):  # a stray byte that is not UTF-8
        position = draw(st.integers(0, len(raw)))
        raw = raw[:position] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80"])) + raw[position:]
    return raw


@settings(max_examples=200, deadline=None)
@given(dictionary_bytes())
def test_any_dict_txt_loads_as_fairseq_reads_it_or_is_one_user_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dict.txt"
        path.write_bytes(content)
        try:
            dictionary = Dictionary.load(path)
        except UserError as error:
            assert str(error).startswith(str(path)) and len(str(error).splitlines()) == 1
            return
    # Whatever loads is what fairseq reads from the same text once the byte-order mark is gone.
    expected = fairseq_entries(content.decode("utf-8").removeprefix(BOM))
    assert expected is not None
    assert list(zip(dictionary.symbols[4:], dictionary.count[4:])) == expected


# -------------------------------------------------------------------- the other text readers


def test_a_corpus_with_a_byte_order_mark_counts_its_first_word(tmp_path: Path) -> None:
    plain, marked = tmp_path / "plain.bpe", tmp_path / "marked.bpe"
    plain.write_text("10 11 12\n13 10\n", encoding="utf-8")
    marked.write_text(BOM + "10 11 12\n13 10\n", encoding="utf-8")
    assert list(iter_lines(marked)) == list(iter_lines(plain)) == ["10 11 12", "13 10"]
    assert build_dictionary([marked]).symbols == build_dictionary([plain]).symbols


def test_gpt2_files_with_a_byte_order_mark(tmp_path: Path) -> None:
    merges, encoder = tmp_path / "vocab.bpe", tmp_path / "encoder.json"
    merges.write_text(BOM + "#version: 0.2\nĠ t\nh e\n", encoding="utf-8")
    encoder.write_text(BOM + json.dumps({"a": 0, "b": 1}), encoding="utf-8")
    assert read_merges(merges) == [("Ġ", "t"), ("h", "e")]
    assert read_encoder(encoder) == {"a": 0, "b": 1}


@pytest.mark.parametrize("reader, name", [(read_merges, "vocab.bpe"), (read_encoder, "encoder.json"),
                                          (read_text_lines, "train.label")])
def test_text_that_is_not_utf8_is_one_user_error(tmp_path: Path, reader, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"{\"a\xff\": 1}\n")
    with pytest.raises(UserError, match=rf"{name} is not UTF-8 text"):
        reader(path)


def test_task_label_files_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "train.label"
    path.write_bytes((BOM + "1\r\n0\r\n").encode("utf-8"))
    assert [int(line) for line in read_text_lines(path)] == [1, 0]
