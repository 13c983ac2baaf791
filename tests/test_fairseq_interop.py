"""Our fairseq exports, read by the real fairseq 0.12.2 (opt-in: set FAIRSEQ_PYTHON).

fairseq 0.12.2 does not import on Python >= 3.11, so it runs in its own Python 3.10 venv
(`scripts/fairseq_reference_env.sh` builds one and prints the `export FAIRSEQ_PYTHON=...` line).
Each check runs fairseq's own code in a subprocess with that interpreter:
a. `--to fairseq` and `--to fairseq-2019` files load through `RobertaModel.from_pretrained` and
   `checkpoint_utils.load_model_ensemble_and_task` and give our masked-LM and head logits;
b. `fairseq_cli.validate` evaluates our exported RACE model with our accuracy;
c. `fairseq_cli.train --restore-file <our export>` continues training from it.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from roberta.cli import convert, train, validate
from roberta.models import RobertaModel
from roberta.models.pretrained import load_pretrained
from roberta.models.weights import load_model_weights
from support.race_data import generated_race_bin
from support.fairseq_reference import (FAIRSEQ_ENV, FAIRSEQ_PYTHON, require_fairseq_0_12_2,
                                       skip_module_without_fairseq)
from support.train_args import model_size_flags

skip_module_without_fairseq()

HEAD = "sentence_classification_head"
FORMATS = ("fairseq", "fairseq-2019")
TOLERANCE = 1e-5
TINY_MODEL = [*model_size_flags(layers=2, embed_dim=32, ffn_dim=64, heads=2), "--dropout", "0",
              "--attention-dropout", "0"]
RANKING = ["--num-classes", "4", "--init-token", "0", "--separator-token", "2", "--max-option-length", "32",
           "--shorten-method", "truncate"]

FAIRSEQ_OUTPUTS = '''
import json, os, sys, torch
from fairseq import checkpoint_utils
from fairseq.models.roberta import RobertaModel
jobs, rows_path, out_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = torch.load(rows_path)
out = {}
for name, (path, data, head) in jobs.items():
    hub = RobertaModel.from_pretrained(os.path.dirname(path), checkpoint_file=os.path.basename(path),
                                       data_name_or_path=data, bpe=None).eval()
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data})
    ensemble = models[0].eval()
    with torch.no_grad():
        out[name + "/hub_lm"] = hub.model(rows)[0]
        out[name + "/ensemble_lm"] = ensemble(rows)[0]
        if head:
            out[name + "/hub_head"] = hub.model(rows, features_only=True, classification_head_name=head)[0]
            out[name + "/ensemble_head"] = ensemble(rows, features_only=True, classification_head_name=head)[0]
    out[name + "/task"] = type(task).__name__
torch.save(out, out_path)
'''


def run_fairseq(args: list[str], cwd: Path) -> str:
    result = subprocess.run([FAIRSEQ_PYTHON, *args], capture_output=True, text=True, cwd=cwd, env=FAIRSEQ_ENV,
                            timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module", autouse=True)
def fairseq_0_12_2() -> None:
    require_fairseq_0_12_2()


@pytest.fixture(scope="module")
def race_bin(tmp_path_factory) -> Path:
    """A small generated RACE data-bin in fairseq's sentence_ranking layout (input0..4, label)."""
    return generated_race_bin(tmp_path_factory.mktemp("fairseq-race"), {"train": 40, "dev": 10, "test": 5}, seed=3)


@pytest.fixture(scope="module")
def mlm_bin(race_bin: Path, tmp_path_factory) -> Path:
    """The RACE articles' text as a masked-LM data dir (same dictionary)."""
    root = tmp_path_factory.mktemp("fairseq-mlm")
    for path in (race_bin / "input0").iterdir():
        if path.name == "dict.txt" or path.name.startswith(("train.", "valid.")):
            (root / path.name).symlink_to(path)
    return root


