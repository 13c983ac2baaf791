"""roberta-bpe: encode, decode and train subword models.

`roberta-bpe encode` takes the flags of fairseq's `multiprocessing_bpe_encoder.py`: N aligned
`--inputs` are read line by line in lock step and written to N `--outputs`; without
`--keep-empty`, a line tuple in which any line is empty is dropped from every output, so the
outputs stay aligned with each other.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO, Iterator, Sequence

from tqdm import tqdm

from roberta.cli.common import run_cli
from roberta.data.bpe import (BPE, build_bpe, build_dictionary, train_byte_level_bpe,
                              train_sentencepiece, vocabulary_symbols)
from roberta.errors import UserError
from roberta.fileio import temporary_path
from roberta.process_lifetime import worker_pool

SENTENCEPIECE_MODEL = "sentencepiece.bpe.model"
EMPTY = "num_filtered_EMPTY"

BpeSpec = tuple[str, dict[str, str]]


def add_encode_args(parser: argparse.ArgumentParser) -> None:
    """The flags of fairseq's multiprocessing_bpe_encoder.py (plus a sentencepiece model)."""
    parser.add_argument("--encoder-json", metavar="FP", help="GPT-2 BPE encoder.json")
    parser.add_argument("--vocab-bpe", metavar="FP", help="GPT-2 BPE vocab.bpe (merges)")
    parser.add_argument("--sentencepiece-model", metavar="FP",
                        help="use this sentencepiece .model instead of the GPT-2 BPE")
    parser.add_argument("--inputs", nargs="+", default=["-"], metavar="FP",
                        help="input files, read in lock step ('-' = stdin)")
    parser.add_argument("--outputs", nargs="+", default=["-"], metavar="FP",
                        help="one output file per input ('-' = stdout)")
    parser.add_argument("--keep-empty", action="store_true",
                        help="keep empty lines (otherwise a line tuple with any empty line is "
                             "dropped from all outputs)")
    parser.add_argument("--workers", type=int, default=20, metavar="N",
                        help="worker processes (capped at the number of CPUs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roberta-bpe", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_encode_args(commands.add_parser("encode", help="text -> BPE tokens"))
    add_encode_args(commands.add_parser("decode", help="BPE tokens -> text"))
    train = commands.add_parser("train", help="train a BPE model and write its dict.txt")
    train.add_argument("--type", choices=["gpt2", "sentencepiece"], default="gpt2",
                       help="byte-level BPE in GPT-2's file format, or a sentencepiece model")
    train.add_argument("--vocab-size", type=int, required=True, metavar="N",
                       help="size of the subword vocabulary")
    train.add_argument("--inputs", nargs="+", required=True, metavar="FP", help="training text")
    train.add_argument("--output-dir", required=True, metavar="DIR",
                       help=f"folder for encoder.json + vocab.bpe (or {SENTENCEPIECE_MODEL}) "
                            f"and dict.txt")
    train.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram",
                       help="sentencepiece algorithm (--type sentencepiece only)")
    train.add_argument("--workers", type=int, default=20, metavar="N",
                       help="processes for encoding the corpus to count dict.txt")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        run_train(args)
    else:
        run_encode(args, decode=args.command == "decode")


def encode_main(argv: Sequence[str] | None = None) -> None:
    """fairseq's `multiprocessing_bpe_encoder.py` command line: encode only, no subcommand."""
    parser = argparse.ArgumentParser(prog="multiprocessing_bpe_encoder.py",
                                     description="BPE-encode aligned text files in parallel")
    add_encode_args(parser)
    run_encode(parser.parse_args(argv), decode=False)


