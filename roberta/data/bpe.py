"""Choosing a subword model by name, and training new ones.

`train_byte_level_bpe` learns a GPT-2-style byte-level BPE and writes it in GPT-2's own file
format (`encoder.json` + `vocab.bpe`), so `GPT2BPE`, fairseq and Hugging Face all read it.
`build_dictionary` (re-exported from `dictionary`) then turns the encoded corpus into a
`dict.txt`.
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece

from roberta.data.dictionary import build_dictionary, iter_lines
from roberta.data.gpt2_bpe import (ENCODER_JSON, PRETOKENIZER, VOCAB_BPE, GPT2BPE,
                                   bytes_to_unicode, merge_pair)
from roberta.data.sentencepiece_bpe import SentencePieceBPE
from roberta.errors import UserError
from roberta.fileio import atomic_write

__all__ = ["BPE_KINDS", "build_bpe", "build_dictionary", "train_byte_level_bpe",
           "train_sentencepiece", "vocabulary_symbols"]

logger = logging.getLogger(__name__)

BPE_KINDS = ("gpt2", "sentencepiece")
END_OF_TEXT = "<|endoftext|>"

BPE = GPT2BPE | SentencePieceBPE


def build_bpe(kind: str, encoder_json: str | os.PathLike | None = None,
              vocab_bpe: str | os.PathLike | None = None,
              sentencepiece_model: str | os.PathLike | None = None) -> BPE:
    """The BPE named `kind` ("gpt2" or "sentencepiece") from its model files."""
    if kind == "gpt2":
        if encoder_json is None or vocab_bpe is None:
            raise UserError("the gpt2 BPE needs both --encoder-json and --vocab-bpe")
        return GPT2BPE(encoder_json, vocab_bpe)
    if kind == "sentencepiece":
        if sentencepiece_model is None:
            raise UserError("the sentencepiece BPE needs --sentencepiece-model")
        return SentencePieceBPE(sentencepiece_model)
    raise UserError(f"unknown BPE '{kind}'; choose from: {', '.join(BPE_KINDS)}")


def vocabulary_symbols(bpe: BPE) -> list[str]:
    """Every token the BPE's `encode` can emit, in model-id order (for `dict.txt`)."""
    if isinstance(bpe, GPT2BPE):
        return [str(index) for index in sorted(bpe.decoder)]
    processor = bpe.processor
    return [processor.id_to_piece(index) for index in range(processor.get_piece_size())
            if not (processor.is_control(index) or processor.is_unknown(index))]


# ------------------------------------------------------------------------- byte-level BPE

