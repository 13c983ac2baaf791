"""fairseq's RACE recipe run (`shared/reference/fairseq-0.12.2/race/COMMAND.sh`), replayed with
`roberta-train`: the 5-update pretraining, then the fine-tune restoring it, give fairseq's logs
line for line (opt-in: needs FAIRSEQ_PYTHON and the shared RACE sample).

fairseq's `preprocess_RACE.py` lists the RACE files in directory order, so its example order
depends on the file system; ours sorts them. To compare training and not that order, the
examples are extracted by fairseq's own script and binarized by ours.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from roberta.cli import bpe, preprocess, train
from support.logs import fairseq_log, json_events

FAIRSEQ_PYTHON = os.environ.get("FAIRSEQ_PYTHON", "")
if not FAIRSEQ_PYTHON:
    pytest.skip("FAIRSEQ_PYTHON is not set (scripts/fairseq_reference_env.sh builds fairseq 0.12.2's venv)",
                allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
TINY = "--arch roberta_base --encoder-layers 2 --encoder-embed-dim 32 --encoder-ffn-embed-dim 64 " \
       "--encoder-attention-heads 2 --dropout 0 --attention-dropout 0 --seed 1 --cpu --log-format json " \
       "--log-interval 1 --no-epoch-checkpoints --no-save-optimizer-state --num-workers 0"
PRETRAIN = "--task masked_lm --criterion masked_lm --tokens-per-sample 64 --max-positions 512 " \
           "--sample-break-mode none --optimizer adam --adam-betas (0.9,0.98) --adam-eps 1e-6 --lr 5e-4 " \
           "--lr-scheduler polynomial_decay --warmup-updates 5 --total-num-update 100 --max-update 5 --batch-size 8"
FINETUNE = "--reset-optimizer --reset-dataloader --reset-meters --best-checkpoint-metric accuracy " \
           "--maximize-best-checkpoint-metric --task sentence_ranking --num-classes 4 --init-token 0 " \
           "--separator-token 2 --max-option-length 128 --max-positions 512 --shorten-method truncate " \
           "--criterion sentence_ranking --optimizer adam --adam-betas (0.9,0.98) --adam-eps 1e-06 " \
           "--clip-norm 0.0 --lr-scheduler fixed --lr 1e-4 --max-sentences 1 --required-batch-size-multiple 1 " \
           "--update-freq 4 --ddp-backend no_c10d --max-update 10"
FIELDS = ("loss", "nll_loss", "accuracy", "wpb", "bsz", "gnorm", "lr")


def fairseq_extracted_race(race: Path, out: Path) -> Path:
    script = subprocess.run([FAIRSEQ_PYTHON, "-c", "import os, fairseq; print(os.path.dirname(fairseq.__file__))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([FAIRSEQ_PYTHON, f"{script}/examples/roberta/preprocess_RACE.py", "--input-dir", str(race),
                    "--output-dir", str(out)], check=True, capture_output=True)
    for split in ("train", "dev", "test-middle", "test-high"):
        count = sum(1 for _ in open(out / f"{split}.label", encoding="utf-8"))
        (out / f"{split}.ids").write_text("".join(f"{i}\n" for i in range(count)))
    return out


def test_race_recipe_reproduces_fairseqs_logs(shared_data: Path, gpt2_bpe_dir: Path, tmp_path: Path) -> None:
    reference = shared_data.parent / "reference" / "fairseq-0.12.2" / "race"
    if not (reference / "train.log").is_file() or not (shared_data / "race" / "RACE").is_dir():
        pytest.skip("fairseq's RACE reference logs or the RACE sample are missing")
    emma = (shared_data / "mlm" / "emma.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    for split, lines in (("train", emma[:1500]), ("valid", emma[1500:1700])):
        (tmp_path / f"emma.{split}.txt").write_text("".join(lines), encoding="utf-8")
        bpe.main(["encode", "--encoder-json", str(gpt2_bpe_dir / "encoder.json"), "--vocab-bpe",
                  str(gpt2_bpe_dir / "vocab.bpe"), "--inputs", str(tmp_path / f"emma.{split}.txt"),
                  "--outputs", str(tmp_path / f"emma.{split}.bpe"), "--keep-empty", "--workers", "1"])
    preprocess.main(["--only-source", "--srcdict", str(gpt2_bpe_dir / "dict.txt"), "--trainpref",
                     str(tmp_path / "emma.train.bpe"), "--validpref", str(tmp_path / "emma.valid.bpe"),
                     "--destdir", str(tmp_path / "emma-bin"), "--workers", "1"])
    pretrain_log = tmp_path / "pretrain.log"
    train.main([str(tmp_path / "emma-bin"), *PRETRAIN.split(), *TINY.split(), "--save-dir", str(tmp_path / "pretrain"),
                "--log-file", str(pretrain_log)])
    compare(json_events(pretrain_log.read_text(), "train_inner"), fairseq_log(reference / "pretrain.log", "train_inner"))

    extracted = fairseq_extracted_race(shared_data / "race" / "RACE", tmp_path / "race_text")
    subprocess.run(["bash", str(REPO / "scripts" / "binarize_multiple_choice.sh"), str(extracted),
                    str(tmp_path / "race-bin"), str(gpt2_bpe_dir), "4", "train", "dev", "test-middle,test-high"],
                   check=True, capture_output=True, env={**os.environ, "WORKERS": "1"})
    finetune_log = tmp_path / "finetune.log"
    train.main([str(tmp_path / "race-bin"), "--restore-file", str(tmp_path / "pretrain" / "checkpoint_last.pt"),
                *FINETUNE.split(), *TINY.split(), "--save-dir", str(tmp_path / "race"), "--log-file", str(finetune_log)])
    text = finetune_log.read_text()
    compare(json_events(text, "train_inner"), fairseq_log(reference / "train.log", "train_inner"))
    ours_valid, fairseq_valid = json_events(text, "valid"), fairseq_log(reference / "train.log", "valid")
    assert [line["valid_accuracy"] for line in ours_valid] == [line["valid_accuracy"] for line in fairseq_valid]


def compare(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs) > 0
    for mine, fairseq in zip(ours, theirs):
        for field in FIELDS:
            if field in fairseq:
                assert mine.get(field) == fairseq[field], (field, mine, fairseq)
