"""GPT-2 byte-level BPE (`encoder.json` + `vocab.bpe`), as fairseq's `gpt2` BPE wrapper.

Text is cut into pieces by the GPT-2 pretokenizer, each piece's UTF-8 bytes are spelled with
one printable character per byte, and adjacent symbols are merged lowest merge rank first.
In the fairseq wrapper the encoded form is the GPT-2 ids joined by spaces (`"15496 995 0"`
for "Hello world!"); `dict.txt` then maps those id strings to model indices.
`encode_with_offsets` also reports the characters of the text each token covers, which
extractive question answering needs to cut answers out of the original passage.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import regex

from roberta.errors import UserError

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"

# Contractions, letter runs, number runs and punctuation runs, each with at most one leading
# space; then whitespace runs, leaving a run's last space to the word that follows it.
PRETOKENIZER = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

# The whitespace a token's reported span skips: the pretokenizer's own `\s`, so that exactly the
# characters it treats as spaces (and nothing it treats as a symbol) are left out.
_LEADING_WHITESPACE = regex.compile(r"\s*")

# Past this many distinct pieces the cache is dropped; a corpus of many GBs would otherwise
# grow it without bound.
_CACHE_LIMIT = 500_000


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> character table: printable Latin-1 bytes stand for themselves, the other 68
    bytes (controls, space, NBSP, soft hyphen) map in order to U+0100, U+0101, ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shifted = 256
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(shifted)
            shifted += 1
    return dict(sorted(table.items()))


def pieces_of(text: str) -> list[str]:
    """Pretokenize `text` and spell each piece in the byte alphabet."""
    byte_char = bytes_to_unicode()
    return ["".join(byte_char[byte] for byte in piece.encode("utf-8"))
            for piece in PRETOKENIZER.findall(text)]


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The merge list of a `vocab.bpe` file, in rank order (a `#version` header is skipped)."""
    try:
        # utf-8-sig: a byte-order mark would otherwise hide the `#version` header.
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().split("\n")
    except OSError as error:
        raise UserError(f"cannot read BPE merges file {path} ({error.strerror}); "
                        f"pass the vocab.bpe that belongs to encoder.json") from None
    except UnicodeDecodeError as error:
        raise UserError(f"BPE merges file {path} is not UTF-8 text ({error.reason}); is this a "
                        f"GPT-2 vocab.bpe file?") from None
    merges = []
    for line_number, line in enumerate(lines, start=1):
        if not line or (line_number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise UserError(f"{path}, line {line_number}: expected two symbols separated by "
                            f"one space, found {line!r}; is this a GPT-2 vocab.bpe file?")
        merges.append((parts[0], parts[1]))
    return merges


def read_encoder(path: str | os.PathLike) -> dict[str, int]:
    """The symbol -> id table of an `encoder.json` file."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # json refuses a byte-order mark
            encoder = json.load(handle)
    except OSError as error:
        raise UserError(f"cannot read BPE encoder file {path} ({error.strerror}); "
                        f"pass the encoder.json of the GPT-2 BPE") from None
    except UnicodeDecodeError as error:
        raise UserError(f"BPE encoder file {path} is not UTF-8 text ({error.reason}); is this a "
                        f"GPT-2 encoder.json?") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); is this a GPT-2 encoder.json?") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise UserError(f"{path}: expected a JSON object of symbol -> integer id")
    return encoder


class GPT2BPE:
    """Encode text to GPT-2 ids and back, with the fairseq wrapper's string interface."""

    def __init__(self, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> None:
        self.encoder = read_encoder(encoder_json)
        self.decoder = {index: symbol for symbol, index in self.encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(read_merges(vocab_bpe))}
        self.byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> GPT2BPE:
        """Load `encoder.json` and `vocab.bpe` from one folder."""
        directory = Path(directory)
        return cls(directory / ENCODER_JSON, directory / VOCAB_BPE)

    def encode_ids(self, text: str) -> list[int]:
        return [self._symbol_id(symbol) for piece in pieces_of(text) for symbol in self._merge(piece)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of `encode_ids(text)` and, per token, the `[start, end)` characters of `text`
        it covers.

        A token covers some bytes of one pretokenizer piece; its span is every character any of
        those bytes belongs to, so the tokens that split one multi-byte character (an emoji, a
        rare CJK character) all report that whole character and share it. The span leaves out
        the token's leading whitespace (GPT-2 glues a word's preceding space to the word), so
        `text[start:end]` is the visible word piece; a token of whitespace alone gets the empty
        span `(end, end)`. Spans never decrease and, apart from such shared characters, never
        overlap.
        """
        byte_char = bytes_to_unicode()
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for match in PRETOKENIZER.finditer(text):
            piece = match.group()
            data = piece.encode("utf-8")
            owner = _byte_owners(piece, match.start(), len(data))
            first_byte = 0
            for symbol in self._merge("".join(byte_char[byte] for byte in data)):
                ids.append(self._symbol_id(symbol))
                # One alphabet character per byte, so a symbol's length is its byte count.
                last_byte = first_byte + len(symbol) - 1
                end = owner[last_byte] + 1
                start = _LEADING_WHITESPACE.match(text, owner[first_byte], end).end()
                spans.append((start, end))
                first_byte = last_byte + 1
        return ids, spans

    def encode(self, text: str) -> str:
        """GPT-2 ids as one space-separated string, the form `dict.txt` indexes."""
        return " ".join(map(str, self.encode_ids(text)))

    def decode(self, text: str) -> str:
        """Inverse of `encode`; tokens that are not GPT-2 ids (`<mask>`, `<unk>`) pass through."""
        data = bytearray()
        for token in text.split():
            symbol = self.decoder.get(int(token)) if token.isascii() and token.isdigit() else None
            if symbol is None:
                data += token.encode("utf-8")
            else:
                data += bytes(self.byte_decoder[char] for char in symbol)
        return data.decode("utf-8", errors="replace")

    def is_beginning_of_word(self, token: str) -> bool:
        """Whether the token starts a new word (its text begins with a space)."""
        return self.decode(token).startswith(" ")

    def _symbol_id(self, symbol: str) -> int:
        index = self.encoder.get(symbol)
        if index is None:
            raise UserError(f"BPE symbol {symbol!r} is missing from encoder.json; "
                            f"encoder.json and vocab.bpe do not belong together")
        return index

    def _merge(self, piece: str) -> list[str]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = list(piece)
        while len(symbols) > 1:
            ranked = [(self.ranks.get(pair, -1), pair) for pair in zip(symbols, symbols[1:])]
            candidates = [item for item in ranked if item[0] >= 0]
            if not candidates:
                break
            first, second = min(candidates)[1]
            symbols = merge_pair(symbols, first, second)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[piece] = symbols
        return symbols


def _byte_owners(piece: str, offset: int, num_bytes: int) -> list[int]:
    """For each UTF-8 byte of `piece`, the index in the text of the character it encodes,
    where the piece starts at character `offset`."""
    if num_bytes == len(piece):
        return list(range(offset, offset + num_bytes))
    return [offset + position for position, char in enumerate(piece)
            for _ in range(len(char.encode("utf-8")))]


def merge_pair(symbols: list[str], first: str, second: str) -> list[str]:
    """Replace every adjacent (first, second), scanning left to right, by their concatenation."""
    merged = []
    position = 0
    while position < len(symbols):
        if (position + 1 < len(symbols) and symbols[position] == first
                and symbols[position + 1] == second):
            merged.append(first + second)
            position += 2
        else:
            merged.append(symbols[position])
            position += 1
    return merged
