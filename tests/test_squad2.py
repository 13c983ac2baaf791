"""SQuAD 2.0 as `--task squad2`: learning on generated data, predictions files, post-processing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roberta.cli import bpe as bpe_cli
from roberta.cli import validate
from roberta.demo_corpus import make_squad_dataset
from roberta.squad_metrics import gold_answers, squad2_metrics
from roberta.squad_postprocess import Windows, postprocess

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def squad_bin(tmp_path_factory) -> tuple[Path, Path]:
    """Generated SQuAD 2.0 train/dev files, a byte-level BPE learnt on them, preprocessed windows."""
    root = tmp_path_factory.mktemp("gen-squad")
    files = {}
    for split, paragraphs, seed in (("train", 3000, 1), ("dev", 200, 2)):
        files[split] = root / f"{split}.json"
        files[split].write_text(json.dumps(make_squad_dataset(paragraphs, seed)), encoding="utf-8")
    text = root / "text.txt"
    dataset = json.loads(files["train"].read_text())
    text.write_text("\n".join(p["context"] + "\n" + "\n".join("Q: " + q["question"] for q in p["qas"])
                              for p in dataset["data"][0]["paragraphs"]), encoding="utf-8")
    bpe_cli.main(["train", "--type", "gpt2", "--vocab-size", "1000", "--inputs", str(text),
                  "--output-dir", str(root / "bpe"), "--workers", "1"])
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "preprocess_squad.py"), str(files["train"]),
                             str(files["dev"]), str(root / "data-bin"), "--bpe-dir", str(root / "bpe"),
                             "--max-positions", "96", "--doc-stride", "48", "--max-query-length", "16"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return root / "data-bin", files["dev"]


def squad_args(data: Path, save_dir: Path, *extra: str) -> list[str]:
    return [str(data), "--task", "squad2", "--criterion", "squad2", "--arch", "roberta_tiny", "--max-positions", "96",
            "--encoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--batch-size", "32",
            "--required-batch-size-multiple", "1", "--best-checkpoint-metric", "f1",
            "--maximize-best-checkpoint-metric", "--save-dir", str(save_dir), "--num-workers", "0", "--seed", "2",
            "--log-format", "json", "--cpu", *extra]


def events(text: str, tag: str) -> list[dict]:
    marker = f"| {tag} | "
    return [json.loads(line.split(marker, 1)[1]) for line in text.splitlines() if marker in line]


# Each precision's flags, and what roberta-train then logs it computes in.
PRECISIONS = {"fp32": ((), "float32"), "bf16": (("--bf16",), "bfloat16")}


@pytest.fixture(scope="module", params=list(PRECISIONS))
def trained(squad_bin, tmp_path_factory, request) -> tuple[Path, list[dict]]:
    """The same training in each precision. F1 leaves 50 only after about 400 updates, so the bf16 run
    cannot be shorter; where bf16 matmuls are emulated (CPUs without AVX512-BF16 or AMX) it takes about
    7 minutes on 2 idle cores, against under 1 for fp32."""
    data, _ = squad_bin
    save_dir = tmp_path_factory.mktemp(f"squad-run-{request.param}")
    precision, arithmetic = PRECISIONS[request.param]
    result = subprocess.run(
        [sys.executable, "-m", "roberta.cli.train", *squad_args(
            data, save_dir, *precision, "--lr", "1e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates",
            "50", "--total-num-update", "1000", "--max-update", "600", "--dropout", "0", "--attention-dropout", "0",
            "--validate-interval-updates", "200", "--no-epoch-checkpoints", "--log-interval", "100")],
        capture_output=True, text=True, cwd=REPO, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"precision: {arithmetic} arithmetic, float32 weights" in result.stderr
    return save_dir, events(result.stderr, "valid")


@pytest.mark.slow
def test_tiny_model_finds_answers_and_abstains(trained) -> None:
    _, valid = trained
    best = max(float(event["valid_f1"]) for event in valid)
    # Half the questions have no answer: answering "" everywhere scores 50, and so does always answering.
    assert best >= 80.0, [(e["valid_f1"], e["valid_HasAns_f1"], e["valid_NoAns_f1"]) for e in valid]
    assert int(valid[-1]["valid_total"]) == 400


@pytest.mark.slow
def test_save_predictions_writes_the_official_files(squad_bin, trained, tmp_path, capfd) -> None:
    data, dev_json = squad_bin
    save_dir, _ = trained
    out = tmp_path / "out"
    validate.main([str(data), "--path", str(save_dir / "checkpoint_best.pt"), "--save-predictions", str(out),
                   "--log-format", "json", "--cpu"])
    stats = events(capfd.readouterr().err, "valid")[-1]
    assert sorted(path.name for path in out.iterdir()) == ["metrics.json", "nbest_predictions.json",
                                                           "null_odds.json", "predictions.json"]
    predictions = json.loads((out / "predictions.json").read_text())
    null_odds = json.loads((out / "null_odds.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
                             "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
                             "best_exact_null_score_diff_threshold", "best_f1_null_score_diff_threshold"]
    gold = gold_answers(json.loads(dev_json.read_text()))
    assert set(predictions) == set(gold) == set(null_odds)
    assert squad2_metrics(gold, predictions, na_probs=null_odds) == pytest.approx(metrics)
    assert float(stats["valid_f1"]) == pytest.approx(metrics["f1"], abs=0.01)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "squad2_eval.py"), str(dev_json),
                             str(out / "predictions.json"), "--na-prob-file", str(out / "null_odds.json")],
                            capture_output=True, text=True, cwd=REPO)
    assert json.loads(result.stdout) == pytest.approx(metrics)
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    answered = [qid for qid, text in predictions.items() if text]
    assert answered and all(nbest[qid][0]["text"] == predictions[qid] for qid in answered)


def test_postprocess_pools_windows_and_keeps_max_context_spans() -> None:
    context = "alpha beta gamma delta epsilon"
    spans = np.array([[0, 5], [6, 10], [11, 16], [17, 22], [23, 30]])
    # Window 0 holds tokens 0-2 (alpha beta gamma), window 1 tokens 1-4; both start at position 1.
    windows = Windows(question=np.array([0, 0]), passage_position=np.array([1, 1]),
                      doc_start=np.array([0, 1]), doc_length=np.array([3, 4]))
    records = [
        # Window 0 likes "gamma" most, but gamma is its last token: window 1 has more context there.
        {"id": 0, "start_index": [3, 2], "start_logit": [5.0, 0.5], "end_index": [3, 2], "end_logit": [5.0, 1.0],
         "no_answer_logit": -2.0},
        {"id": 1, "start_index": [3, 2], "start_logit": [3.0, 0.5], "end_index": [3, 4], "end_logit": [3.0, 0.2],
         "no_answer_logit": 1.5},
    ]
    answers = postprocess(records, windows, [{"id": "q", "paragraph": 0}], [context], [spans.reshape(-1)],
                          n_best_size=10, max_answer_length=2)
    texts = [candidate["text"] for candidate in answers.nbest["q"]]
    assert texts == ["delta", "beta gamma", "gamma delta", "delta epsilon", "beta"]
    # The best span comes from window 1, whose no-answer logit 1.5 exceeds the threshold 0.
    assert answers.null_odds["q"] == 1.5 and answers.predictions["q"] == ""
    assert sum(candidate["probability"] for candidate in answers.nbest["q"]) == pytest.approx(1.0)
    answered = postprocess(records, windows, [{"id": "q", "paragraph": 0}], [context], [spans.reshape(-1)],
                           null_score_diff_threshold=2.0)
    assert answered.predictions["q"] == "delta"


SQUAD_RECIPE = (
    "--restore-file {restore} --reset-optimizer --reset-dataloader --reset-meters --no-epoch-checkpoints "
    "--no-last-checkpoints --no-save-optimizer-state --task squad2 --max-positions {max_positions} --arch {arch} "
    "--dropout 0.1 --attention-dropout 0.1 --weight-decay 0.01 --criterion squad2 --optimizer adam "
    "--adam-betas '(0.9, 0.98)' --adam-eps 1e-06 --clip-norm 0.0 --lr-scheduler polynomial_decay --lr 3e-05 "
    "--fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128 --memory-efficient-fp16 "
    "--warmup-updates 326 --total-num-update 5430 --max-sentences 3 --required-batch-size-multiple 1 "
    "--update-freq 2 --max-update {max_update} --lr_decay 0.75 --ddp-backend=no_c10d --num-workers=0")


def test_squad_recipe_runs_unchanged_on_cpu(squad_bin, tmp_path) -> None:
    """The recipe's command line; only the model size, the data and the update count are the test's."""
    import shlex

    from roberta.models import ModelConfig
    from roberta.models.hf_export import save_fairseq_checkpoint
    from tasks.squad2 import Squad2Task

    data, _ = squad_bin
    task = Squad2Task.setup_task(Squad2Task.Settings(data=str(data), criterion="squad2", max_positions=96))
    # The recipe's model: roberta_tiny's depth and heads, 128 wide.
    body = task.build_model(ModelConfig(vocab_size=len(task.dictionary), encoder_layers=2, encoder_embed_dim=128,
                                        encoder_ffn_embed_dim=512, encoder_attention_heads=4, max_positions=96))
    body.classification_heads.clear()
    restore = save_fairseq_checkpoint(tmp_path / "model.pt", body.state_dict(), body.config)
    recipe = shlex.split(SQUAD_RECIPE.format(restore=restore, max_positions=96, arch="roberta_tiny", max_update=4))
    result = subprocess.run([sys.executable, "-m", "roberta.cli.train", str(data), *recipe, "--encoder-embed-dim",
                             "128", "--encoder-ffn-embed-dim", "512", "--save-dir", str(tmp_path / "checkpoints"),
                             "--log-format", "json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fallback = [line for line in result.stderr.splitlines() if "needs a CUDA GPU" in line]
    assert len(fallback) == 1 and "--memory-efficient-fp16" in fallback[0], fallback
    assert "newly initialized classification heads: squad_answerable, squad_span" in result.stderr
    assert "layer-wise LR decay 0.75: layer 1 + heads x1, layer 0 x0.75, embeddings x0.562" in result.stderr
    saved = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert saved == ["checkpoint_best.pt", "run_finished.json"]
