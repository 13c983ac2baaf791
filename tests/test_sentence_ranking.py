"""RACE as sentence_ranking: example layout, the ranking loss, learning, --save-predictions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.cli import train, validate
from roberta.data.indexed_dataset import MMapIndexedDataset
from support.race_data import generated_race_bin
from support.train_args import LEARNING_SIZES

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def race_bin(tmp_path_factory) -> Path:
    return generated_race_bin(tmp_path_factory.mktemp("gen-race"), {"train": 1250, "dev": 50, "test": 40}, seed=1)


def ranking_args(data: Path, save_dir: Path, *extra: str) -> list[str]:
    return [str(data), "--task", "sentence_ranking", "--criterion", "sentence_ranking", "--num-classes", "4",
            "--init-token", "0", "--separator-token", "2", "--max-option-length", "32", "--max-positions", "128",
            "--truncate-sequence", "--arch", "roberta_tiny", *LEARNING_SIZES, "--optimizer", "adam",
            "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--batch-size", "16",
            "--required-batch-size-multiple", "1",
            "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--save-dir",
            str(save_dir), "--num-workers", "0", "--seed", "1", "--log-format", "json", "--cpu", *extra]


def ranking_task_and_model(data: Path, *, max_positions: int = 128):
    """The task and the model that `ranking_args` describe (roberta_tiny's depth and heads, 128 wide)."""
    from roberta.models import ModelConfig
    from tasks.sentence_ranking import SentenceRankingTask

    settings = SentenceRankingTask.Settings(data=str(data), criterion="sentence_ranking", max_positions=max_positions,
                                            num_classes=4, init_token=0, separator_token=2, max_option_length=32,
                                            truncate_sequence=True)
    task = SentenceRankingTask.setup_task(settings)
    config = ModelConfig(vocab_size=len(task.dictionary), encoder_layers=2, encoder_embed_dim=128,
                         encoder_ffn_embed_dim=512, encoder_attention_heads=4, max_positions=max_positions)
    return task, task.build_model(config)


def valid_events(text: str, tag: str = "valid") -> list[dict]:
    marker = f"| {tag} | "
    return [json.loads(line.split(marker, 1)[1]) for line in text.splitlines() if marker in line]


def train_to_read(race_bin: Path, save_dir: Path, *flags: str) -> tuple[Path, list[dict], str]:
    """roberta-train from scratch on the generated exams, in a child process: the save dir, the
    validation events and the log (also left in the save dir as log.txt)."""
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *ranking_args(race_bin, save_dir, *flags)],
                            capture_output=True, text=True, cwd=REPO, timeout=1800)
    (save_dir / "log.txt").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    return save_dir, valid_events(result.stderr), result.stderr


def assert_reads_the_article(events: list[dict], log: str) -> None:
    # Chance is 25%: the wrong options never occur in the article, the right one always does.
    assert max(float(event["valid_accuracy"]) for event in events) >= 90.0, events
    assert int(events[-1]["valid_num_examples"]) == 200
    assert "chance level" not in log.split("| valid |")[-1]


@pytest.fixture(scope="module")
def trained(race_bin: Path, tmp_path_factory) -> tuple[Path, list[dict], str]:
    """A tiny model trained from scratch on the generated exams (about 20 s on 2 cores)."""
    return train_to_read(race_bin, tmp_path_factory.mktemp("race-run"), "--lr", "1e-3", "--lr-scheduler",
                         "polynomial_decay", "--warmup-updates", "50", "--total-num-update", "1000", "--max-update",
                         "600", "--dropout", "0", "--attention-dropout", "0", "--validate-interval-updates", "200",
                         "--no-epoch-checkpoints", "--log-interval", "100")


@pytest.mark.slow
def test_tiny_model_learns_to_read_the_article(trained) -> None:
    _, events, log = trained
    assert_reads_the_article(events, log)


