"""`roberta-convert INPUT OUTPUT --to ours|fairseq|fairseq-2019|huggingface`: change a model's layout.

INPUT is detected: a roberta-train checkpoint, a fairseq `model.pt` (either generation of key
names) or a Hugging Face folder. OUTPUT is a file, or a folder for `--to huggingface`. Only the
model travels (weights, sizes, classification heads), never optimizer or data-loader state; a
fairseq OUTPUT also carries the input's training flags (task, criterion, head settings), so
fairseq-validate and fairseq's hub interface rebuild a fine-tuned model as it was trained.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from roberta import checkpoint
from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.logging import setup_logging
from roberta.models.hf_export import save_fairseq_checkpoint, save_hf_folder, save_our_checkpoint
from roberta.models.pretrained import HF_HEAD_NAME, load_pretrained

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
    try:
        if args.to == "huggingface":
            save_hf_folder(target, pretrained.state_dict, pretrained.config, classification_head=head)
        elif args.to == "ours":
            save_our_checkpoint(target, pretrained.state_dict, pretrained.config)
        else:
            generation = "2019" if args.to == "fairseq-2019" else "current"
            save_fairseq_checkpoint(target, pretrained.state_dict, pretrained.config, generation,
                                    flags=checkpoint.training_flags(pretrained.training_state or {}))
    except OSError as error:
        raise UserError(f"could not write {target}: {error.strerror or error}; choose another OUTPUT") from None
    logger.info("converted %s (%s) -> %s (%s)", source, pretrained.source, target, args.to)


def cli_main() -> None:
    run_cli(main, "roberta-convert")


if __name__ == "__main__":
    cli_main()
