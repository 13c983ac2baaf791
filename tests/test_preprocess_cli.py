"""roberta-preprocess and roberta-bpe encode: outputs independent of --workers, fairseq's split
names and error behaviour."""
from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from roberta.cli import bpe as bpe_cli
from roberta.cli import preprocess
from roberta.cli.common import run_cli
from roberta.data.bpe import build_bpe
from roberta.data.dictionary import Dictionary, iter_lines
from roberta.data.indexed_dataset import MMapIndexedDataset

REPO = Path(__file__).resolve().parent.parent


def token_text(path: Path, lines: int, seed: int) -> Path:
    """BPE-encoded-looking text: ids as words, some empty lines, mixed line endings."""
    rng = random.Random(seed)
    rows = [" ".join(str(int(rng.paretovariate(1.2))) for _ in range(rng.randint(0, 40)))
            for _ in range(lines)]
    text = "".join(row + rng.choice(["\n", "\n", "\r\n"]) for row in rows)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    return {name: token_text(tmp_path / f"{name}.txt", lines, seed)
            for name, lines, seed in [("train", 900, 0), ("valid", 120, 1), ("valid_b", 80, 2),
                                      ("test", 60, 3), ("test_b", 50, 4)]}


def preprocess_args(inputs: dict[str, Path], destdir: Path, workers: int) -> list[str]:
    return ["--only-source", "--trainpref", str(inputs["train"]),
            "--validpref", f"{inputs['valid']},{inputs['valid_b']}",
            "--testpref", f"{inputs['test']},{inputs['test_b']}",
            "--destdir", str(destdir), "--workers", str(workers)]


def run_failing(main, prog: str, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, prog, argv)
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"{prog}: error: ")
    return error


def test_workers_do_not_change_the_output(inputs: dict[str, Path], tmp_path: Path) -> None:
    preprocess.main(preprocess_args(inputs, tmp_path / "one", workers=1))
    preprocess.main(preprocess_args(inputs, tmp_path / "two", workers=2))
    names = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert names == ["dict.txt", "preprocess.log", "test.bin", "test.idx", "test1.bin",
                     "test1.idx", "train.bin", "train.idx", "valid.bin", "valid.idx",
                     "valid1.bin", "valid1.idx"]
    for name in names:
        if name != "preprocess.log":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    log = (tmp_path / "two" / "preprocess.log").read_text(encoding="utf-8")
    assert f"{inputs['train']}: 900 sents" in log and "replaced (by <unk>)" in log


def test_binarized_lines_match_the_dictionary(inputs: dict[str, Path], tmp_path: Path) -> None:
    preprocess.main(preprocess_args(inputs, tmp_path, workers=2))
    dictionary = Dictionary.load(tmp_path / "dict.txt")
    assert len(dictionary) % 8 == 0
    for split, source in [("train", "train"), ("valid1", "valid_b"), ("test1", "test_b")]:
        dataset = MMapIndexedDataset(tmp_path / split)
        lines = list(iter_lines(inputs[source]))
        assert len(dataset) == len(lines)
        for index, line in enumerate(lines):
            assert dataset[index].tolist() == dictionary.encode_line(line).tolist()
    assert (tmp_path / "train.idx").read_bytes()[17] == 8  # uint16


def test_srcdict_threshold_and_dict_only(inputs: dict[str, Path], tmp_path: Path) -> None:
    preprocess.main(["--only-source", "--trainpref", str(inputs["train"]), "--destdir",
                     str(tmp_path / "small"), "--thresholdsrc", "20", "--padding-factor", "1",
                     "--dict-only"])
    small = Dictionary.load(tmp_path / "small" / "dict.txt")
    assert min(small.count[4:]) >= 20
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == ["dict.txt", "preprocess.log"]
    preprocess.main(["--only-source", "--srcdict", str(tmp_path / "small" / "dict.txt"),
                     "--validpref", str(inputs["valid"]), "--destdir", str(tmp_path / "reuse")])
    assert (tmp_path / "reuse" / "dict.txt").read_bytes() == \
        (tmp_path / "small" / "dict.txt").read_bytes()
    log = (tmp_path / "reuse" / "preprocess.log").read_text(encoding="utf-8")
    assert re.search(r"valid\.txt: 120 sents, \d+ tokens, [1-9][\d.]*% replaced \(by <unk>\)", log)
    preprocess.main(["--only-source", "--trainpref", str(inputs["train"]), "--destdir",
                     str(tmp_path / "top"), "--nwordssrc", "10", "--padding-factor", "1",
                     "--dict-only"])
    assert len(Dictionary.load(tmp_path / "top" / "dict.txt")) == 10


