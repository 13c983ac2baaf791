"""Using a trained RoBERTa from Python, as fairseq's hub interface does.

`from_pretrained(model_dir)` reads the vocabulary (`dict.txt`, plus `<mask>`), the subword
model (GPT-2 `encoder.json` + `vocab.bpe`, or `sentencepiece.bpe.model`) and the weights (our
checkpoint, a fairseq `model.pt` of either key generation, or a Hugging Face folder) and
returns a `RobertaHubInterface`: text in, token indices, features, class scores and
masked-token predictions out.

Nothing is downloaded. The released fairseq archives lack the GPT-2 BPE files, so they must be
put next to `model.pt` or passed as `gpt2_encoder_json=` / `gpt2_vocab_bpe=`. A Hugging Face
folder that has no GPT-2 files but a tokenizer's `vocab.json` + `merges.txt` works as it is:
there `vocab.json` maps BPE symbols straight to model indices, so it replaces `dict.txt`.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from roberta.data.bpe import BPE
from roberta.data.dictionary import Dictionary
from roberta.data.gpt2_bpe import ENCODER_JSON, VOCAB_BPE, GPT2BPE, read_encoder
from roberta.data.sentencepiece_bpe import WORD_START, SentencePieceBPE
from roberta.errors import UserError
from roberta.models.pretrained import load_pretrained
from roberta.models.roberta import RobertaModel
from roberta.models.weights import load_model_weights

__all__ = ["HubTask", "InvalidInputError", "RobertaHubInterface", "from_pretrained"]

MASK = "<mask>"
DICT_FILE = "dict.txt"
SENTENCEPIECE_MODEL = "sentencepiece.bpe.model"
HF_VOCAB = "vocab.json"
HF_MERGES = "merges.txt"
GPT2_BPE_URL = "https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/"
BPE_FILE_ARGS = {"gpt2": ("gpt2_encoder_json", "gpt2_vocab_bpe"),
                 "sentencepiece": ("sentencepiece_model",)}


class InvalidInputError(UserError, ValueError):
    """Unusable input to a hub method. Also a ValueError, which is what fairseq raises for an
    overlong input, so code written against fairseq keeps catching it."""


@dataclass
class HubTask:
    """The task-side state fairseq scripts reach through `roberta.task`."""

    source_dictionary: Dictionary
    label_dictionary: Dictionary | None
    mask_idx: int


def from_pretrained(model_dir: str | os.PathLike, checkpoint_file: str = "model.pt",
                    data_name_or_path: str = ".", bpe: str = "gpt2", *, unsafe: bool = False,
                    **bpe_files: str | os.PathLike) -> RobertaHubInterface:
    """Load a model for inference or fine-tuning from `model_dir` (see
    `RobertaHubInterface.from_pretrained`)."""
    return RobertaHubInterface.from_pretrained(model_dir, checkpoint_file, data_name_or_path, bpe,
                                               unsafe=unsafe, **bpe_files)


class RobertaHubInterface(nn.Module):
    """A RoBERTa model with its vocabulary and BPE: fairseq's `RobertaHubInterface`.

    Like fairseq's, the model is left in training mode (dropout on) after loading; call
    `eval()` for inference. `fill_mask` always predicts in evaluation mode.
    """

    def __init__(self, model: RobertaModel, dictionary: Dictionary, bpe: BPE,
                 label_dictionary: Dictionary | None = None) -> None:
        super().__init__()
        if MASK not in dictionary:
            raise UserError(f"the dictionary has no {MASK} symbol; add it with "
                            f"dictionary.add_symbol('{MASK}') as the RoBERTa tasks do")
        if len(dictionary) != model.config.vocab_size:
            raise UserError(f"the dictionary has {len(dictionary)} symbols (with {MASK}) but the "
                            f"model's vocabulary has {model.config.vocab_size}; use the dict.txt "
                            f"the model was trained with")
        self.model = model
        self.dictionary = dictionary
        self.bpe = bpe
        self.mask_idx = dictionary.index(MASK)
        self.task = HubTask(dictionary, label_dictionary, self.mask_idx)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, checkpoint_file: str = "model.pt",
                        data_name_or_path: str = ".", bpe: str = "gpt2", *, unsafe: bool = False,
                        **bpe_files: str | os.PathLike) -> RobertaHubInterface:
        """Read a model folder as fairseq's `RobertaModel.from_pretrained` does.

        `checkpoint_file` is taken inside `model_dir` (without `model.pt` there, a Hugging Face
        folder's `config.json` + weights are read); `data_name_or_path` is the folder holding
        `dict.txt` (or `input0/dict.txt`, and `label/dict.txt` for classification), a path
        starting with `.` being relative to `model_dir`. `bpe` is `gpt2` or `sentencepiece`;
        `bpe_files` may name `gpt2_encoder_json`, `gpt2_vocab_bpe` or `sentencepiece_model`,
        else they are looked up in `model_dir` and the data folder. `unsafe` allows
        checkpoints that need arbitrary unpickling (only for files you trust).
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise UserError(f"model folder {model_dir} does not exist; pass the folder holding "
                            f"{checkpoint_file} and {DICT_FILE}")
        data_path = _data_path(model_dir, data_name_or_path)
        dictionary, bpe_model = _load_vocabulary(bpe, model_dir, data_path, bpe_files)
        model = _load_model(_weights_path(model_dir, checkpoint_file), dictionary, unsafe)
        label_file = data_path / "label" / DICT_FILE
        labels = Dictionary.load(label_file) if label_file.is_file() else None
        return cls(model, dictionary, bpe_model, labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----------------------------------------------------------------------------- text

    def encode(self, sentence: str, *addl_sentences: str, no_separator: bool = False) -> torch.Tensor:
        """`<s> A </s>`, then `</s> B </s>` for each further sentence (`B </s>` with
        `no_separator`), as dictionary indices. GPT-2's BPE is sensitive to a leading space:
        "world" and " world" encode differently."""
        eos = self.dictionary.eos()
        indices = [self.dictionary.bos(), *self._bpe_indices(sentence), eos]
        for extra in addl_sentences:
            if not no_separator:
                indices.append(eos)
            indices += [*self._bpe_indices(extra), eos]
        return torch.tensor(indices, dtype=torch.long)

    def decode(self, tokens: Tensor) -> str | list[str]:
        """Text of 1-D `tokens`: a leading `<s>` is dropped, and a `</s></s>` separator splits
        the result into a list of sentences."""
        if not torch.is_tensor(tokens) or tokens.dim() != 1:
            raise InvalidInputError("decode takes one sequence: a 1-D tensor of token indices")
        indices = tokens.tolist()
        if indices and indices[0] == self.dictionary.bos():
            indices = indices[1:]
        eos = self.dictionary.eos()
        sentences: list[list[int]] = [[]]
        for position, index in enumerate(indices):
            sentences[-1].append(index)
            if index == eos and position + 1 < len(indices) and indices[position + 1] == eos:
                sentences.append([])
        texts = [self.bpe.decode(self.dictionary.string(sentence)) for sentence in sentences]
        return texts[0] if len(texts) == 1 else texts

    def _bpe_indices(self, text: str) -> list[int]:
        return [self.dictionary.index(symbol) for symbol in self.bpe.encode(text).split()]

    # ---------------------------------------------------------------------------- model

    def extract_features(self, tokens: Tensor, return_all_hiddens: bool = False) -> Tensor | list[Tensor]:
        """Last-layer features, B x T x H (a 1-D input gets a batch of one); with
        `return_all_hiddens`, the L + 1 states from the embeddings up to the last layer."""
        features, extra = self.model(self._batch(tokens), features_only=True,
                                     return_all_hiddens=return_all_hiddens)
        return extra["inner_states"] if return_all_hiddens else features

    def register_classification_head(self, name: str, num_classes: int | None = None,
                                     embedding_size: int | None = None, **kwargs: Any) -> None:
        """Add a freshly initialised head (or replace one, with a warning if its sizes change).

        `inner_dim` sets the head's hidden width (default: the model's). `embedding_size`, the
        width of the features the head reads, can only be the model's hidden size.
        """
        inner_dim = kwargs.pop("inner_dim", None)
        if kwargs:
            raise UserError(f"register_classification_head: unsupported options {sorted(kwargs)}; "
                            f"it takes num_classes and inner_dim")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"register_classification_head('{name}'): num_classes must be a "
                            f"positive integer, got {num_classes!r}")
        width = self.model.config.encoder_embed_dim
        if embedding_size is not None and embedding_size != width:
            raise UserError(f"register_classification_head('{name}'): embedding_size "
                            f"{embedding_size} differs from the model's hidden size {width}; "
                            f"leave it out, or set inner_dim for the head's own width")
        self.model.register_classification_head(name, num_classes, inner_dim)

    def predict(self, head: str, tokens: Tensor, return_logits: bool = False) -> Tensor:
        """Scores of the classification head `head`: log-probabilities, or raw logits."""
        logits, _ = self.model(self._batch(tokens), classification_head_name=head)
        return logits if return_logits else F.log_softmax(logits, dim=-1)

    def fill_mask(self, masked_input: str, topk: int = 5) -> list[tuple[str, float, str]]:
        """The `topk` most likely tokens at the one `<mask>` in `masked_input`, most likely
        first, as (filled sentence, probability, predicted token)."""
        if masked_input.count(MASK) != 1:
            raise InvalidInputError(f"fill_mask needs exactly one {MASK} in the input, found "
                                    f"{masked_input.count(MASK)}: e.g. 'The cat {MASK} on the mat.'")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise InvalidInputError(f"fill_mask: topk must be a positive integer, got {topk!r}")
        before, after = masked_input.split(MASK)
        # The mask stands for a whole BPE token, leading space included, so the space before
        # it is not encoded separately (" <mask>" is replaced by the predicted " word").
        symbols = f"{self.bpe.encode(before.rstrip())} {MASK} {self.bpe.encode(after.rstrip())}"
        indices = [self.dictionary.index(symbol) for symbol in symbols.split()]
        tokens = self._batch(torch.tensor([self.dictionary.bos(), *indices, self.dictionary.eos()]))
        with _evaluation_mode(self.model), torch.no_grad():
            logits, _ = self.model(tokens, masked_tokens=tokens.eq(self.mask_idx))
        probabilities = logits[0].float().softmax(dim=-1)
        values, predicted = probabilities.topk(min(topk, probabilities.numel()))
        placeholder = f" {MASK}" if f" {MASK}" in masked_input else MASK
        results = []
        for probability, index in zip(values.tolist(), predicted.tolist()):
            word = self._token_text(index)
            results.append((masked_input.replace(placeholder, word), probability, word))
        return results

    def _token_text(self, index: int) -> str:
        symbol = self.dictionary[index]
        text = self.bpe.decode(symbol)
        # SentencePiece decoding strips the space a word-initial piece stands for; put it back
        # so the word fills " <mask>" with its space, as a GPT-2 token does.
        if symbol.startswith(WORD_START) and not text.startswith(" "):
            text = " " + text
        return text

    def _batch(self, tokens: Tensor) -> Tensor:
        """`tokens` as a B x T LongTensor on the model's device, after checking it fits."""
        if not torch.is_tensor(tokens) or tokens.is_floating_point() or tokens.dim() not in (1, 2):
            raise InvalidInputError("tokens must be a 1-D or 2-D tensor of token indices (from encode)")
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        limit = self.model.max_positions()
        if tokens.size(-1) > limit:
            raise InvalidInputError(f"the input has {tokens.size(-1)} tokens, more than the "
                                    f"{limit} positions the model has; shorten or split the text")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < len(self.dictionary):
            raise InvalidInputError(f"token indices must lie in [0, {len(self.dictionary)}), the "
                                    f"dictionary's range; got {int(tokens.min())}..{int(tokens.max())}")
        return tokens.to(device=self.device, dtype=torch.long)


@contextlib.contextmanager
def _evaluation_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------- loading


def _data_path(model_dir: Path, data_name_or_path: str | os.PathLike) -> Path:
    # As fairseq: of several ':'-separated data folders the first holds the dictionary, and a
    # path starting with '.' is relative to the model folder.
    first = str(data_name_or_path).split(":")[0]
    path = model_dir / first if first.startswith(".") else Path(first)
    if not path.exists():
        raise UserError(f"data_name_or_path {data_name_or_path}: {path} does not exist; pass the "
                        f"folder holding the model's {DICT_FILE}")
    return path


def _weights_path(model_dir: Path, checkpoint_file: str) -> Path:
    if ":" in checkpoint_file:
        raise UserError(f"checkpoint_file {checkpoint_file}: ensembles of several checkpoints "
                        f"are not supported; load one file")
    path = model_dir / checkpoint_file
    if not path.exists() and (model_dir / "config.json").is_file():
        return model_dir
    if not path.exists():
        raise UserError(f"checkpoint {path}: no such file; pass checkpoint_file= the checkpoint "
                        f"inside {model_dir} (e.g. checkpoint_best.pt)")
    return path


def _load_model(path: Path, dictionary: Dictionary, unsafe: bool) -> RobertaModel:
    pretrained = load_pretrained(path, unsafe=unsafe)
    config = pretrained.config
    if config is None:
        raise UserError(f"{path} does not say how many attention heads the model has, so it "
                        f"cannot be rebuilt; store encoder_attention_heads in its args/cfg")
    if config.vocab_size != len(dictionary):
        raise UserError(f"{path} has a vocabulary of {config.vocab_size} symbols, but the "
                        f"dictionary gives {len(dictionary)} (with {MASK}); pass "
                        f"data_name_or_path= the data the model was trained on")
    model = RobertaModel(config)
    pretrained.register_heads(model)
    load_model_weights(model, pretrained.state_dict, path=path)
    return model


def _load_vocabulary(kind: str, model_dir: Path, data_path: Path,
                     bpe_files: dict[str, str | os.PathLike]) -> tuple[Dictionary, BPE]:
    if kind not in BPE_FILE_ARGS:
        raise UserError(f"unknown bpe '{kind}'; choose from: {', '.join(BPE_FILE_ARGS)}")
    unknown = sorted(set(bpe_files) - set(BPE_FILE_ARGS[kind]))
    if unknown:
        raise UserError(f"from_pretrained(bpe='{kind}') does not take {', '.join(unknown)}; it "
                        f"takes {', '.join(BPE_FILE_ARGS[kind])}")
    folders = list(dict.fromkeys(folder for folder in (model_dir, data_path) if folder.is_dir()))
    if kind == "sentencepiece":
        model = bpe_files.get("sentencepiece_model") or _find(SENTENCEPIECE_MODEL, folders)
        if model is None:
            raise UserError(f"no {SENTENCEPIECE_MODEL} in {_names(folders)}; put the model's "
                            f"sentencepiece file there or pass sentencepiece_model=")
        return _load_dictionary(data_path), SentencePieceBPE(model)
    encoder_json = bpe_files.get("gpt2_encoder_json") or _find(ENCODER_JSON, folders)
    vocab_bpe = bpe_files.get("gpt2_vocab_bpe") or _find(VOCAB_BPE, folders)
    if encoder_json and vocab_bpe:
        return _load_dictionary(data_path), GPT2BPE(encoder_json, vocab_bpe)
    if not bpe_files and (model_dir / HF_VOCAB).is_file() and (model_dir / HF_MERGES).is_file():
        return _hf_dictionary(model_dir / HF_VOCAB), GPT2BPE(model_dir / HF_VOCAB, model_dir / HF_MERGES)
    missing = " and ".join(name for name, found in ((ENCODER_JSON, encoder_json), (VOCAB_BPE, vocab_bpe))
                           if not found)
    raise UserError(f"the gpt2 BPE needs {missing}, not found in {_names(folders)}; they are "
                    f"never downloaded: copy them from {GPT2_BPE_URL} into {model_dir}, or pass "
                    f"gpt2_encoder_json= and gpt2_vocab_bpe= (a Hugging Face folder may hold "
                    f"{HF_VOCAB} and {HF_MERGES} instead)")


def _find(name: str, folders: list[Path]) -> Path | None:
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def _names(folders: list[Path]) -> str:
    return " or ".join(str(folder) for folder in folders)


def _load_dictionary(data_path: Path) -> Dictionary:
    """`dict.txt` (a file, or in the folder or its `input0/`, as sentence tasks lay it out),
    with `<mask>` added as every RoBERTa task does."""
    candidates = [data_path] if data_path.is_file() else [data_path / DICT_FILE,
                                                          data_path / "input0" / DICT_FILE]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        raise UserError(f"no {DICT_FILE} in {data_path} (nor in {data_path / 'input0'}); pass "
                        f"data_name_or_path= the folder holding the dictionary the model was "
                        f"trained with")
    dictionary = Dictionary.load(path)
    dictionary.add_symbol(MASK)
    return dictionary


def _hf_dictionary(vocab_path: Path) -> Dictionary:
    """A dictionary under which a Hugging Face tokenizer's ids are their own model indices.

    The GPT-2 BPE built on `vocab.json` emits model indices as decimal strings; entry i of
    this dictionary is the string of i, except the special symbols, which keep their names.
    """
    vocab = read_encoder(vocab_path)
    by_index = {index: symbol for symbol, index in vocab.items()}
    dictionary = Dictionary()
    if sorted(by_index) != list(range(len(vocab))) or len(by_index) != len(vocab) \
            or any(by_index.get(index) != dictionary[index] for index in range(dictionary.nspecial)):
        raise UserError(f"{vocab_path}: not a RoBERTa tokenizer vocabulary (ids must run from 0 "
                        f"without gaps, starting with <s>, <pad>, </s>, <unk>)")
    for index in range(dictionary.nspecial, len(vocab)):
        symbol = by_index[index]
        dictionary.add_symbol(symbol if symbol == MASK else str(index), n=0)
    dictionary.add_symbol(MASK)
    return dictionary