# Each precision's flags, and what roberta-train then logs it computes in.
PRECISIONS = {"fp32": ((), "float32"), "bf16": (("--bf16",), "bfloat16")}


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_a_steeper_schedule_learns_to_read_in_each_precision(race_bin: Path, tmp_path, precision: str) -> None:
    # A third of `trained`'s updates at twice its peak rate: where bf16 matmuls are emulated (CPUs without
    # AVX512-BF16 or AMX run them about 7x slower than fp32) `trained` would take some 7 minutes in bf16.
    flags, arithmetic = PRECISIONS[precision]
    _, events, log = train_to_read(race_bin, tmp_path, *flags, "--lr", "2e-3", "--lr-scheduler", "polynomial_decay",
                                   "--warmup-updates", "20", "--total-num-update", "200", "--max-update", "200",
                                   "--dropout", "0", "--attention-dropout", "0", "--validate-interval-updates", "50",
                                   "--no-save", "--log-interval", "50")
    assert_reads_the_article(events, log)
    assert f"precision: {arithmetic} arithmetic, float32 weights" in log


@pytest.mark.slow
def test_save_predictions_writes_dataset_order_and_matches_the_accuracy(race_bin: Path, trained, tmp_path, capfd) -> None:
    save_dir, _, _ = trained
    preds = tmp_path / "preds.tsv"
    validate.main([str(race_bin), "--valid-subset", "test", "--path", str(save_dir / "checkpoint_best.pt"),
                   "--max-sentences", "1", "--task", "sentence_ranking", "--criterion", "sentence_ranking",
                   "--save-predictions", str(preds), "--log-format", "json", "--cpu"])
    stats = valid_events(capfd.readouterr().err, tag="test")[-1]
    rows = [line.split("\t") for line in preds.read_text().splitlines()]
    labels = (race_bin / "label" / "test.label").read_text().split()
    assert [int(row[0]) for row in rows] == list(range(len(labels)))
    assert [row[2] for row in rows] == labels
    assert all(row[1] in {"0", "1", "2", "3"} for row in rows)
    accuracy = 100.0 * np.mean([row[1] == row[2] for row in rows])
    assert float(stats["test_accuracy"]) == pytest.approx(accuracy, abs=0.05)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_predictions_without_labels_and_one_file_per_subset(race_bin: Path, trained, tmp_path) -> None:
    save_dir, _, _ = trained
    unlabeled = tmp_path / "data-bin"
    for folder in race_bin.iterdir():
        if folder.name != "label":
            (unlabeled / folder.name).mkdir(parents=True)
            for path in folder.iterdir():
                (unlabeled / folder.name / path.name).symlink_to(path)
    validate.main([str(unlabeled), "--valid-subset", "test,test1", "--path", str(save_dir / "checkpoint_best.pt"),
                   "--batch-size", "8", "--save-predictions", str(tmp_path / "preds.tsv"), "--cpu"])
    for subset in ("test", "test1"):
        rows = [line.split("\t") for line in (tmp_path / f"preds.{subset}.tsv").read_text().splitlines()]
        assert len(rows) == 80 and {len(row) for row in rows} == {2}
        assert [int(row[0]) for row in rows] == list(range(80))


def test_at_chance_after_an_epoch_the_log_says_why(race_bin: Path, tmp_path, capfd) -> None:
    train.main(ranking_args(race_bin, tmp_path, "--lr", "1e-9", "--max-epoch", "1", "--max-sentences", "64",
                            "--no-save", "--train-subset", "valid"))
    log = capfd.readouterr().err
    assert "chance level (25.0%)" in log and "--init-token/--separator-token" in log


def test_one_forward_for_all_options_equals_fairseqs_one_per_option(race_bin: Path) -> None:
    from criterions.sentence_ranking import SentenceRankingCriterion

    task, model = ranking_task_and_model(race_bin)
    model.eval()
    dataset = task.load_dataset("valid")
    batch = dataset.collater([dataset[i] for i in range(5)])
    criterion = SentenceRankingCriterion.build(SentenceRankingCriterion.Settings(), task)
    loss, sample_size, output = criterion(model, batch)
    per_option = []
    for choice in range(4):
        tokens = batch["net_input"]["src_tokens"][:, choice]
        tokens = tokens[:, : int(tokens.ne(1).sum(1).max())]
        per_option.append(model(tokens, classification_head_name="sentence_classification_head")[0])
    logits = torch.cat(per_option, dim=1)
    expected = torch.nn.functional.cross_entropy(logits, batch["target"], reduction="sum")
    assert sample_size == 5 and torch.allclose(loss, expected, atol=1e-5)
    assert int(output["ncorrect"]) == int((logits.argmax(1) == batch["target"]).sum())
    with_records = criterion.forward_with_records(model, batch)
    assert torch.equal(with_records[0], loss) and with_records[1:3] == (sample_size, output)
    assert with_records[3] == [{"id": int(i), "prediction": int(p), "label": int(t)}
                               for i, p, t in zip(batch["id"], logits.argmax(1), batch["target"])]