def common_train_args(save_dir: Path) -> list[str]:
    return ["--arch", "roberta_tiny", *TINY_MODEL, "--max-positions", "128", "--optimizer", "adam",
            "--lr", "1e-3", "--batch-size", "8", "--required-batch-size-multiple", "1", "--save-dir", str(save_dir),
            "--num-workers", "0", "--seed", "1", "--log-format", "json", "--cpu", "--no-epoch-checkpoints"]


@pytest.fixture(scope="module")
def models(race_bin: Path, mlm_bin: Path, tmp_path_factory) -> dict[str, tuple[Path, Path, str | None]]:
    """name -> (our checkpoint, its data dir, head): a RACE fine-tune and a masked-LM run."""
    root = tmp_path_factory.mktemp("fairseq-runs")
    train.main([str(race_bin), "--task", "sentence_ranking", "--criterion", "sentence_ranking", *RANKING,
                *common_train_args(root / "race"), "--max-update", "150", "--disable-validation"])
    train.main([str(mlm_bin), "--task", "masked_lm", "--criterion", "masked_lm", "--tokens-per-sample", "64",
                "--sample-break-mode", "none", *common_train_args(root / "mlm"), "--max-update", "5",
                "--disable-validation"])
    return {"race": (root / "race" / "checkpoint_last.pt", race_bin, HEAD),
            "mlm": (root / "mlm" / "checkpoint_last.pt", mlm_bin, None)}


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("fairseq-exports")
    out = {}
    for name, (checkpoint, _, _) in models.items():
        for target in FORMATS:
            out[name, target] = root / f"{name}-{target}" / "model.pt"
            convert.main([str(checkpoint), str(out[name, target]), "--to", target])
    return out


def ours(checkpoint: Path) -> RobertaModel:
    pretrained = load_pretrained(checkpoint)
    model = RobertaModel(pretrained.config)
    for name, (inner_dim, num_classes) in pretrained.heads.items():
        model.register_classification_head(name, num_classes, inner_dim)
    load_model_weights(model, pretrained.state_dict, path=checkpoint)
    return model.eval()


