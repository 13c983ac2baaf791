"""fairseq's `dict.txt` vocabulary: symbol <-> index, with the four implied special symbols.

File format (one entry per line, UTF-8): `<symbol> <count>`, split on the LAST space so a
symbol may itself contain spaces, optionally followed by the flag `#fairseq:overwrite`, which
lets a symbol replace an earlier entry of the same name (otherwise a duplicate is an error).
A byte-order mark at the start is ignored (fairseq would make it part of the first symbol).
`<s>`, `<pad>`, `</s>` and `<unk>` take indices 0-3 and are never written to the file; line k
(0-based) of the file gets index 4 + k.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.process_lifetime import worker_pool

OVERWRITE_FLAG = "#fairseq:overwrite"
BYTE_ORDER_MARK = "\ufeff"


class Dictionary:
    """A mapping between symbols and consecutive integer indices, with per-symbol counts."""

    def __init__(self, bos: str = "<s>", pad: str = "<pad>", eos: str = "</s>",
                 unk: str = "<unk>") -> None:
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = bos, pad, eos, unk
        self.symbols: list[str] = []
        self.count: list[int] = []
        self.indices: dict[str, int] = {}
        self.bos_index = self.add_symbol(bos)
        self.pad_index = self.add_symbol(pad)
        self.eos_index = self.add_symbol(eos)
        self.unk_index = self.add_symbol(unk)
        self.nspecial = len(self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, index: int) -> str:
        # fairseq renders any out-of-range index as <unk> rather than failing mid-decode.
        if 0 <= index < len(self.symbols):
            return self.symbols[index]
        return self.unk_word

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.indices

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.indices == other.indices

    def bos(self) -> int:
        return self.bos_index

    def pad(self) -> int:
        return self.pad_index

    def eos(self) -> int:
        return self.eos_index

    def unk(self) -> int:
        return self.unk_index

    def index(self, symbol: str) -> int:
        """The index of `symbol`, or of `<unk>` when it is not in the dictionary."""
        return self.indices.get(symbol, self.unk_index)

    def add_symbol(self, symbol: str, n: int = 1, overwrite: bool = False) -> int:
        """Add `n` to the count of `symbol` (new symbols go last) and return its index.

        With `overwrite`, an existing symbol gets a fresh entry at the end that takes over
        its name; the old entry keeps its slot so later indices do not shift.
        """
        if symbol in self.indices and not overwrite:
            index = self.indices[symbol]
            self.count[index] += n
            return index
        index = len(self.symbols)
        self.indices[symbol] = index
        self.symbols.append(symbol)
        self.count.append(n)
        return index

    # ----------------------------------------------------------------------------------- files

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dictionary:
        """Read a `dict.txt`; the special symbols are implied, not read."""
        dictionary = cls()
        dictionary.add_from_file(path)
        return dictionary

    def add_from_file(self, path: str | os.PathLike) -> None:
        """Append the entries of a `dict.txt` file; a malformed line raises UserError."""
        path = Path(path)
        lines = _read_dictionary_lines(path)
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last entry
        for line_number, line in enumerate(lines, start=1):
            symbol, count, overwrite = _parse_entry(line.rstrip(), path, line_number)
            if symbol in self.indices and not overwrite:
                raise UserError(f"{path}, line {line_number}: duplicate symbol {symbol!r}; remove "
                                f"it, or end the line with '{OVERWRITE_FLAG}' to replace the "
                                f"earlier entry")
            self.add_symbol(symbol, n=count, overwrite=overwrite)

    def save(self, path: str | os.PathLike) -> None:
        """Write the non-special entries as `dict.txt`, atomically."""
        seen: set[str] = set()
        with atomic_write(path, "w", encoding="utf-8") as handle:
            for symbol, count in zip(self.symbols[self.nspecial:], self.count[self.nspecial:]):
                # A symbol that was overwritten in memory must carry the flag to load again.
                flag = f" {OVERWRITE_FLAG}" if symbol in seen else ""
                seen.add(symbol)
                handle.write(f"{symbol} {count}{flag}\n")

    # ------------------------------------------------------------------------------- building

    def finalize(self, threshold: int = -1, nwords: int = -1, padding_factor: int = 8) -> None:
        """Sort the non-special symbols by count (descending, ties alphabetical), keep the
        `nwords` most frequent (all when <= 0) that occur at least `threshold` times, then pad
        with `madeupwordNNNN` entries until the size is a multiple of `padding_factor`."""
        if nwords <= 0:
            nwords = len(self)
        specials = self.nspecial
        # Sorting by symbol first and then stably by count gives alphabetical ties.
        ordinary = sorted(dict(sorted(zip(self.symbols[specials:], self.count[specials:]))).items(),
                          key=lambda item: item[1], reverse=True)
        kept = [(symbol, count) for symbol, count in ordinary[:max(nwords - specials, 0)]
                if count >= threshold]
        self.symbols = self.symbols[:specials] + [symbol for symbol, _ in kept]
        self.count = self.count[:specials] + [count for _, count in kept]
        self.indices = {symbol: index for index, symbol in enumerate(self.symbols)}
        self.pad_to_multiple_(padding_factor)

    def pad_to_multiple_(self, padding_factor: int) -> None:
        """Append zero-count `madeupword0000`, `madeupword0001`, ... up to a multiple of the
        factor (keeps embedding matrices a hardware-friendly size)."""
        if padding_factor <= 1:
            return
        number = 0
        while len(self) % padding_factor != 0:
            self.add_symbol(f"madeupword{number:04d}", n=0)
            number += 1

    # ------------------------------------------------------------------------------- encoding

    def encode_line(self, line: str, append_eos: bool = True, add_if_not_exist: bool = False,
                    consumer: Callable[[str, int], None] | None = None) -> torch.Tensor:
        """Whitespace-split `line` into indices (unknown -> `<unk>` unless added), plus `</s>`.

        `consumer(word, index)` sees every word, e.g. to count words replaced by `<unk>`.
        """
        words = line.split()
        ids = [self.add_symbol(word) if add_if_not_exist else self.indices.get(word, self.unk_index)
               for word in words]
        if consumer is not None:
            for word, index in zip(words, ids):
                consumer(word, index)
        if append_eos:
            ids.append(self.eos_index)
        return torch.tensor(ids, dtype=torch.int32)

    def string(self, tensor: torch.Tensor | Sequence[int], escape_unk: bool = False,
               include_eos: bool = False) -> str:
        """Indices back to space-joined symbols, dropping `<s>` (and `</s>` unless asked).

        A 2-D tensor gives one line per row. `escape_unk` writes `<<unk>>` so a real `<unk>`
        in the input stays distinguishable from a replaced word.
        """
        if torch.is_tensor(tensor) and tensor.dim() == 2:
            return "\n".join(self.string(row, escape_unk, include_eos) for row in tensor)
        skipped = {self.bos_index} if include_eos else {self.bos_index, self.eos_index}
        unk_text = f"<{self.unk_word}>" if escape_unk else self.unk_word
        symbols = (unk_text if index == self.unk_index else self[index]
                   for index in (int(value) for value in tensor) if index not in skipped)
        return " ".join(symbols)


def _read_dictionary_lines(path: Path) -> list[str]:
    """The lines of a `dict.txt`, split as Python's text mode (so fairseq) splits them."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"dictionary file {path} does not exist; pass the dict.txt that "
                        f"was used to binarize the data") from None
    except OSError as error:
        raise UserError(f"cannot read dictionary file {path} ({error.strerror})") from None
    try:
        # utf-8-sig drops a byte-order mark (Windows editors write one): fairseq keeps it as part
        # of the first symbol, which then never matches, and its tokens silently become <unk>.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = raw.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path}, line {line_number}: not UTF-8 text ({error.reason}); re-encode "
                        f"the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_entry(line: str, path: Path, line_number: int) -> tuple[str, int, bool]:
    symbol, _, field = line.rpartition(" ")
    overwrite = field == OVERWRITE_FLAG
    if overwrite:
        symbol, _, field = symbol.rpartition(" ")
    try:
        count = int(field)
    except ValueError:
        count = None
    if not symbol or count is None:
        # A binary file read as text can be one huge line: quote only its start.
        shown = repr(line) if len(repr(line)) <= 80 else f"{repr(line)[:80]}..."
        raise UserError(f"{path}, line {line_number}: expected '<symbol> <count> "
                        f"[{OVERWRITE_FLAG}]', found {shown}; fix or remove that line")
    return symbol, count, overwrite


