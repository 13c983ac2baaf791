"""Shape of the code: namespace reads per layer, file sizes and the longest functions.

Run from the repository root (or pass one): `python benchmarks/code_shape.py [ROOT]`. Issue 16's
before/after figures come from this script.
"""
from __future__ import annotations

import ast
import re
import statistics
import sys
from pathlib import Path

LAYERS = {"command layer (roberta/cli)": ["roberta/cli"], "engine (roberta, not cli)": ["roberta"],
          "plugins (tasks, criterions)": ["tasks", "criterions"], "scripts": ["scripts"]}
# `args` or `flags` (the command layer's name for it) read as a namespace, not as a dict.
NAMESPACE_READ = re.compile(r"\b(?:args|flags)\.(?!(?:get|items|keys|values|update|pop)\b)[a-z_]\w*"
                            r"|getattr\((?:args|flags)\b|vars\((?:args|flags)\)")


def python_files(root: Path, folder: str) -> list[Path]:
    return sorted((root / folder).rglob("*.py"))


def namespace_reads(root: Path) -> dict[str, tuple[int, int]]:
    """Per layer: (reads, modules with reads)."""
    cli = {path for path in python_files(root, "roberta/cli")}
    counts = {}
    for layer, folders in LAYERS.items():
        files = [path for folder in folders for path in python_files(root, folder)]
        if layer.startswith("engine"):
            files = [path for path in files if path not in cli]
        hits = {path: len(NAMESPACE_READ.findall(path.read_text())) for path in files}
        counts[layer] = (sum(hits.values()), sum(1 for n in hits.values() if n))
    return counts


def function_lengths(root: Path) -> list[tuple[int, str]]:
    lengths = []
    for folder in ("roberta", "tasks", "criterions"):
        for path in python_files(root, folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lengths.append((node.end_lineno - node.lineno + 1,
                                    f"{path.relative_to(root)}:{node.name}"))
    return sorted(lengths, reverse=True)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    print("namespace reads (args.x or flags.x, getattr(args, ...), vars(args)):")
    for layer, (reads, modules) in namespace_reads(root).items():
        print(f"  {layer:32s} {reads:4d} reads in {modules:2d} modules")
    sizes = sorted(((len(path.read_text().splitlines()), str(path.relative_to(root)))
                    for folder in ("roberta", "tasks", "criterions", "scripts")
                    for path in python_files(root, folder)), reverse=True)
    print("largest files (lines):", ", ".join(f"{name} {lines}" for lines, name in sizes[:8]))
    lengths = function_lengths(root)
    values = [length for length, _ in lengths]
    print(f"functions: {len(values)}, median {statistics.median(values)} lines, "
          f"p90 {statistics.quantiles(values, n=10)[-1]:.0f}, over 60 lines: {sum(v > 60 for v in values)}")
    print("longest:", ", ".join(f"{name} {length}" for length, name in lengths[:5]))


if __name__ == "__main__":
    main()
