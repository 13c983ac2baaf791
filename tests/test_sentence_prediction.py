"""GLUE-style sentence_prediction: a tiny model learns a generated pair task and a regression,
validation scores every example with the task's metrics, predictions are written in dataset order."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.cli import preprocess
from roberta.data.indexed_dataset import MMapIndexedDataset
from support.train_args import LEARNING_SIZES

REPO = Path(__file__).resolve().parent.parent
ANIMALS = ["cat", "dog", "fox", "owl", "eel", "yak", "bee", "elk"]
COLORS = ["red", "blue", "green", "black", "white", "brown"]
FILLERS = ["the", "a", "quiet", "old", "small", "young", "near", "river", "hill", "today", "then", "slowly"]


def pair_example(rng: random.Random) -> tuple[str, str, str]:
    """Does the second sentence name the animal of the first? A cross-sentence match, with noise words."""
    animal, color = rng.choice(ANIMALS), rng.choice(COLORS)
    first = " ".join(["the", color, animal, "sleeps"] + rng.choices(FILLERS, k=rng.randint(0, 6)))
    same = rng.random() < 0.5
    other = animal if same else rng.choice([a for a in ANIMALS if a != animal])
    second = " ".join(["a", other, "rests"] + rng.choices(FILLERS, k=rng.randint(0, 3)))
    return first, second, "entailment" if same else "not_entailment"


def score_example(rng: random.Random) -> tuple[str, float]:
    """A sentence whose score is its share of 'good' among 'good'/'bad' words."""
    good, bad = rng.randint(0, 5), rng.randint(0, 5)
    words = ["good"] * good + ["bad"] * bad + rng.choices(FILLERS, k=rng.randint(2, 8))
    rng.shuffle(words)
    return " ".join(words), (good + 1) / (good + bad + 2)


def write_lines(path: Path, lines: list) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def binarize(text: Path, data_bin: Path, splits: dict[str, int], fields: list[str]) -> None:
    everything = text / "all.txt"
    everything.write_text("".join((text / f"{split}.{field}").read_text() for split in splits for field in fields))
    preprocess.main(["--only-source", "--trainpref", str(everything), "--destdir", str(text / "dict"), "--dict-only"])
    for field in fields:
        preprocess.main(["--only-source", "--srcdict", str(text / "dict" / "dict.txt"), "--trainpref",
                         str(text / f"train.{field}"), "--validpref", str(text / f"valid.{field}"),
                         "--destdir", str(data_bin / field)])


@pytest.fixture(scope="module")
def pair_bin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    rng = random.Random(7)
    splits = {"train": 2000, "valid": 200}
    for split, count in splits.items():
        examples = [pair_example(rng) for _ in range(count)]
        write_lines(root / f"{split}.input0", [e[0] for e in examples])
        write_lines(root / f"{split}.input1", [e[1] for e in examples])
        write_lines(root / f"{split}.label", [e[2] for e in examples])
    binarize(root, root / "bin", splits, ["input0", "input1"])
    # Labels through their own dictionary, as fairseq's GLUE recipe binarizes them.
    preprocess.main(["--only-source", "--trainpref", str(root / "train.label"), "--validpref",
                     str(root / "valid.label"), "--destdir", str(root / "bin" / "label")])
    return root / "bin"


@pytest.fixture(scope="module")
def score_bin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scores")
    rng = random.Random(11)
    splits = {"train": 2000, "valid": 200}
    (root / "bin" / "label").mkdir(parents=True)
    for split, count in splits.items():
        examples = [score_example(rng) for _ in range(count)]
        write_lines(root / f"{split}.input0", [e[0] for e in examples])
        write_lines(root / "bin" / "label" / f"{split}.label", [f"{e[1]:.4f}" for e in examples])
    binarize(root, root / "bin", splits, ["input0"])
    return root / "bin"


def glue_args(data: Path, save_dir: Path, *extra: str) -> list[str]:
    """fairseq's GLUE command, with a tiny model trained from scratch."""
    return [str(data), "--task", "sentence_prediction", "--criterion", "sentence_prediction",
            "--init-token", "0", "--separator-token", "2", "--max-positions", "64", "--arch", "roberta_tiny",
            *LEARNING_SIZES, "--dropout", "0", "--attention-dropout", "0", "--optimizer", "adam",
            "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6",
            "--weight-decay", "0.1", "--clip-norm", "0.0", "--lr-scheduler", "polynomial_decay", "--lr", "1e-3",
            "--warmup-updates", "40", "--total-num-update", "700", "--max-update", "700", "--batch-size", "32",
            "--max-tokens", "4400", "--required-batch-size-multiple", "1", "--validate-interval-updates", "350",
            "--no-epoch-checkpoints", "--save-dir", str(save_dir), "--num-workers", "0", "--seed", "1",
            "--log-format", "json", "--log-interval", "100", "--cpu", *extra]


