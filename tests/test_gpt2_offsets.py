"""GPT2BPE.encode_with_offsets: the ids of `encode`, and character spans that cut the text back out."""
from __future__ import annotations

from pathlib import Path

import pytest
import regex

from roberta.data.gpt2_bpe import GPT2BPE

SAMPLES = {
    "ascii": "Hello world! The Normans (Norman: Nourmands) gave their name to Normandy, 911 AD.",
    "accents": "naïve café — Ærøskøbing, São Paulo, Łódź; résumé’s “quotes”",
    "cjk": "東京は日本の首都です。丂龘𠀋 and 中文 mixed",
    "emoji": "family 👩‍👩‍👧 party 🎉🎉 ok👍",
    "spaces": "  two leading,   three inside,\ttab\u00a0nbsp   trailing   ",
    "newlines": "first line\n\nsecond line\r\n third\n",
    "contractions": "I'm sure it's they've we'll 'S",
    "empty": "",
}
LEADING_WHITESPACE = regex.compile(r"^\s*")


@pytest.fixture(scope="module")
def bpe(gpt2_bpe_dir: Path) -> GPT2BPE:
    return GPT2BPE.from_dir(gpt2_bpe_dir)


def token_bytes(bpe: GPT2BPE, token_id: int) -> bytes:
    return bytes(bpe.byte_decoder[char] for char in bpe.decoder[token_id])


def check_offsets(bpe: GPT2BPE, text: str) -> None:
    ids, spans = bpe.encode_with_offsets(text)
    assert " ".join(map(str, ids)) == bpe.encode(text)
    assert len(spans) == len(ids)
    for (start0, end0), (start1, end1) in zip(spans, spans[1:]):
        assert start0 <= start1 and end0 <= end1, (spans, text)
        # Only a multi-byte character split between two tokens may be shared by both.
        shared = start1 < end0
        assert not shared or (start1 == end0 - 1 and len(text[start1].encode()) > 1), text
    # Tokens sharing a character are compared as one group: alone, each holds part of its bytes.
    groups: list[tuple[int, int, bytes]] = []
    for token_id, (start, end) in zip(ids, spans):
        if groups and start < groups[-1][1]:
            first, _, data = groups[-1]
            groups[-1] = (first, end, data + token_bytes(bpe, token_id))
        else:
            groups.append((start, end, token_bytes(bpe, token_id)))
    for start, end, data in groups:
        assert 0 <= start <= end <= len(text)
        assert text[start:end] == LEADING_WHITESPACE.sub("", data.decode("utf-8")), text
    covered = {position for start, end in spans for position in range(start, end)}
    assert {position for position, char in enumerate(text) if not regex.match(r"\s", char)} <= covered


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_offsets_cut_out_each_token(bpe: GPT2BPE, name: str) -> None:
    check_offsets(bpe, SAMPLES[name])


def test_offsets_on_real_prose(bpe: GPT2BPE, shared_data: Path) -> None:
    with open(shared_data / "mlm" / "emma.txt", encoding="utf-8") as handle:
        lines = [line for _, line in zip(range(300), handle)]
    check_offsets(bpe, "".join(lines))


def test_leading_space_is_left_out_of_the_span(bpe: GPT2BPE) -> None:
    ids, spans = bpe.encode_with_offsets("Hello  world")
    assert [bpe.decode(str(token)) for token in ids] == ["Hello", " ", " world"]
    assert spans == [(0, 5), (6, 6), (7, 12)]


def test_split_character_is_covered_by_every_piece(bpe: GPT2BPE) -> None:
    text = "a 😀"
    ids, spans = bpe.encode_with_offsets(text)
    assert len(ids) > 2  # the emoji's four bytes are more than one token
    assert spans[0] == (0, 1)
    assert all(span == (2, 3) for span in spans[1:])
