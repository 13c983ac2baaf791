"""Write the generated demo corpus: `python scripts/make_demo_corpus.py OUT_DIR [--documents N]`."""
from __future__ import annotations

import argparse

from roberta.demo_corpus import write_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="folder for train.txt, valid.txt and test.txt")
    parser.add_argument("--documents", type=int, default=2000, help="documents in the training split")
    args = parser.parse_args()
    write_corpus(f"{args.out_dir}/train.txt", args.documents, seed=1)
    write_corpus(f"{args.out_dir}/valid.txt", max(args.documents // 20, 10), seed=2)
    write_corpus(f"{args.out_dir}/test.txt", max(args.documents // 20, 10), seed=3)


if __name__ == "__main__":
    main()