def train_byte_level_bpe(files: Sequence[str | os.PathLike], vocab_size: int,
                         out_dir: str | os.PathLike, min_frequency: int = 2) -> GPT2BPE:
    """Learn merges until the vocabulary holds `vocab_size` symbols (256 bytes, the merged
    symbols and `<|endoftext|>`), or no pair occurs `min_frequency` times; write
    `encoder.json` and `vocab.bpe` into `out_dir` and return the loaded model."""
    if vocab_size < 257:
        raise UserError(f"--vocab-size {vocab_size} is too small for a byte-level BPE; it needs "
                        f"at least 257 (256 bytes + {END_OF_TEXT})")
    alphabet = sorted(bytes_to_unicode().values())
    merges = learn_merges(count_pieces(files), vocab_size - len(alphabet) - 1, set(alphabet),
                          min_frequency)
    encoder = {symbol: index for index, symbol in enumerate(alphabet)}
    for first, second in merges:
        encoder.setdefault(first + second, len(encoder))
    encoder[END_OF_TEXT] = len(encoder)
    if len(encoder) < vocab_size:
        logger.warning("the corpus supports only %d BPE symbols (no pair left occurs %d times), "
                       "fewer than --vocab-size %d", len(encoder), min_frequency, vocab_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / ENCODER_JSON, "w", encoding="utf-8") as handle:
        json.dump(encoder, handle, ensure_ascii=False)
    with atomic_write(out_dir / VOCAB_BPE, "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
        handle.writelines(f"{first} {second}\n" for first, second in merges)
    return GPT2BPE(out_dir / ENCODER_JSON, out_dir / VOCAB_BPE)


def count_pieces(files: Iterable[str | os.PathLike]) -> Counter:
    """How often each pretokenized piece occurs, spelled in the byte alphabet. Lines are
    stripped first, as the encoder does."""
    raw: Counter = Counter()
    for path in files:
        if not Path(path).is_file():
            raise UserError(f"training input {path} does not exist")
        for line in iter_lines(path):
            raw.update(PRETOKENIZER.findall(line.strip()))
    byte_char = bytes_to_unicode()
    spelled: Counter = Counter()
    for piece, count in raw.items():
        spelled["".join(byte_char[byte] for byte in piece.encode("utf-8"))] += count
    return spelled


def learn_merges(piece_counts: dict[str, int], new_symbols: int, known: set[str],
                 min_frequency: int = 2) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: the smallest pair)
    until `new_symbols` symbols not in `known` were created or no pair is frequent enough.

    Pair counts are updated only for the words that contain the merged pair, and a heap with
    stale entries skipped on pop finds the best pair without rescanning every count.
    """
    words = [list(piece) for piece in piece_counts]
    freqs = list(piece_counts.values())
    pair_counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freqs[index]
            where[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    known = set(known)
    created = 0
    while heap and created < new_symbols:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # superseded by a newer entry for the same pair
        if -negative < min_frequency:
            break
        merges.append(pair)
        if pair[0] + pair[1] not in known:
            known.add(pair[0] + pair[1])
            created += 1
        changed = _apply_merge(pair, words, freqs, pair_counts, where)
        for other in changed:
            if pair_counts[other] > 0:
                heapq.heappush(heap, (-pair_counts[other], other))
            else:
                del pair_counts[other]
                where.pop(other, None)
    return merges


def _apply_merge(pair: tuple[str, str], words: list[list[str]], freqs: list[int],
                 pair_counts: defaultdict, where: defaultdict) -> set[tuple[str, str]]:
    """Merge `pair` in every word holding it; return the pairs whose counts changed."""
    first, second = pair
    delta: Counter = Counter()
    for index in where.pop(pair, ()):
        symbols = words[index]
        merged = merge_pair(symbols, first, second)
        if len(merged) == len(symbols):
            continue
        for old in zip(symbols, symbols[1:]):
            delta[old] -= freqs[index]
        for new in zip(merged, merged[1:]):
            delta[new] += freqs[index]
            where[new].add(index)
        words[index] = merged
    changed = {other for other, change in delta.items() if change}
    for other in changed:
        pair_counts[other] += delta[other]
    return changed


# ---------------------------------------------------------------------------- sentencepiece

def train_sentencepiece(files: Sequence[str | os.PathLike], vocab_size: int,
                        model_prefix: str | os.PathLike, model_type: str = "unigram",
                        character_coverage: float = 1.0) -> SentencePieceBPE:
    """Train a sentencepiece model; writes `<model_prefix>.model` and `.vocab` atomically."""
    for path in files:
        if not Path(path).is_file():
            raise UserError(f"training input {path} does not exist")
    final = Path(model_prefix)
    final.parent.mkdir(parents=True, exist_ok=True)
    # sentencepiece writes its outputs in place; train into a scratch folder on the same
    # file system and rename, so a failed run leaves no half-written model behind.
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".spm-") as scratch:
        prefix = Path(scratch) / "model"
        try:
            sentencepiece.SentencePieceTrainer.train(
                input=",".join(str(path) for path in files), model_prefix=str(prefix),
                vocab_size=vocab_size, model_type=model_type,
                character_coverage=character_coverage, minloglevel=2)
        except RuntimeError as error:
            reason = str(error).split("] ")[-1]
            raise UserError(f"sentencepiece training failed: {reason}") from None
        for suffix in (".vocab", ".model"):
            os.replace(prefix.with_suffix(suffix), final.with_name(final.name + suffix))
    return SentencePieceBPE(final.with_name(final.name + ".model"))

