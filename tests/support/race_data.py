"""Generated RACE exams, extracted by scripts/preprocess_race.py and binarized: sentence_ranking data."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from roberta.cli import preprocess
from roberta.demo_corpus import make_race_exam
from support.paths import REPO, SCRIPTS


def write_race_release(root: Path, exams: dict[str, int], seed: int) -> Path:
    """A RACE-format release of generated exams: `count` files in each `{split}/{middle,high}/`."""
    rng = random.Random(seed)
    for split, count in exams.items():
        for level in ("middle", "high"):
            folder = root / split / level
            folder.mkdir(parents=True)
            for number in range(count):
                exam = make_race_exam(rng, questions=2, fillers=0)
                (folder / f"{number}.txt").write_text(json.dumps(exam), encoding="utf-8")
    return root


def binarize_words(extracted: Path, data_bin: Path) -> None:
    """Word-level binarization (no BPE) of preprocess_race.py's output: the sentence_ranking layout."""
    inputs = [extracted / f"train.input{k}" for k in range(5)]
    (extracted / "all.txt").write_text("".join(path.read_text(encoding="utf-8") for path in inputs),
                                       encoding="utf-8")
    preprocess.main(["--only-source", "--trainpref", str(extracted / "all.txt"), "--destdir",
                     str(extracted / "dict"), "--dict-only"])
    for k in range(5):
        preprocess.main(["--only-source", "--srcdict", str(extracted / "dict" / "dict.txt"),
                         "--trainpref", str(extracted / f"train.input{k}"),
                         "--validpref", str(extracted / f"dev.input{k}"),
                         "--testpref", f"{extracted}/test-middle.input{k},{extracted}/test-high.input{k}",
                         "--destdir", str(data_bin / f"input{k}")])
    (data_bin / "label").mkdir()
    for source, name in (("train", "train"), ("dev", "valid"), ("test-middle", "test"), ("test-high", "test1")):
        (data_bin / "label" / f"{name}.label").write_text((extracted / f"{source}.label").read_text())


def generated_race_bin(root: Path, sizes: dict[str, int], seed: int) -> Path:
    """A generated RACE release, extracted by our script and binarized: a sentence_ranking data-bin."""
    release = write_race_release(root / "RACE", sizes, seed=seed)
    result = subprocess.run([sys.executable, str(SCRIPTS / "preprocess_race.py"), "--input-dir",
                             str(release), "--output-dir", str(root / "extracted")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    binarize_words(root / "extracted", root / "data-bin")
    return root / "data-bin"
