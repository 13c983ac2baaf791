"""`roberta-convert INPUT OUTPUT --to ours|fairseq|fairseq-2019|huggingface`: change a model's layout;
`roberta-convert --init ARCH --dict DICT OUTPUT --to ...`: write a freshly initialised model.

INPUT is detected: a roberta-train checkpoint, a fairseq `model.pt` (either generation of key
names) or a Hugging Face folder. OUTPUT is a file, or a folder for `--to huggingface`. Only the
model travels (weights, sizes, classification heads), never optimizer or data-loader state; a
fairseq OUTPUT also carries the input's training flags (task, criterion, head settings), so
fairseq-validate and fairseq's hub interface rebuild a fine-tuned model as it was trained.
With `--init`, the model is the one roberta-train would start from under the same `--arch`,
size flags, dictionary and `--seed`: the vocabulary is DICT plus the `<mask>` every RoBERTa task
appends, so it restores in masked-LM pretraining and in fine-tuning on data binarized with DICT.
A write that fails (a full disk) leaves nothing behind: no temporary file, no new folder,
and an OUTPUT that existed as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from roberta.checkpoint.files import training_flags
from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.fileio import failed_write_cause
from roberta.flag_types import seed_int
from roberta.logging import setup_logging
from roberta.models import ModelConfig, RobertaModel, add_model_args, build_model_config
from roberta.models.architectures import ArchSettings, arch_settings
from roberta.models.hf_export import save_fairseq_checkpoint, save_hf_folder, save_our_checkpoint
from roberta.models.pretrained import HF_HEAD_NAME, Pretrained, load_pretrained
from roberta.registry import ARCHS
from roberta.task import load_dictionary_with_mask

logger = logging.getLogger("roberta.convert")

TARGETS = ("ours", "fairseq", "fairseq-2019", "huggingface")
DEFAULT_SEED = 1  # roberta-train's
# The flags that only a fresh model reads, and those that only a conversion reads (their dests).
INIT_ONLY = ("dict", "seed", *(field.name for field in dataclasses.fields(ArchSettings) if field.name != "arch"))
CONVERT_ONLY = ("classification_head_name", "unsafe_load")
USAGE = ("%(prog)s INPUT OUTPUT --to FORMAT [--classification-head-name NAME] [--unsafe-load]\n"
         "       %(prog)s --init ARCH --dict DICT OUTPUT --to FORMAT [--seed S] [model size flags]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roberta-convert", allow_abbrev=False, usage=USAGE,
        description="Convert a RoBERTa model between our, fairseq's and Hugging Face's layouts, or "
                    "write a freshly initialised one (--init).")
    # Both optional to argparse: with --init there is no INPUT. main() checks the count.
    parser.add_argument("input", nargs="?", metavar="INPUT",
                        help="checkpoint file, fairseq model.pt or Hugging Face folder (not with --init)")
    parser.add_argument("output", nargs="?", metavar="OUTPUT", help="file to write (a folder for --to huggingface)")
    parser.add_argument("--to", required=True, choices=TARGETS,
                        help="layout to write: ours, fairseq (current key names), fairseq-2019 (the "
                             "names of the released RoBERTa files) or huggingface")
    parser.add_argument("--classification-head-name", default=None, metavar="NAME",
                        help="with --to huggingface, export this head as RobertaForSequenceClassification's "
                             "classifier; from a Hugging Face input, the name its classifier gets "
                             f"(default: {HF_HEAD_NAME})")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow an input that needs arbitrary unpickling (only for files you trust)")
    fresh = parser.add_argument_group(
        "a fresh model (--init)", "the model roberta-train starts from with the same --arch, size flags, "
                                  "dictionary and --seed")
    fresh.add_argument("--init", metavar="ARCH",
                       help=f"write a freshly initialised model of this architecture instead of converting "
                            f"an INPUT ({', '.join(ARCHS.names())})")
    fresh.add_argument("--dict", metavar="DICT",
                       help="with --init, the dict.txt the data is binarized with: the vocabulary is its "
                            "symbols, the 4 special ones and <mask>")
    fresh.add_argument("--seed", type=seed_int("--seed"), default=None, metavar="S",
                       help=f"with --init, the seed of the initial weights, as roberta-train's --seed "
                            f"(default: {DEFAULT_SEED})")
    add_model_args(fresh)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    # Intermixed: `INPUT --to ours OUTPUT` must still give OUTPUT to the second optional positional.
    args = build_parser().parse_intermixed_args(argv)
    setup_logging()
    if args.init is None:
        _convert(args)
    else:
        _write_fresh_model(args)


def _convert(args: argparse.Namespace) -> None:
    source, target = _conversion_paths(args)
    if target.exists() and source.resolve() == target.resolve():
        raise UserError(f"OUTPUT {target} is the INPUT; write the converted model elsewhere")
    _check_output(args.to, target)
    head = args.classification_head_name
    pretrained = load_pretrained(source, unsafe=args.unsafe_load, head_name=head)
    if pretrained.config is None:
        raise UserError(f"{source}: does not say which model it holds (no model config); "
                        f"convert a checkpoint written by roberta-train, fairseq or transformers")
    if pretrained.missing:
        raise UserError(f"{source}: lacks {len(pretrained.missing)} weights of the model it describes "
                        f"(e.g. {pretrained.missing[0]}); nothing was written")
    if args.to == "huggingface" and head is None and len(pretrained.heads) == 1:
        head = next(iter(pretrained.heads))  # unambiguous; of several heads none is exported
    _write_output(args.to, target, pretrained, head)
    logger.info("converted %s (%s) -> %s (%s)", source, pretrained.source, target, args.to)


def _write_fresh_model(args: argparse.Namespace) -> None:
    target = _init_output(args)
    _check_output(args.to, target)
    seed = DEFAULT_SEED if args.seed is None else args.seed
    settings = arch_settings({**vars(args), "arch": args.init})
    config, state_dict = fresh_model(settings, Path(args.dict), seed)
    _write_output(args.to, target, Pretrained(state_dict, config, heads={}, source="fresh"), None)
    logger.info("wrote a fresh %s model (%d layers x %d, vocabulary %d from %s, seed %d) -> %s (%s)", args.init,
                config.encoder_layers, config.encoder_embed_dim, config.vocab_size, args.dict, seed, target, args.to)


def _conversion_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """INPUT and OUTPUT of a conversion, refusing a fresh model's flags."""
    misplaced = [name for name in INIT_ONLY if getattr(args, name) is not None]
    if misplaced:
        raise UserError(f"{_flag(misplaced[0])} only applies with --init ARCH (a fresh model); drop it, "
                        f"or add --init to write a fresh model instead of converting")
    if args.output is None:
        missing = "INPUT and OUTPUT are" if args.input is None else "OUTPUT is"
        raise UserError(f"{missing} missing: give INPUT OUTPUT to convert a model, or "
                        f"--init ARCH --dict DICT OUTPUT to write a fresh one")
    return Path(args.input), Path(args.output)


