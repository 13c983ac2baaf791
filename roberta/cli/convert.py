"""`roberta-convert INPUT OUTPUT --to ours|fairseq|fairseq-2019|huggingface`: change a model's layout.

INPUT is detected: a roberta-train checkpoint, a fairseq `model.pt` (either generation of key
names) or a Hugging Face folder. OUTPUT is a file, or a folder for `--to huggingface`. Only the
model travels (weights, sizes, classification heads), never optimizer or data-loader state; a
fairseq OUTPUT also carries the input's training flags (task, criterion, head settings), so
fairseq-validate and fairseq's hub interface rebuild a fine-tuned model as it was trained.
A conversion that fails (a full disk) leaves nothing behind: no temporary file, no new folder,
and an OUTPUT that existed as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from roberta.checkpoint.files import training_flags
from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.fileio import failed_write_cause
from roberta.logging import setup_logging
from roberta.models.hf_export import save_fairseq_checkpoint, save_hf_folder, save_our_checkpoint
from roberta.models.pretrained import HF_HEAD_NAME, Pretrained, load_pretrained

logger = logging.getLogger("roberta.convert")

TARGETS = ("ours", "fairseq", "fairseq-2019", "huggingface")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roberta-convert", allow_abbrev=False,
        description="Convert a RoBERTa model between our, fairseq's and Hugging Face's layouts.")
    parser.add_argument("input", help="checkpoint file, fairseq model.pt or Hugging Face folder")
    parser.add_argument("output", help="file to write (a folder for --to huggingface)")
    parser.add_argument("--to", required=True, choices=TARGETS,
                        help="layout to write: ours, fairseq (current key names), fairseq-2019 (the "
                             "names of the released RoBERTa files) or huggingface")
    parser.add_argument("--classification-head-name", default=None, metavar="NAME",
                        help="with --to huggingface, export this head as RobertaForSequenceClassification's "
                             "classifier; from a Hugging Face input, the name its classifier gets "
                             f"(default: {HF_HEAD_NAME})")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow an input that needs arbitrary unpickling (only for files you trust)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    source, target = Path(args.input), Path(args.output)
    if target.exists() and source.resolve() == target.resolve():
        raise UserError(f"OUTPUT {target} is the INPUT; write the converted model elsewhere")
    if args.to == "huggingface" and target.exists() and not target.is_dir():
        raise UserError(f"OUTPUT {target} is a file; --to huggingface writes a folder, choose "
                        f"another OUTPUT")
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
    existed = target.exists()
    try:
        with _removed_on_failure(_outermost_missing_folder(target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            _write(args.to, target, pretrained, head)
    except (OSError, RuntimeError) as error:
        cause = failed_write_cause(error)
        if cause is None:
            raise
        left = "the previous one is intact" if existed else "nothing was left behind"
        raise UserError(f"could not write {target}: {cause.strerror or cause}; {left}; free some "
                        f"space or choose another OUTPUT") from None
    logger.info("converted %s (%s) -> %s (%s)", source, pretrained.source, target, args.to)


def _write(to: str, target: Path, pretrained: Pretrained, head: str | None) -> None:
    assert pretrained.config is not None  # main() refuses a file without a model config
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
    assert pretrained.config is not None  # main() refuses a file without a model config
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