def fixed_rows(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows: full length, right-padded, and one with <mask> (the last symbol); and which tokens are real."""
    rows = torch.randint(4, vocab_size - 1, (3, 14), generator=torch.Generator().manual_seed(7))
    rows[:, 0], rows[:, -1] = 0, 2
    rows[1, 8], rows[1, 9:] = 2, 1
    rows[2, 5] = vocab_size - 1
    return rows, rows.ne(1)


def test_exports_load_in_fairseq_and_give_our_logits(models, exports, tmp_path: Path, record_property) -> None:
    vocab_size = ours(models["race"][0]).config.vocab_size
    rows, real = fixed_rows(vocab_size)
    torch.save(rows, tmp_path / "rows.pt")
    jobs = {f"{name}/{target}": (str(path), str(models[name][1]), models[name][2])
            for (name, target), path in exports.items()}
    (tmp_path / "outputs.py").write_text(FAIRSEQ_OUTPUTS)
    run_fairseq([str(tmp_path / "outputs.py"), json.dumps(jobs), str(tmp_path / "rows.pt"),
                 str(tmp_path / "out.pt")], tmp_path)
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)
    for name, (checkpoint, _, head) in models.items():
        model = ours(checkpoint)
        assert model.config.vocab_size == vocab_size  # both runs share the RACE dictionary
        with torch.no_grad():
            expected_lm = model(rows)[0]
            expected_head = model(rows, classification_head_name=head)[0] if head else None
        for target in FORMATS:
            job = f"{name}/{target}"
            assert theirs[job + "/task"] == ("SentenceRankingTask" if head else "MaskedLMTask")
            for loader in ("hub", "ensemble"):
                lm_diff = (theirs[f"{job}/{loader}_lm"][real] - expected_lm[real]).abs().max().item()
                record_property(f"{job}/{loader}_lm_max_abs_diff", lm_diff)
                assert lm_diff < TOLERANCE, (job, loader, lm_diff)
                if head:
                    head_diff = (theirs[f"{job}/{loader}_head"] - expected_head).abs().max().item()
                    record_property(f"{job}/{loader}_head_max_abs_diff", head_diff)
                    assert head_diff < TOLERANCE, (job, loader, head_diff)


def json_events(log: str, marker: str) -> list[dict]:
    events = [json.loads(line.split(marker, 1)[1]) for line in log.splitlines() if marker in line]
    assert events, log[-3000:]
    return events


def last_json(log: str, marker: str) -> dict:
    return json_events(log, marker)[-1]


@pytest.mark.parametrize("target", FORMATS)
def test_fairseq_validate_gives_our_accuracy(models, exports, target: str, tmp_path: Path, capfd,
                                             record_property) -> None:
    checkpoint, data, _ = models["race"]
    validate.main([str(data), "--path", str(checkpoint), "--valid-subset", "valid", "--batch-size", "1",
                   "--log-format", "json", "--cpu"])
    ours_stats = last_json(capfd.readouterr().err, "| valid | ")
    # Only --task/--criterion: fairseq's parser needs them; everything else comes from the file.
    log = run_fairseq(["-m", "fairseq_cli.validate", str(data), "--path", str(exports["race", target]),
                       "--task", "sentence_ranking", "--criterion", "sentence_ranking", "--valid-subset", "valid",
                       "--batch-size", "1", "--num-workers", "0", "--log-format", "json", "--cpu"], tmp_path)
    theirs = last_json(log, "| valid | ")
    record_property(f"{target}/accuracy", {"ours": ours_stats["valid_accuracy"],
                                           "fairseq": theirs["valid_accuracy"]})
    assert int(ours_stats["valid_num_examples"]) == 40
    assert float(theirs["valid_accuracy"]) == pytest.approx(float(ours_stats["valid_accuracy"]), abs=0.05)
    assert float(theirs["valid_loss"]) == pytest.approx(float(ours_stats["valid_loss"]), abs=0.002)


def test_fairseq_train_continues_from_our_export(models, exports, tmp_path: Path, capfd) -> None:
    checkpoint, data, _ = models["race"]
    validate.main([str(data), "--path", str(checkpoint), "--valid-subset", "valid", "--batch-size", "4",
                   "--log-format", "json", "--cpu"])
    ours_stats = last_json(capfd.readouterr().err, "| valid | ")
    export = exports["race", "fairseq"]
    # lr 1e-9: two updates leave the weights as loaded, so validation must score our model.
    log = run_fairseq(["-m", "fairseq_cli.train", str(data), "--restore-file", str(export), "--reset-optimizer",
                       "--reset-dataloader", "--reset-meters", "--task", "sentence_ranking",
                       "--criterion", "sentence_ranking", *RANKING, "--max-positions", "128",
                       "--arch", "roberta_base", *TINY_MODEL, "--optimizer", "adam", "--lr", "1e-9",
                       "--lr-scheduler", "fixed", "--batch-size", "4", "--required-batch-size-multiple", "1",
                       "--max-update", "2", "--num-workers", "0", "--log-format", "json", "--log-interval", "1",
                       "--seed", "1", "--cpu", "--no-save", "--save-dir", str(tmp_path / "fairseq-run")], tmp_path)
    assert f"Loaded checkpoint {export} (epoch 1 @ 0 updates)" in log
    first = json_events(log, "| train_inner | ")[0]
    assert first["num_updates"] == "1" and 0.0 < float(first["loss"]) < 10.0
    theirs = last_json(log, "| valid | ")
    assert float(theirs["valid_accuracy"]) == pytest.approx(float(ours_stats["valid_accuracy"]), abs=0.05)
    assert float(theirs["valid_loss"]) == pytest.approx(float(ours_stats["valid_loss"]), abs=0.002)