def _init_output(args: argparse.Namespace) -> Path:
    """OUTPUT of a fresh model: the one path given, with a known ARCH, --dict and no conversion flags."""
    if args.output is not None:
        raise UserError(f"--init writes a fresh model and reads no INPUT, but two paths were given "
                        f"({args.input}, {args.output}); give only OUTPUT")
    if args.input is None:
        raise UserError("--init needs OUTPUT, the file to write (a folder for --to huggingface)")
    misplaced = [name for name in CONVERT_ONLY if getattr(args, name) not in (None, False)]
    if misplaced:
        raise UserError(f"{_flag(misplaced[0])} only applies when converting an INPUT; a fresh model "
                        f"(--init) has no classification heads and reads no checkpoint")
    if args.init not in ARCHS:
        raise UserError(f"--init {args.init!r} is not an architecture; choose from: {', '.join(ARCHS.names())}")
    if args.dict is None:
        raise UserError("--init needs --dict DICT, the dict.txt the data is binarized with "
                        "(it sets the vocabulary)")
    return Path(args.input)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_output(to: str, target: Path) -> None:
    if to == "huggingface" and target.exists() and not target.is_dir():
        raise UserError(f"OUTPUT {target} is a file; --to huggingface writes a folder, choose "
                        f"another OUTPUT")


def fresh_model(settings: ArchSettings, dictionary_path: Path, seed: int) -> tuple[ModelConfig, dict[str, Tensor]]:
    """The model roberta-train builds before its first update from `settings`, the dictionary
    its task reads from `dictionary_path`, and `seed`."""
    dictionary, _ = load_dictionary_with_mask(dictionary_path)
    if len(dictionary) == dictionary.nspecial + 1:  # only the specials and <mask>
        raise UserError(f"--dict {dictionary_path} holds no symbols; pass the dict.txt the data is "
                        f"binarized with")
    config = build_model_config(settings, len(dictionary))
    # roberta-train seeds the global generator just before building; forked, the caller's
    # generator (a test's, or a program importing this) is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaModel(config)
    return config, model.state_dict()


def _write_output(to: str, target: Path, pretrained: Pretrained, head: str | None) -> None:
    """Write `pretrained` as `to` at `target`; on failure nothing new is left behind."""
    existed = target.exists()
    try:
        with _removed_on_failure(_outermost_missing_folder(target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            _write(to, target, pretrained, head)
    except (OSError, RuntimeError) as error:
        cause = failed_write_cause(error)
        if cause is None:
            raise
        left = "the previous one is intact" if existed else "nothing was left behind"
        raise UserError(f"could not write {target}: {cause.strerror or cause}; {left}; free some "
                        f"space or choose another OUTPUT") from None


def _write(to: str, target: Path, pretrained: Pretrained, head: str | None) -> None:
    assert pretrained.config is not None  # _convert() refuses a file without a model config
    if to == "huggingface":
        _write_hf_folder(target, pretrained, head)
    elif to == "ours":
        save_our_checkpoint(target, pretrained.state_dict, pretrained.config)
    else:
        generation = "2019" if to == "fairseq-2019" else "current"
        save_fairseq_checkpoint(target, pretrained.state_dict, pretrained.config, generation,
                                flags=training_flags(pretrained.training_state or {}))


def _write_hf_folder(target: Path, pretrained: Pretrained, head: str | None) -> None:
    """Write the folder beside `target` and move it into place once complete. Into an existing
    folder (which may hold tokenizer files) its files move one by one, the config last."""
    assert pretrained.config is not None  # _convert() refuses a file without a model config
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    with _removed_on_failure(staging):
        save_hf_folder(staging, pretrained.state_dict, pretrained.config, classification_head=head)
        if not target.exists():
            os.rename(staging, target)
            return
        for name in sorted(os.listdir(staging), key=lambda name: name == "config.json"):
            os.replace(staging / name, target / name)
        staging.rmdir()


def _outermost_missing_folder(target: Path) -> Path | None:
    """The outermost of the folders `target` goes in that do not exist yet (None: all do): the
    one a failed write removes again."""
    missing = [folder for folder in target.absolute().parents if not folder.exists()]
    return missing[-1] if missing else None


@contextlib.contextmanager
def _removed_on_failure(path: Path | None) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        raise


def cli_main() -> None:
    run_cli(main, "roberta-convert")


if __name__ == "__main__":
    cli_main()
