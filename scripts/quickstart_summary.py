"""The quickstart's last word: where the model is, how well it does, what to try next, and where
the logs and pictures are. Draws the training curve when matplotlib is installed.

    python scripts/quickstart_summary.py OUT_DIR
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

from roberta.checkpoint.files import load_checkpoint, num_updates
from roberta.cli.common import run_cli
from roberta.errors import UserError
from roberta.plot_data import parse_log


def perplexities(validate_log: Path) -> dict[str, float]:
    """Each subset's perplexity from roberta-validate's log, e.g. {'valid': 12.3}."""
    if not validate_log.is_file():
        raise UserError(f"{validate_log} is missing: run the whole quickstart (bash scripts/quickstart.sh)")
    curves, _ = parse_log(validate_log.read_text(encoding="utf-8").splitlines(), str(validate_log))
    found = {subset: ppl[max(ppl)] for subset, metrics in curves.valid.items() if (ppl := metrics.get("ppl"))}
    if not found:
        raise UserError(f"{validate_log} holds no validation result: did roberta-validate finish?")
    return found


def draw_curves(train_log: Path, picture: Path) -> bool:
    """The training curve as a PNG, when the plotting extra is installed."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    from roberta.cli import plot
    plot.main(["curves", str(train_log), "--names", "quickstart", "--out", str(picture)])
    return True


def shell_quoted(code: str) -> str:
    """`code` as one shell word; double quotes read best around Python's single-quoted strings."""
    return shlex.quote(code) if any(char in code for char in '"$`\\!') else f'"{code}"'


def summary(out: Path) -> str:
    best = out / "checkpoints" / "checkpoint_best.pt"
    if not best.is_file():
        raise UserError(f"{best} is missing: run the whole quickstart (bash scripts/quickstart.sh)")
    update = num_updates(load_checkpoint(best))
    ppl = perplexities(out / "validate.log")
    picture = out / "curves.png"
    drew = draw_curves(out / "train.log", picture)
    hub = (f"import roberta; m = roberta.from_pretrained({str(out / 'checkpoints')!r}, "
           f"checkpoint_file='checkpoint_best.pt', data_name_or_path={str(out / 'data-bin')!r}, "
           f"gpt2_encoder_json={str(out / 'bpe' / 'encoder.json')!r}, "
           f"gpt2_vocab_bpe={str(out / 'bpe' / 'vocab.bpe')!r}); "
           f"print(m.fill_mask('The farmer builds the wooden <mask>.', topk=3))")
    lines = [
        "",
        f"Done. Your model: {best} (update {update}).",
        "Validation perplexity: " + ", ".join(f"{subset} {value:.2f}" for subset, value in ppl.items()),
        "",
        "Try next:",
        "  # fill in a masked word through the hub interface (fairseq's RobertaModel API)",
        f"  python -c {shell_quoted(hub)}",
        "  # fine-tune it: any recipe, starting from this model (RACE: examples/race/README.md)",
        f"  roberta-train RACE-bin --task sentence_ranking --num-classes 4 --init-token 0 --separator-token 2 "
        f"--arch roberta_tiny --encoder-embed-dim 128 --encoder-ffn-embed-dim 512 "
        f"--restore-file {best} --reset-optimizer --reset-dataloader --reset-meters ...",
        "",
        f"Logs: {out / 'train.log'} (training, JSON lines), {out / 'validate.log'} (validation).",
        f"Curves: {picture}" if drew else
        f"Curves: pip install -e '.[plot]' and run: roberta-plot curves {out / 'train.log'} --out {picture}",
        f"Watch a run as it trains: roberta-validate {out / 'data-bin'} --watch {out / 'checkpoints'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the quickstart's output folder")
    args = parser.parse_args(argv)
    print(summary(args.out))


if __name__ == "__main__":
    run_cli(main, "quickstart", sys.argv[1:])