# ----------------------------------------------------------------------- counting text files

def iter_lines(path: str | os.PathLike, start: int = 0, end: int = -1) -> Iterator[str]:
    """The text lines whose first byte lies in `[start, end)` (`end=-1`: to the end of file).

    Lines end at `\\n`, `\\r\\n` or a lone `\\r`, as Python's text mode reads them (and so as
    fairseq does); the terminator is not included. `start` must be a line start. A byte-order
    mark at the start of the file is dropped: it is never part of the first word.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        for raw in handle:
            if 0 <= end <= position:
                break
            try:
                text = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as error:
                raise UserError(f"{path}: the line at byte offset {position} is not UTF-8 "
                                f"({error.reason}); re-encode the file as UTF-8") from None
            if position == 0:
                text = text.removeprefix(BYTE_ORDER_MARK)
            position += len(raw)
            # Splitting on '\r' after dropping one final '\r' reproduces universal newlines:
            # 'a\r\n' -> ['a'], 'a\r\r\n' -> ['a', ''], 'a\rb\n' -> ['a', 'b'].
            if text.endswith("\r"):
                text = text[:-1]
            yield from text.split("\r") if "\r" in text else (text,)


def find_line_offsets(path: str | os.PathLike, chunks: int) -> list[int]:
    """`chunks + 1` byte offsets that cut the file into roughly equal runs of whole lines."""
    size = os.path.getsize(path)
    offsets = [0]
    with open(path, "rb") as handle:
        for chunk in range(1, chunks):
            handle.seek(max(size * chunk // chunks, offsets[-1]))
            handle.readline()  # move to the start of the next line
            offsets.append(max(handle.tell(), offsets[-1]))
    offsets.append(size)
    return offsets


def count_tokens(path: str | os.PathLike, start: int = 0, end: int = -1,
                 eos_word: str = "</s>") -> Counter:
    """Whitespace-token counts of a file region, plus one `eos_word` per line (as fairseq)."""
    counts: Counter = Counter()
    for line in iter_lines(path, start, end):
        counts.update(line.split())
        counts[eos_word] += 1
    return counts


def _count_chunk(job: tuple[str, int, int]) -> Counter:
    return count_tokens(*job)


def build_dictionary(files: Iterable[str | os.PathLike], workers: int = 1, threshold: int = -1,
                     nwords: int = -1, padding_factor: int = 8,
                     extra_symbols: Iterable[str] = ()) -> Dictionary:
    """Count the whitespace tokens of (already BPE-encoded) text files into a finalized
    Dictionary. `extra_symbols` are added with count 0 so that symbols of the vocabulary the
    corpus never used still get an index (as the released GPT-2 `dict.txt` does)."""
    dictionary = Dictionary()
    jobs = []
    for path in files:
        if not Path(path).is_file():
            raise UserError(f"input file {path} does not exist")
        offsets = find_line_offsets(path, max(workers, 1))
        jobs += [(str(path), start, end) for start, end in zip(offsets, offsets[1:])]
    if workers > 1:
        with worker_pool(workers) as pool:
            counters = pool.map(_count_chunk, jobs)
    else:
        counters = [_count_chunk(job) for job in jobs]
    total: Counter = sum(counters, Counter())
    for symbol, count in sorted(total.items()):
        dictionary.add_symbol(symbol, n=count)
    for symbol in extra_symbols:
        dictionary.add_symbol(symbol, n=0)
    dictionary.finalize(threshold=threshold, nwords=nwords, padding_factor=padding_factor)
    return dictionary
