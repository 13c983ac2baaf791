"""Masked-LM pretraining (`--task masked_lm`): token blocks with dynamic masking."""
from __future__ import annotations

import argparse
import logging

from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import dataset_exists, load_indexed_dataset
from roberta.data.masking import MaskedLMDataset
from roberta.data.token_blocks import TokenBlockDataset
from roberta.errors import UserError
from roberta.models import RobertaModel, build_model_config
from roberta.registry import TASKS
from roberta.task import Task, data_directory

logger = logging.getLogger(__name__)

BREAK_MODES = ("none", "complete", "complete_doc", "eos")


@TASKS.register("masked_lm")
class MaskedLMTask(Task):
    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sample-break-mode", default="none", choices=BREAK_MODES,
                            help="how token blocks respect line and document boundaries")
        parser.add_argument("--tokens-per-sample", type=int, default=512,
                            help="tokens per block, including the leading <s>")
        parser.add_argument("--mask-prob", type=float, default=0.15, help="share of tokens to predict")
        parser.add_argument("--leave-unmasked-prob", type=float, default=0.1,
                            help="share of predicted tokens left as they are")
        parser.add_argument("--random-token-prob", type=float, default=0.1,
                            help="share of predicted tokens replaced by a random token")
        parser.add_argument("--freq-weighted-replacement", action="store_true",
                            help="draw random replacement tokens by dictionary frequency")

    @classmethod
    def setup_task(cls, args: argparse.Namespace) -> "MaskedLMTask":
        for prob_flag in ("mask_prob", "leave_unmasked_prob", "random_token_prob"):
            value = getattr(args, prob_flag)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"--{prob_flag.replace('_', '-')} must be in [0, 1], got {value}")
        if args.leave_unmasked_prob + args.random_token_prob > 1.0:
            raise UserError("--leave-unmasked-prob plus --random-token-prob must not exceed 1")
        if args.tokens_per_sample < 2:
            raise UserError(f"--tokens-per-sample must be at least 2, got {args.tokens_per_sample}")
        paths = [data_directory(path) for path in args.data.split(":")]
        dictionary = Dictionary.load(paths[0] / "dict.txt")
        dictionary.add_symbol("<mask>")
        logger.info("dictionary: %d types", len(dictionary))
        return cls(args, paths, dictionary)

    def __init__(self, args: argparse.Namespace, paths: list, dictionary: Dictionary) -> None:
        self.paths = paths
        self.dictionary = dictionary
        self.mask_idx = dictionary.index("<mask>")
        self.seed = args.seed
        self.tokens_per_sample = args.tokens_per_sample
        self.break_mode = args.sample_break_mode
        self.mask_prob = args.mask_prob
        self.leave_unmasked_prob = args.leave_unmasked_prob
        self.random_token_prob = args.random_token_prob
        self.freq_weighted = args.freq_weighted_replacement

    def load_dataset(self, split: str, epoch: int = 1) -> MaskedLMDataset:
        # As fairseq: with several ':'-separated data directories, epoch e reads directory (e-1) mod n.
        directory = self.paths[(epoch - 1) % len(self.paths)]
        prefix = directory / split
        if not dataset_exists(str(prefix)):
            raise UserError(f"split '{split}' not found: expected {prefix}.bin and {prefix}.idx")
        tokens = load_indexed_dataset(str(prefix), combine=split == "train")
        blocks = TokenBlockDataset(tokens, tokens.sizes, block_size=self.tokens_per_sample,
                                   break_mode=self.break_mode, pad=self.dictionary.pad(),
                                   eos=self.dictionary.eos(), bos=self.dictionary.bos(),
                                   # Overlong lines are dropped (train) or reported (valid) by the
                                   # length filter, as fairseq does, rather than failing here.
                                   allow_overlong=True)
        logger.info("loaded %d blocks from %s", len(blocks), prefix)
        freq_weights = None
        if self.freq_weighted:
            freq_weights = self.dictionary.count
        return MaskedLMDataset(blocks, seed=self.seed, mask_idx=self.mask_idx,
                               vocab_size=len(self.dictionary), pad_idx=self.dictionary.pad(),
                               mask_prob=self.mask_prob, leave_unmasked_prob=self.leave_unmasked_prob,
                               random_token_prob=self.random_token_prob, freq_weights=freq_weights)

    def build_model(self, args: argparse.Namespace) -> RobertaModel:
        config = build_model_config(args, len(self.dictionary))
        if self.tokens_per_sample > config.max_positions:
            raise UserError(f"--tokens-per-sample {self.tokens_per_sample} exceeds the model's "
                            f"--max-positions {config.max_positions}")
        return RobertaModel(config)

    def max_positions(self) -> int:
        return self.tokens_per_sample
