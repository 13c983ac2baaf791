"""Shared fixtures: the real data samples in ../shared/data, skipped when absent, and roberta
commands run in-process. Shared helpers that are not fixtures live in support/."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import Command

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Tests import `tasks` and `criterions` from this checkout, never from another installed package.
sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: crash, signal, corrupt-input and resource guarantees "
                                       "(docs/reliability.md); select with -m reliability")
    config.addinivalue_line("markers", "slow: learning runs, multi-process and kill tests (about 12 minutes on "
                                       "2 cores); left out unless -m selects them: -m slow, or -m 'slow or not slow' for all")
    # The default run stays under 10 minutes on 2 cores; .ci/run runs the slow tests after it.
    if not config.option.markexpr:
        config.option.markexpr = "not slow"


@pytest.fixture(autouse=True)
def _no_log_handlers_between_tests():
    """A CLI run in-process installs log handlers; the next test starts without them."""
    yield
    from roberta.logging import reset_logging

    reset_logging()


@pytest.fixture
def command(capfd: pytest.CaptureFixture) -> Command:
    """`command("train", *argv)`: roberta-train (or -validate) in this process, as a finished process."""
    from roberta.cli.common import run_cli as run_entry_point

    def run(module: str, *argv: str | Path) -> subprocess.CompletedProcess:
        main = importlib.import_module(f"roberta.cli.{module}").main
        capfd.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_entry_point(main, f"roberta-{module}", [str(arg) for arg in argv])
        return subprocess.CompletedProcess(argv, exit_info.value.code, "", capfd.readouterr().err)

    return run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gpt2_bpe_dir(shared_data: Path) -> Path:
    path = shared_data / "gpt2_bpe"
    if not (path / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found in {path}")
    return path


def _encode_file(bpe, source: Path, target: Path, limit: int | None = None) -> None:
    with open(source, encoding="utf-8-sig") as lines, open(target, "w", encoding="utf-8") as out:
        for number, line in enumerate(lines):
            if limit is not None and number >= limit:
                break
            out.write(bpe.encode(line.strip()) + "\n")


@pytest.fixture(scope="session")
def demo_data_bin(tmp_path_factory) -> Path:
    """The generated demo corpus, byte-level BPE trained on it, binarized: a masked-LM data dir."""
    from roberta.cli import preprocess
    from roberta.data.bpe import train_byte_level_bpe
    from roberta.demo_corpus import write_corpus

    root = tmp_path_factory.mktemp("demo")
    train = write_corpus(root / "train.txt", 500, seed=1)
    valid = write_corpus(root / "valid.txt", 30, seed=2)
    bpe = train_byte_level_bpe([train], 400, root / "bpe")
    for split in (train, valid):
        _encode_file(bpe, split, split.with_suffix(".bpe"))
    preprocess.main(["--only-source", "--trainpref", str(root / "train.bpe"), "--validpref",
                     str(root / "valid.bpe"), "--destdir", str(root / "data-bin"), "--workers", "1"])
    return root / "data-bin"


@pytest.fixture(scope="session")
def austen_data_bin(tmp_path_factory, shared_data: Path) -> Path:
    """Real prose (Pride and Prejudice), a byte-level BPE trained on it, binarized."""
    from roberta.cli import preprocess
    from roberta.data.bpe import train_byte_level_bpe

    root = tmp_path_factory.mktemp("austen")
    lines = (shared_data / "mlm" / "pride_and_prejudice.txt").read_text(encoding="utf-8-sig").splitlines()
    (root / "train.txt").write_text("\n".join(lines[:12000]) + "\n", encoding="utf-8")
    (root / "valid.txt").write_text("\n".join(lines[12000:13000]) + "\n", encoding="utf-8")
    bpe = train_byte_level_bpe([root / "train.txt"], 800, root / "bpe")
    for split in ("train", "valid"):
        _encode_file(bpe, root / f"{split}.txt", root / f"{split}.bpe")
    preprocess.main(["--only-source", "--trainpref", str(root / "train.bpe"), "--validpref",
                     str(root / "valid.bpe"), "--destdir", str(root / "data-bin"), "--workers", "1"])
    return root / "data-bin"