def run_encode(args: argparse.Namespace, decode: bool) -> None:
    spec = _bpe_spec(args)
    if len(args.inputs) != len(args.outputs):
        raise UserError(f"--inputs names {len(args.inputs)} files but --outputs "
                        f"{len(args.outputs)}; give one output per input")
    missing = [path for path in args.inputs if path != "-" and not os.path.isfile(path)]
    if missing:
        raise UserError(f"--inputs: file(s) not found: {', '.join(missing)}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    try:
        stats = encode_files(spec, args.inputs, args.outputs, keep_empty=args.keep_empty,
                             workers=min(args.workers, os.cpu_count() or 1), decode=decode)
    except OSError as error:
        if error.filename is not None and os.fspath(error.filename) in args.inputs:
            raise UserError(f"could not read {error.filename}: {error.strerror}") from None
        raise UserError(f"could not write --outputs {' '.join(args.outputs)}: {error.strerror or error}; "
                        f"none of them was replaced") from None
    for key, value in stats.most_common():
        print(f"[{key}] filtered {value} lines", file=sys.stderr)


def _bpe_spec(args: argparse.Namespace) -> BpeSpec:
    if args.sentencepiece_model and (args.encoder_json or args.vocab_bpe):
        raise UserError("pass either --sentencepiece-model or --encoder-json/--vocab-bpe, not both")
    if args.sentencepiece_model:
        return "sentencepiece", {"sentencepiece_model": args.sentencepiece_model}
    if not (args.encoder_json and args.vocab_bpe):
        raise UserError("no BPE model given: pass --encoder-json and --vocab-bpe (GPT-2 BPE) "
                        "or --sentencepiece-model")
    return "gpt2", {"encoder_json": args.encoder_json, "vocab_bpe": args.vocab_bpe}


def encode_files(spec: BpeSpec, inputs: Sequence[str], outputs: Sequence[str], keep_empty: bool,
                 workers: int, decode: bool = False) -> Counter:
    """Encode (or decode) aligned files; outputs are replaced only when all went well."""
    stats: Counter = Counter()
    # Loading here, in the main process, reports a bad model file as one clear error (a pool
    # whose initializer fails would restart its workers forever) and serves workers=1.
    _init_worker(spec)
    with contextlib.ExitStack() as stack:
        sources = [sys.stdin if path == "-" else
                   stack.enter_context(open(path, encoding="utf-8")) for path in inputs]
        files = iter(stack.enter_context(_replaced_together([path for path in outputs if path != "-"])))
        sinks = [sys.stdout if path == "-" else next(files) for path in outputs]
        aligned = _AlignedLines(inputs, sources)
        task = (_decode_lines if decode else _encode_lines, keep_empty)
        results: Iterator[list[str] | None]
        if workers > 1:
            pool = stack.enter_context(worker_pool(workers, _init_worker, (spec,)))
            results = pool.imap(_run_task, zip(itertools.repeat(task), aligned), chunksize=100)
        else:
            results = map(_run_task, zip(itertools.repeat(task), aligned))
        for lines in tqdm(results, unit=" lines", file=sys.stderr, mininterval=1.0,
                          disable=None):
            if lines is None:
                stats[EMPTY] += 1
                continue
            for line, sink in zip(lines, sinks):
                print(line, file=sink)
        aligned.raise_if_failed()
    return stats


@contextlib.contextmanager
def _replaced_together(paths: Sequence[str]) -> Iterator[list[IO[str]]]:
    """Text files written under temporary names and renamed over `paths` only once every one is
    complete and synced: aligned outputs are never left half old, half new. On failure the
    temporaries are removed."""
    temporaries = [temporary_path(path) for path in paths]
    handles: list[IO[str]] = []
    try:
        for temporary in temporaries:
            handles.append(open(temporary, "w", encoding="utf-8"))
        yield handles
        for handle in handles:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
    except BaseException:
        for handle in handles:
            # Closing flushes what is still buffered, which fails again on a full disk.
            with contextlib.suppress(Exception):
                handle.close()
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        raise


class _AlignedLines:
    """Lines of several files in lock step. A problem (one file ending before the others, bad
    UTF-8) is noted and ends the iteration, to be raised by the consumer: raising inside a
    worker pool's feeder thread would surface as a traceback, not a one-line error."""

    def __init__(self, names: Sequence[str], handles: Sequence[IO[str]]) -> None:
        self.names, self.handles = names, handles
        self.problem: str | None = None

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for number in itertools.count(1):
            lines = []
            for name, handle in zip(self.names, self.handles):
                try:
                    lines.append(handle.readline())
                except UnicodeDecodeError as error:
                    self.problem = (f"{name} is not UTF-8 text near line {number} "
                                    f"({error.reason}); re-encode it as UTF-8")
                    return
            ended = [name for name, line in zip(self.names, lines) if not line]
            if len(ended) == len(lines):
                return
            if ended:
                self.problem = (f"--inputs are not aligned: {', '.join(ended)} ended after "
                                f"{number - 1} lines while the others go on")
                return
            yield tuple(lines)

    def raise_if_failed(self) -> None:
        if self.problem is not None:
            raise UserError(f"{self.problem}; no output file was written")


_worker_bpe: BPE | None = None


def _init_worker(spec: BpeSpec) -> None:
    global _worker_bpe
    _worker_bpe = build_bpe(spec[0], **spec[1])


def _run_task(item: tuple[tuple, tuple[str, ...]]) -> list[str] | None:
    (function, keep_empty), lines = item
    return function(lines, keep_empty)


def _encode_lines(lines: tuple[str, ...], keep_empty: bool) -> list[str] | None:
    """The encoded lines, or None when the tuple is dropped for an empty line."""
    stripped = [line.strip() for line in lines]
    if not keep_empty and any(not line for line in stripped):
        return None
    assert _worker_bpe is not None  # set by _init_worker, in this process and in each pool worker
    return [_worker_bpe.encode(line) for line in stripped]


def _decode_lines(lines: tuple[str, ...], keep_empty: bool) -> list[str]:
    assert _worker_bpe is not None  # set by _init_worker, in this process and in each pool worker
    return [_worker_bpe.decode(line.strip()) for line in lines]


def run_train(args: argparse.Namespace) -> None:
    out_dir = Path(args.output_dir)
    missing = [path for path in args.inputs if not os.path.isfile(path)]
    if missing:
        raise UserError(f"--inputs: file(s) not found: {', '.join(missing)}")
    if args.type == "gpt2":
        bpe: BPE = train_byte_level_bpe(args.inputs, args.vocab_size, out_dir)
        spec: BpeSpec = ("gpt2", {"encoder_json": str(out_dir / "encoder.json"),
                                  "vocab_bpe": str(out_dir / "vocab.bpe")})
    else:
        bpe = train_sentencepiece(args.inputs, args.vocab_size,
                                  out_dir / Path(SENTENCEPIECE_MODEL).stem, args.model_type)
        spec = ("sentencepiece", {"sentencepiece_model": str(out_dir / SENTENCEPIECE_MODEL)})
    workers = max(1, min(args.workers, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".encoded-") as scratch:
        encoded = [os.path.join(scratch, f"{number}.txt") for number in range(len(args.inputs))]
        for source, target in zip(args.inputs, encoded):
            encode_files(spec, [source], [target], keep_empty=True, workers=workers)
        dictionary = build_dictionary(encoded, workers=workers,
                                      extra_symbols=vocabulary_symbols(bpe))
    dictionary.save(out_dir / "dict.txt")
    print(f"wrote the model and dict.txt ({len(dictionary)} entries) to {out_dir}",
          file=sys.stderr)


def cli_main() -> None:
    run_cli(main, "roberta-bpe")


def encode_cli_main() -> None:
    run_cli(encode_main, "multiprocessing_bpe_encoder.py")


if __name__ == "__main__":
    cli_main()
