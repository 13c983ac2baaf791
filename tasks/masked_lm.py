"""Masked-LM pretraining (`--task masked_lm`): token blocks with dynamic masking."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from roberta.data.bpe import build_bpe
from roberta.data.dictionary import Dictionary
from roberta.data.indexed_dataset import TokenIdRange, dataset_exists, load_indexed_dataset
from roberta.data.masking import MaskedLMDataset
from roberta.data.token_blocks import TokenBlockDataset
from roberta.errors import UserError
from roberta.flag_types import NumberFlag, int_at_least, non_negative_float, positive_int, probability
from roberta.models import ModelConfig, RobertaModel
from roberta.registry import TASKS
from roberta.task import Task, data_directory, load_dictionary_with_mask

logger = logging.getLogger(__name__)

BREAK_MODES = ("none", "complete", "complete_doc", "eos")
# At 0 no token is chosen, so no batch has a target and no update is ever made.
MASK_PROB = NumberFlag("--mask-prob", float, "in (0, 1] (0 chooses no token to predict, so training would "
                       "make no update; the default is 0.15)", lambda value: 0 < value <= 1)


@TASKS.register("masked_lm")
class MaskedLMTask(Task):
    @dataclass(frozen=True, kw_only=True)
    class Settings(Task.Settings):
        data: str
        seed: int = 1
        sample_break_mode: str = "none"
        tokens_per_sample: int = 1024
        mask_prob: float = 0.15
        leave_unmasked_prob: float = 0.1
        random_token_prob: float = 0.1
        freq_weighted_replacement: bool = False
        mask_whole_words: bool = False
        mask_multiple_length: int = 1
        mask_stdev: float = 0.0
        bpe: str | None = None
        gpt2_encoder_json: str | None = None
        gpt2_vocab_bpe: str | None = None
        sentencepiece_model: str | None = None

        def __post_init__(self) -> None:
            if self.leave_unmasked_prob + self.random_token_prob > 1.0:
                raise UserError("--leave-unmasked-prob plus --random-token-prob must not exceed 1")
            if self.mask_whole_words and self.bpe is None:
                raise UserError("--mask-whole-words needs --bpe gpt2 (with --gpt2-encoder-json and --gpt2-vocab-bpe) "
                                "or --bpe sentencepiece (with --sentencepiece-model)")

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sample-break-mode", default="none", choices=BREAK_MODES,
                            help="how token blocks respect line and document boundaries")
        parser.add_argument("--tokens-per-sample", type=int_at_least("--tokens-per-sample", 2), default=1024,
                            help="tokens per block, including the leading <s>")
        parser.add_argument("--mask-prob", type=MASK_PROB, default=0.15, help="share of tokens to predict")
        parser.add_argument("--leave-unmasked-prob", type=probability("--leave-unmasked-prob"), default=0.1,
                            help="share of predicted tokens left as they are")
        parser.add_argument("--random-token-prob", type=probability("--random-token-prob"), default=0.1,
                            help="share of predicted tokens replaced by a random token")
        parser.add_argument("--freq-weighted-replacement", action="store_true",
                            help="draw random replacement tokens by dictionary frequency")
        parser.add_argument("--mask-whole-words", action="store_true",
                            help="mask all subword pieces of a chosen word (needs --bpe and its files)")
        parser.add_argument("--mask-multiple-length", type=positive_int("--mask-multiple-length"), default=1,
                            help="mask spans of this many tokens (or words)")
        parser.add_argument("--mask-stdev", type=non_negative_float("--mask-stdev"), default=0.0,
                            help="standard deviation of the span length around --mask-multiple-length")
        parser.add_argument("--bpe", choices=("gpt2", "sentencepiece"),
                            help="the BPE the data was encoded with (for --mask-whole-words)")
        parser.add_argument("--gpt2-encoder-json", help="GPT-2 encoder.json (with --bpe gpt2)")
        parser.add_argument("--gpt2-vocab-bpe", help="GPT-2 vocab.bpe (with --bpe gpt2)")
        parser.add_argument("--sentencepiece-model", help="sentencepiece model (with --bpe sentencepiece)")

    @classmethod
    def setup_task(cls, settings: MaskedLMTask.Settings) -> MaskedLMTask:
        paths = [data_directory(path) for path in settings.data.split(":")]
        dictionary, token_ids = load_dictionary_with_mask(paths[0] / "dict.txt")
        logger.info("dictionary: %d types", len(dictionary))
        word_begins = _word_begins(settings, dictionary) if settings.mask_whole_words else None
        return cls(settings, paths, dictionary, token_ids, word_begins)

    def __init__(self, settings: MaskedLMTask.Settings, paths: list[Path], dictionary: Dictionary,
                 token_ids: TokenIdRange, word_begins: torch.Tensor | None = None) -> None:
        self.settings = settings
        self.paths = paths
        self.dictionary = dictionary
        self.token_ids = token_ids
        self.mask_idx = dictionary.index("<mask>")
        self.word_begins = word_begins

    def load_dataset(self, split: str, epoch: int = 1) -> MaskedLMDataset:
        # As fairseq: with several ':'-separated data directories, epoch e reads directory (e-1) mod n.
        directory = self.paths[(epoch - 1) % len(self.paths)]
        prefix = directory / split
        if not dataset_exists(str(prefix)):
            raise UserError(f"split '{split}' not found: expected {prefix}.bin and {prefix}.idx")
        tokens = load_indexed_dataset(str(prefix), combine=split == "train", token_ids=self.token_ids)
        settings = self.settings
        blocks = TokenBlockDataset(tokens, tokens.sizes, block_size=settings.tokens_per_sample,
                                   break_mode=settings.sample_break_mode, pad=self.dictionary.pad(),
                                   eos=self.dictionary.eos(), bos=self.dictionary.bos(),
                                   # Overlong lines are dropped (train) or reported (valid) by the
                                   # length filter, as fairseq does, rather than failing here.
                                   allow_overlong=True)
        logger.info("loaded %d blocks from %s", len(blocks), prefix)
        freq_weights = None
        if settings.freq_weighted_replacement:
            freq_weights = self.dictionary.count
        return MaskedLMDataset(blocks, seed=settings.seed, mask_idx=self.mask_idx,
                               vocab_size=len(self.dictionary), pad_idx=self.dictionary.pad(),
                               mask_prob=settings.mask_prob, leave_unmasked_prob=settings.leave_unmasked_prob,
                               random_token_prob=settings.random_token_prob, freq_weights=freq_weights,
                               word_begins=self.word_begins, mask_multiple_length=settings.mask_multiple_length,
                               mask_stdev=settings.mask_stdev)

    def build_model(self, config: ModelConfig) -> RobertaModel:
        if self.settings.tokens_per_sample > config.max_positions:
            raise UserError(f"--tokens-per-sample {self.settings.tokens_per_sample} exceeds the model's "
                            f"--max-positions {config.max_positions}")
        return RobertaModel(config)

    def max_positions(self) -> int:
        return self.settings.tokens_per_sample


def _word_begins(settings: MaskedLMTask.Settings, dictionary: Dictionary) -> torch.Tensor:
    """Per dictionary entry: does it start a word? Specials count as word starts, as in fairseq."""
    assert settings.bpe is not None  # Settings.__post_init__ refuses --mask-whole-words without --bpe
    bpe = build_bpe(settings.bpe, encoder_json=settings.gpt2_encoder_json, vocab_bpe=settings.gpt2_vocab_bpe,
                    sentencepiece_model=settings.sentencepiece_model)
    begins = [index < dictionary.nspecial or symbol.startswith("madeupword") or symbol == "<mask>"
              or bpe.is_beginning_of_word(symbol) for index, symbol in enumerate(dictionary.symbols)]
    return torch.tensor(begins, dtype=torch.bool)
