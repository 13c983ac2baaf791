"""SentencePiece models behind the same string interface as the GPT-2 BPE (fairseq's
`sentencepiece` BPE): the encoded form is the pieces joined by spaces, and `▁` marks a word
start."""
from __future__ import annotations

import os
from pathlib import Path

import sentencepiece

from roberta.errors import UserError

WORD_START = "\u2581"
_ALWAYS_WORD_STARTS = frozenset({"<unk>", "<s>", "</s>", "<pad>"})


class SentencePieceBPE:
    """Encode text to SentencePiece pieces (or ids) and back."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"sentencepiece model {path} does not exist; pass the .model file "
                            f"written by sentencepiece training")
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as error:
            raise UserError(f"{path} is not a sentencepiece model ({error})") from None

    def encode(self, text: str) -> str:
        return " ".join(self.processor.encode(text, out_type=str))

    def encode_ids(self, text: str) -> list[int]:
        return self.processor.encode(text, out_type=int)

    def decode(self, text: str) -> str:
        # Pieces carry their own spacing: drop the separators, then turn `▁` back into spaces.
        return text.replace(" ", "").replace(WORD_START, " ").strip()

    def is_beginning_of_word(self, token: str) -> bool:
        return token in _ALWAYS_WORD_STARTS or token.startswith(WORD_START)
