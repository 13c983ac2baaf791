"""The `roberta-convert` command line, as a script:

    python scripts/convert_checkpoint.py roberta.base/model.pt roberta-base-hf --to huggingface
    python scripts/convert_checkpoint.py roberta-base-hf model.pt --to fairseq-2019

The input format is detected (roberta-train checkpoint, fairseq model.pt with either generation
of key names, Hugging Face folder). The work is done by roberta/cli/convert.py.
"""
from __future__ import annotations

from roberta.cli.convert import cli_main

if __name__ == "__main__":
    cli_main()