def run_train(args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *args], capture_output=True, text=True,
                            cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def valid_events(text: str) -> list[dict]:
    marker = "| valid | "
    return [json.loads(line.split(marker, 1)[1]) for line in text.splitlines() if marker in line]


@pytest.fixture(scope="module")
def trained_pairs(pair_bin: Path, tmp_path_factory) -> tuple[Path, str]:
    save_dir = tmp_path_factory.mktemp("pair-run")
    log = run_train(glue_args(pair_bin, save_dir, "--num-classes", "2", "--best-checkpoint-metric", "accuracy",
                              "--maximize-best-checkpoint-metric", "--find-unused-parameters"))
    return save_dir, log


@pytest.mark.slow
def test_tiny_model_learns_a_sentence_pair_task(trained_pairs) -> None:
    events = valid_events(trained_pairs[1])
    final = events[-1]
    assert float(final["valid_accuracy"]) >= 90.0, events  # chance is 50
    assert float(final["valid_f1"]) >= 85.0 and float(final["valid_mcc"]) >= 75.0
    # Every validation example is scored, none dropped.
    assert int(final["valid_num_examples"]) == 200


@pytest.mark.slow
def test_tiny_model_learns_a_regression_target(score_bin: Path, tmp_path: Path) -> None:
    log = run_train(glue_args(score_bin, tmp_path, "--num-classes", "1", "--regression-target",
                              "--best-checkpoint-metric", "loss"))
    final = valid_events(log)[-1]
    assert float(final["valid_pearson"]) >= 90.0 and float(final["valid_spearman"]) >= 85.0
    assert int(final["valid_num_examples"]) == 200