def test_example_layout_and_truncation(race_bin: Path) -> None:
    from roberta.data.multiple_choice import MultipleChoiceDataset

    def dataset(**kwargs) -> MultipleChoiceDataset:
        inputs = [MMapIndexedDataset(str(race_bin / f"input{k}" / "valid")) for k in range(5)]
        return MultipleChoiceDataset(inputs[0], inputs[1:], None, pad_idx=1, **kwargs)

    context = MMapIndexedDataset(str(race_bin / "input0" / "valid"))[0].tolist()
    option = MMapIndexedDataset(str(race_bin / "input2" / "valid"))[0].tolist()
    full = dataset(init_token=0, separator_token=2)[0]["options"][1].tolist()
    assert full == [0] + option + [2] + context  # <s> question+option </s> </s> article </s>
    assert option[-1] == 2 and context[-1] == 2
    capped = dataset(init_token=0, separator_token=2, max_option_length=5)[0]["options"][1].tolist()
    assert capped == [0] + option[:4] + [2] + context
    cut = dataset(init_token=0, separator_token=2, shorten_method="truncate", max_positions=12)
    assert cut[0]["options"][1].tolist() == full[:12]
    for kwargs in ({"init_token": 0, "separator_token": 2, "max_option_length": 5},
                   {"init_token": 0, "shorten_method": "truncate", "max_positions": 12},
                   {"shorten_method": "random_crop", "max_positions": 9}):
        data = dataset(**kwargs)
        for index in range(len(data)):
            assert data.sizes[index] == max(len(tokens) for tokens in data[index]["options"]), kwargs


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "label" / "valid.label").write_text("0\n7\n"), "label 7 is outside 0..3"),
    (lambda root: (root / "label" / "valid.label").write_text("0\nB\n"), "valid.label:2: expected an option index"),
    (lambda root: (root / "input5").mkdir(), "also has input5"),
    (lambda root: (root / "label" / "valid.label").unlink(), "the training split has no labels"),
])
def test_data_that_does_not_fit_the_flags_is_one_clear_line(race_bin: Path, tmp_path, change, message) -> None:
    data = tmp_path / "data"
    for folder in race_bin.iterdir():
        (data / folder.name).mkdir(parents=True)
        for path in folder.iterdir():
            (data / folder.name / path.name).write_bytes(path.read_bytes())
    change(data)
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *ranking_args(data, tmp_path / "ck", "--lr", "1e-4",
                             "--max-update", "1", "--train-subset", "valid")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("roberta-train: error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("generation", ["2019", "current"])
def test_restores_a_fairseq_model_pt_and_says_which_head_is_new(race_bin: Path, tmp_path, generation: str,
                                                                 caplog) -> None:
    from roberta.models.hf_export import save_fairseq_checkpoint

    _, pretrained = ranking_task_and_model(race_bin)
    del pretrained.classification_heads["sentence_classification_head"]
    model_pt = save_fairseq_checkpoint(tmp_path / "model.pt", pretrained.state_dict(), pretrained.config,
                                       generation=generation)
    caplog.set_level("INFO")
    train.main(ranking_args(race_bin, tmp_path / "ck", "--lr", "1e-9", "--restore-file", str(model_pt),
                            "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--max-update", "1",
                            "--train-subset", "valid", "--no-save", "--disable-validation"))
    assert f"loaded {len(pretrained.state_dict())} tensors from {model_pt}" in caplog.text
    assert "newly initialized classification heads: sentence_classification_head" in caplog.text


RACE_RECIPE = (
    "--ddp-backend=no_c10d --restore-file {restore} --reset-optimizer --reset-dataloader --reset-meters "
    "--best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --task sentence_ranking --num-classes 4 "
    "--init-token 0 --separator-token 2 --max-option-length 128 --max-positions 512 --truncate-sequence "
    "--arch {arch} --dropout 0.1 --attention-dropout 0.1 --weight-decay 0.01 --criterion sentence_ranking "
    "--optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-06 --clip-norm 0.0 --lr-scheduler fixed --lr 1e-05 "
    "--fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128 --max-sentences 1 "
    "--required-batch-size-multiple 1 --update-freq 16 --max-epoch {epochs}")


def test_fairseq_race_command_runs_unchanged_on_cpu(race_bin: Path, tmp_path) -> None:
    """fairseq's RACE command line (only the model size and the data split differ for the test)."""
    import shlex

    from roberta.models.hf_export import save_fairseq_checkpoint

    _, body = ranking_task_and_model(race_bin, max_positions=512)
    del body.classification_heads["sentence_classification_head"]
    restore = save_fairseq_checkpoint(tmp_path / "model.pt", body.state_dict(), body.config, generation="2019")
    recipe = shlex.split(RACE_RECIPE.format(restore=restore, arch="roberta_tiny", epochs=1))
    command = [sys.executable, "-m", "roberta.cli.train", str(race_bin), *recipe, "--encoder-embed-dim", "128",
               "--encoder-ffn-embed-dim", "512", "--train-subset", "valid", "--valid-subset", "test",
               "--save-dir", str(tmp_path / "checkpoints"), "--num-workers", "0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fallback = [line for line in result.stderr.splitlines() if "needs a CUDA GPU" in line]
    assert len(fallback) == 1 and "| WARNING |" in fallback[0], fallback
    assert "newly initialized classification heads: sentence_classification_head" in result.stderr
    assert "num_updates 13" in result.stderr  # 200 examples / (1 per batch x 16 per update), rounded up
    assert (tmp_path / "checkpoints" / "checkpoint_best.pt").is_file()


def _gather_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from roberta.evaluation import gather_records

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        # Each rank scored every other example, in its own (shuffled) order.
        mine = [{"id": i, "prediction": i % 4, "label": 0} for i in range(rank, 10, 2)][::-1]
        gathered = gather_records(mine)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_predictions_of_all_ranks_reach_one_writer_in_dataset_order(tmp_path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(_gather_on_rank, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    assert json.loads((tmp_path / "rank1.json").read_text()) is None
    assert [record["id"] for record in json.loads((tmp_path / "rank0.json").read_text())] == list(range(10))


@pytest.mark.slow
@pytest.mark.parametrize("ddp_flags", [("--ddp-backend", "no_c10d"), ("--ddp-backend", "c10d", "--find-unused-parameters")])
def test_fine_tuning_on_two_processes_equals_one_process_accumulating_two(race_bin: Path, tmp_path, ddp_flags) -> None:
    # The masked-LM head gets no gradient while fine-tuning: torch DDP must be told, ours need not.
    common = ("--lr", "1e-3", "--max-update", "6", "--dropout", "0", "--attention-dropout", "0", "--batch-size", "4",
              "--no-epoch-checkpoints", "--disable-validation")
    runs = {"single": ("--update-freq", "2"),
            "ddp": (*ddp_flags, "--distributed-world-size", "2", "--distributed-init-method",
                    f"file://{tmp_path / 'rendezvous'}")}
    # One thread everywhere, so both runs use the same kernels and summation order.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, flags in runs.items():
        result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *ranking_args(race_bin, tmp_path / name, *common, *flags)],
                                capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    single, ddp = (torch.load(tmp_path / name / "checkpoint_last.pt", weights_only=True)["model"] for name in runs)
    assert max((single[key] - ddp[key]).abs().max().item() for key in single) <= 1e-6


@pytest.mark.slow
def test_unused_head_under_torch_ddp_asks_for_find_unused_parameters(race_bin: Path, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", *ranking_args(
        race_bin, tmp_path, "--max-update", "4", "--batch-size", "4", "--disable-validation", "--ddp-backend", "c10d",
        "--distributed-world-size", "2", "--distributed-init-method", f"file://{tmp_path / 'rendezvous'}")],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1
    assert "add --find-unused-parameters, or use --ddp-backend no_c10d" in result.stderr
    assert "Traceback" not in result.stderr