def test_preprocess_errors(inputs: dict[str, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    prog = "roberta-preprocess"
    error = run_failing(preprocess.main, prog, ["--only-source", "--trainpref",
                                                str(tmp_path / "missing.txt")], capsys)
    assert "missing.txt" in error
    error = run_failing(preprocess.main, prog, preprocess_args(inputs, tmp_path / "x", 1)
                        + ["--dataset-impl", "lazy"], capsys)
    assert "--dataset-impl lazy" in error
    preprocess.main(["--only-source", "--trainpref", str(inputs["train"]), "--destdir",
                     str(tmp_path / "done"), "--dict-only"])
    error = run_failing(preprocess.main, prog, ["--only-source", "--trainpref",
                                                str(inputs["train"]), "--destdir",
                                                str(tmp_path / "done")], capsys)
    assert "dict.txt already exists" in error
    error = run_failing(preprocess.main, prog, ["--only-source", "--validpref",
                                                str(inputs["valid"])], capsys)
    assert "--trainpref" in error
    bad_dict = tmp_path / "bad_dict.txt"
    bad_dict.write_text("a 1\nbroken\n", encoding="utf-8")
    error = run_failing(preprocess.main, prog, ["--only-source", "--srcdict", str(bad_dict),
                                                "--validpref", str(inputs["valid"]),
                                                "--destdir", str(tmp_path / "y")], capsys)
    assert "bad_dict.txt, line 2" in error


def test_preprocess_module_entry_point(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "roberta.cli.preprocess", "--only-source",
                             "--trainpref", str(tmp_path / "nope.txt")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"roberta-preprocess: error: input file(s) not found: {tmp_path / 'nope.txt'}"]


# ------------------------------------------------------------------------------ roberta-bpe

def aligned_inputs(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(5)
    words = ["Hello", "world", "it's", "naïve", "42", "—", "😀", "tea,", "again!"]
    first, second = [], []
    for row in range(400):
        first.append("" if row % 37 == 5 else " ".join(rng.choices(words, k=rng.randint(1, 9))))
        second.append("  " if row % 41 == 7 else str(row % 2))
    (tmp_path / "input0.txt").write_text("\n".join(first) + "\n", encoding="utf-8")
    (tmp_path / "label.txt").write_text("\n".join(second) + "\n", encoding="utf-8")
    return tmp_path / "input0.txt", tmp_path / "label.txt"


def bpe_flags(gpt2_bpe_dir: Path) -> list[str]:
    return ["--encoder-json", str(gpt2_bpe_dir / "encoder.json"),
            "--vocab-bpe", str(gpt2_bpe_dir / "vocab.bpe")]


def test_bpe_encode_workers_and_alignment(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    first, second = aligned_inputs(tmp_path)
    outputs = {}
    for workers in (1, 2):
        outs = [tmp_path / f"a{workers}.bpe", tmp_path / f"b{workers}.bpe"]
        bpe_cli.main(["encode", *bpe_flags(gpt2_bpe_dir), "--inputs", str(first), str(second),
                      "--outputs", *map(str, outs), "--workers", str(workers)])
        outputs[workers] = [path.read_text(encoding="utf-8") for path in outs]
    assert outputs[1] == outputs[2]
    kept = [(a, b) for a, b in zip(first.read_text(encoding="utf-8").splitlines(),
                                   second.read_text(encoding="utf-8").splitlines())
            if a.strip() and b.strip()]
    encoded_first, encoded_second = (text.splitlines() for text in outputs[2])
    assert len(kept) == len(encoded_first) == len(encoded_second) == 400 - 11 - 10
    bpe = build_bpe("gpt2", encoder_json=gpt2_bpe_dir / "encoder.json",
                    vocab_bpe=gpt2_bpe_dir / "vocab.bpe")
    for (a, b), x, y in zip(kept, encoded_first, encoded_second):
        assert bpe.decode(x) == a and bpe.decode(y) == b.strip()


def test_fairseq_encoder_script_keep_empty(tmp_path: Path, gpt2_bpe_dir: Path) -> None:
    first, second = aligned_inputs(tmp_path)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "multiprocessing_bpe_encoder.py"),
                             *bpe_flags(gpt2_bpe_dir), "--inputs", str(first), str(second),
                             "--outputs", str(tmp_path / "a.bpe"), str(tmp_path / "b.bpe"),
                             "--keep-empty", "--workers", "60"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    encoded = (tmp_path / "a.bpe").read_text(encoding="utf-8").split("\n")
    assert len(encoded) == 401 and encoded[5] == "" and encoded[-1] == ""
    assert encoded[0].split() and all(token.isdigit() for token in encoded[0].split())
    decoded = tmp_path / "a.txt"
    bpe_cli.main(["decode", *bpe_flags(gpt2_bpe_dir), "--inputs", str(tmp_path / "a.bpe"),
                  "--outputs", str(decoded), "--workers", "2"])
    assert decoded.read_text(encoding="utf-8") == first.read_text(encoding="utf-8")


def test_bpe_encode_errors(tmp_path: Path, gpt2_bpe_dir: Path,
                           capsys: pytest.CaptureFixture) -> None:
    first, second = aligned_inputs(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("only\ntwo\n", encoding="utf-8")
    out = [str(tmp_path / "o1"), str(tmp_path / "o2")]
    error = run_failing(bpe_cli.main, "roberta-bpe",
                        ["encode", *bpe_flags(gpt2_bpe_dir), "--inputs", str(first), str(short),
                         "--outputs", *out, "--workers", "2"], capsys)
    assert "short.txt ended after 2 lines" in error
    assert not any(Path(path).exists() for path in out)
    assert not list(tmp_path.glob("*.tmp"))
    error = run_failing(bpe_cli.main, "roberta-bpe",
                        ["encode", *bpe_flags(gpt2_bpe_dir), "--inputs", str(first),
                         "--outputs", *out], capsys)
    assert "--outputs" in error
    error = run_failing(bpe_cli.main, "roberta-bpe",
                        ["encode", "--inputs", str(first), "--outputs", out[0]], capsys)
    assert "--encoder-json" in error