@pytest.mark.slow
def test_predictions_are_label_strings_in_dataset_order(pair_bin: Path, trained_pairs, tmp_path: Path) -> None:
    out = tmp_path / "preds.tsv"
    result = subprocess.run([sys.executable, "-m", "roberta.cli.validate", str(pair_bin), "--path",
                             str(trained_pairs[0] / "checkpoint_best.pt"), "--save-predictions", str(out),
                             "--log-format", "json", "--cpu"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    gold = (pair_bin.parent / "valid.label").read_text().splitlines()
    assert [int(row[0]) for row in rows] == list(range(200))
    assert [row[2] for row in rows] == gold
    assert {row[1] for row in rows} <= {"entailment", "not_entailment"}
    accuracy = 100.0 * np.mean([row[1] == row[2] for row in rows])
    assert accuracy == pytest.approx(float(valid_events(result.stderr)[-1]["valid_accuracy"]), abs=0.01)


def make_task(data: Path):
    from tasks.sentence_prediction import SentencePredictionTask

    settings = SentencePredictionTask.Settings(data=str(data), num_classes=2, init_token=0, separator_token=2,
                                               classification_head_name="head", criterion="sentence_prediction",
                                               max_positions=64)
    return SentencePredictionTask.setup_task(settings)


def test_f1_is_that_of_the_label_one_whatever_its_class_index(pair_bin: Path, tmp_path: Path) -> None:
    # MRPC: "1" is the more frequent label, so the label dictionary makes it class 0.
    (tmp_path / "input0").mkdir()
    (tmp_path / "input0" / "dict.txt").write_text((pair_bin / "input0" / "dict.txt").read_text())
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "dict.txt").write_text("1 279\n0 129\nmadeupword0000 0\nmadeupword0001 0\n")
    task = make_task(tmp_path)
    # Gold "1","1","1","0"; predicted "1","1","0","0" -> label "1": TP 2, FP 0, FN 1 -> F1 80%
    # (class index 1, label "0", would give 66.7%).
    records = [{"id": i, "prediction": p, "label": g} for i, (p, g) in enumerate([(0, 0), (0, 0), (1, 0), (1, 1)])]
    metrics = task.report_predictions(records, "valid", None)
    assert metrics["f1"] == pytest.approx(80.0) and metrics["accuracy"] == pytest.approx(75.0)
    path = tmp_path / "preds.tsv"
    task.report_predictions(records, "valid", path)
    assert path.read_text().splitlines()[0] == "0\t1\t1"


def test_batches_are_padded_to_their_own_longest_example(pair_bin: Path) -> None:
    task = make_task(pair_bin)
    dataset = task.load_dataset("valid")
    first = MMapIndexedDataset(str(pair_bin / "input0" / "valid"))
    second = MMapIndexedDataset(str(pair_bin / "input1" / "valid"))
    example = dataset[3]
    assert example["tokens"].tolist() == [0, *first[3].tolist(), 2, *second[3].tolist()]
    assert dataset.sizes[3] == len(example["tokens"])
    order = dataset.ordered_indices()
    batch = dataset.collater([dataset[i] for i in order[:16]])
    assert batch["net_input"]["src_tokens"].shape[1] == max(dataset.sizes[order[:16]])
    assert batch["target"].dtype == torch.int64


@pytest.mark.parametrize("flags, message", [
    (("--num-classes", "3"), "--num-classes 3 but"),
    (("--num-classes", "1"), "--num-classes 1 needs --regression-target"),
    (("--num-classes", "2", "--regression-target"), "--regression-target predicts one number"),
])
def test_flags_that_do_not_fit_the_data_are_one_line(pair_bin: Path, tmp_path: Path, flags, message) -> None:
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *glue_args(pair_bin, tmp_path, *flags)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_validation_scores_and_writes_the_records_the_criterion_returns(pair_bin: Path, tmp_path: Path,
                                                                        caplog) -> None:
    """Records travel from the criterion through `valid_step` to the task: every example is
    scored (the task's metrics join the criterion's) and written in dataset order."""
    import logging

    from criterions.sentence_prediction import SentencePredictionCriterion
    from roberta.data.batching import batch_by_size
    from roberta.data.iterators import EpochBatchIterator
    from roberta.evaluation import ValidationSettings, Validator, evaluate
    from roberta.models import ModelConfig
    from roberta.trainer import Trainer

    task = make_task(pair_bin)
    torch.manual_seed(0)
    model = task.build_model(ModelConfig(vocab_size=len(task.dictionary), encoder_layers=1, encoder_embed_dim=16,
                                         encoder_ffn_embed_dim=32, encoder_attention_heads=2, max_positions=64))
    criterion = SentencePredictionCriterion.build(SentencePredictionCriterion.Settings(classification_head_name="head"),
                                                  task)
    trainer = Trainer(model, criterion, None, None, device=torch.device("cpu"))
    dataset = task.load_dataset("valid")
    batches = batch_by_size(dataset.ordered_indices(), dataset.sizes, max_sentences=16)

    def iterator(split: str) -> EpochBatchIterator:
        return EpochBatchIterator(dataset, batches, seed=1, shuffle=False)

    assert evaluate(trainer, iterator("valid"))[1] == []
    out = tmp_path / "preds.tsv"
    validator = Validator(ValidationSettings(save_predictions=str(out), log_format="json"), task, iterator)
    with caplog.at_level(logging.INFO, logger="roberta.progress"):
        validator(trainer, epoch=None, end_of_epoch=False)
    stats = [json.loads(record.getMessage()) for record in caplog.records if record.name == "valid"][-1]
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert [int(row[0]) for row in rows] == list(range(len(dataset)))
    assert int(stats["valid_num_examples"]) == len(dataset) and "valid_f1" in stats and "valid_mcc" in stats
    accuracy = 100.0 * np.mean([row[1] == row[2] for row in rows])
    assert accuracy == pytest.approx(float(stats["valid_accuracy"]), abs=0.01)


@pytest.mark.parametrize("flags, split, method", [
    ({}, "train", "none"),
    ({"truncate_sequence": True}, "valid", "truncate"),  # fairseq's older spelling
    ({"truncate_sequence": True, "shorten_method": "random_crop"}, "train", "random_crop"),
    ({"shorten_method": "truncate", "shorten_data_split_list": "train,test"}, "train", "truncate"),
    ({"shorten_method": "truncate", "shorten_data_split_list": "train,test"}, "valid", "none"),
])
def test_shortening_per_split(flags: dict, split: str, method: str) -> None:
    from roberta.data.shortening import ShorteningSettings

    assert ShorteningSettings(**flags).method_for(split) == method
