#!/usr/bin/env python
"""Write docs/fairseq-flags.md: every flag of fairseq 0.12.2's help texts and what roberta-train /
roberta-validate do with it.

The help texts are the fixtures in `reference/fairseq-0.12.2/help/` of the shared folder (the
literal `--help` and the full parser's help of `fairseq-train` for masked_lm, sentence_prediction
and sentence_ranking, and of `fairseq-validate`). Each flag is looked up in the parser this
toolkit builds for the same task, criterion, architecture, optimizer and LR scheduler.

    python scripts/fairseq_flag_table.py [--reference DIR] [--output docs/fairseq-flags.md] [--check]
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roberta.cli import options  # noqa: E402
from roberta.cli.fairseq_flags import DIFFERENCES, compat_kind  # noqa: E402

DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "fairseq-0.12.2"
DEFAULT_OUTPUT = REPO / "docs" / "fairseq-flags.md"

# help-file stem -> (our command line choosing the same components, roberta-train?)
CONFIGS: dict[str, tuple[list[str], bool]] = {
    "fairseq-train_masked_lm_roberta_base": (
        ["data", "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base",
         "--optimizer", "adam", "--lr-scheduler", "polynomial_decay"], True),
    "fairseq-train_sentence_prediction_roberta_base": (
        ["data", "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--arch", "roberta_base",
         "--optimizer", "adam", "--lr-scheduler", "polynomial_decay"], True),
    "fairseq-train_sentence_ranking_roberta_large": (
        ["data", "--task", "sentence_ranking", "--criterion", "sentence_ranking", "--arch", "roberta_large",
         "--optimizer", "adam", "--lr-scheduler", "fixed"], True),
    "fairseq-validate_sentence_ranking": (
        ["data", "--task", "sentence_ranking", "--criterion", "sentence_ranking"], False),
}
COLUMNS = {"fairseq-train_masked_lm_roberta_base": "train masked_lm",
           "fairseq-train_sentence_prediction_roberta_base": "train sentence_prediction",
           "fairseq-train_sentence_ranking_roberta_large": "train sentence_ranking",
           "fairseq-validate_sentence_ranking": "validate"}
STATUSES = ("same", "alias", "ignored", "default-only", "unsupported")
LEGEND = {
    "same": "accepted, with fairseq's meaning and default (differences in the note)",
    "alias": "accepted as the alternative name fairseq also gives the flag",
    "ignored": "accepted and ignored (a warning says so once): a no-op here, for the reason given",
    "default-only": "accepted only at the value that is a no-op here; any other value is an error",
    "unsupported": "an error naming the flag and the reason",
}

# An option line of argparse's help: two spaces, then the option strings up to the help text.
_OPTION_LINE = re.compile(r"^  (-{1,2}[A-Za-z][\w-]*.*)$")


def help_flags(path: Path) -> dict[str, bool]:
    """Every option string in an argparse help text -> whether it is an alternative name."""
    flags: dict[str, bool] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _OPTION_LINE.match(line)
        if not match:
            continue
        invocation = re.split(r"\s{2,}", match.group(1))[0]
        names = [part.split()[0] for part in invocation.split(", ")]
        for position, name in enumerate(names):
            if name not in ("-h", "--help"):
                flags[name] = position > 0
    return flags


def config_flags(reference: Path, stem: str) -> dict[str, bool]:
    """The flags of one configuration: its literal --help and its full parser's help."""
    flags: dict[str, bool] = {}
    for kind in ("help", "full-parser"):
        flags.update(help_flags(reference / "help" / f"{stem}.{kind}.txt"))
    return flags


def our_parser(stem: str) -> argparse.ArgumentParser:
    argv, train = CONFIGS[stem]
    return options.full_parser(argv, train=train)


def status(parser: argparse.ArgumentParser, flag: str, fairseq_alias: bool) -> tuple[str | None, str]:
    """(status, note) of one fairseq flag in our parser; status None: neither accepted nor listed."""
    action = parser._option_string_actions.get(flag)
    if action is None:
        return None, ""
    kind = compat_kind(action)
    if kind is not None:
        reason = action.reason
        if kind == "default-only":
            allowed, why = reason
            reason = f"only {' / '.join(allowed)}: {why}"
        return kind, reason
    primary = action.option_strings[0]
    return ("alias" if fairseq_alias else "same"), DIFFERENCES.get(primary, "")


def table(reference: Path) -> dict[str, dict[str, tuple[str | None, str]]]:
    """flag -> configuration stem -> (status, note), for the flags each help file lists."""
    rows: dict[str, dict[str, tuple[str | None, str]]] = {}
    for stem in CONFIGS:
        parser = our_parser(stem)
        for flag, alias in config_flags(reference, stem).items():
            rows.setdefault(flag, {})[stem] = status(parser, flag, alias)
    return rows


def render(reference: Path) -> str:
    rows = table(reference)
    lines = ["# fairseq 0.12.2 flags in roberta-train and roberta-validate", "",
             "Generated by `scripts/fairseq_flag_table.py` from fairseq's own help texts "
             "(`reference/fairseq-0.12.2/help/` in the shared folder); the reasons live in "
             "`roberta/cli/fairseq_flags.py`. Do not edit by hand.", ""]
    lines += ["| status | meaning | " + " | ".join(COLUMNS.values()) + " |",
              "|---|---|" + "---:|" * len(COLUMNS)]
    per_column = {stem: Counter(cells[stem][0] for cells in rows.values() if stem in cells) for stem in CONFIGS}
    for name in STATUSES:
        lines.append(f"| {name} | {LEGEND[name]} | " + " | ".join(str(per_column[stem][name]) for stem in CONFIGS)
                     + " |")
    lines.append("| **total** | flags in the help texts | " + " | ".join(
        str(sum(per_column[stem].values())) for stem in CONFIGS) + " |")
    overall = Counter(_overall(cells) for cells in rows.values())
    lines += ["", f"{len(rows)} distinct flags in all; by their status (a flag whose status differs "
                  f"between the columns counts as `mixed`): "
              + ", ".join(f"{name} {overall[name]}" for name in (*STATUSES, "mixed") if overall[name]) + ".", ""]
    lines += ["| flag | " + " | ".join(COLUMNS.values()) + " | note |", "|---|" + "---|" * (len(COLUMNS) + 1)]
    for flag in sorted(rows, key=lambda name: name.lstrip("-").lower()):
        cells = rows[flag]
        marks = [cells[stem][0] or "MISSING" if stem in cells else "" for stem in CONFIGS]
        notes = sorted({note for _, note in cells.values() if note})
        lines.append(f"| `{flag}` | " + " | ".join(marks) + " | " + "; ".join(notes).replace("|", "\\|") + " |")
    return "\n".join(lines) + "\n"


def _overall(cells: dict[str, tuple[str | None, str]]) -> str:
    kinds = {kind for kind, _ in cells.values()}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                        help="the reference/fairseq-0.12.2 folder of the shared data")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown file to write")
    parser.add_argument("--check", action="store_true", help="only report whether --output is up to date")
    args = parser.parse_args(argv)
    text = render(args.reference)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date; run scripts/fairseq_flag_table.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
