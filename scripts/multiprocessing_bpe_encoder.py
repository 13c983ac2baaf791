"""fairseq's `examples/roberta/multiprocessing_bpe_encoder.py` command line, unchanged:

    python scripts/multiprocessing_bpe_encoder.py --encoder-json encoder.json \
        --vocab-bpe vocab.bpe --inputs in.txt --outputs out.bpe --keep-empty --workers 60

The work is done by `roberta-bpe encode` (roberta/cli/bpe.py).
"""
from __future__ import annotations

from roberta.cli.bpe import encode_cli_main

if __name__ == "__main__":
    encode_cli_main()
