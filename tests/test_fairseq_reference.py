"""Against files fairseq 0.12.2 itself wrote (`shared/reference/fairseq-0.12.2/`, see its README).

Its checkpoints load here and compute what fairseq computed on them; `roberta-train` with
fairseq's own command, in a folder holding fairseq's mid-epoch `checkpoint_last.pt`, continues
that run update for update (same batches, masks, optimizer and schedule state), and
`roberta-validate` reports fairseq-validate's loss.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from roberta.cli import train, validate
from roberta.models.pretrained import load_pretrained
from roberta.models.roberta import RobertaModel
from support.logs import fairseq_log, json_events

MLM_FLAGS = ("--task masked_lm --criterion masked_lm --arch roberta_base --encoder-layers 2 --encoder-embed-dim 64 "
             "--encoder-ffn-embed-dim 128 --encoder-attention-heads 2 --tokens-per-sample 64 --max-positions 64 "
             "--sample-break-mode none --optimizer adam --adam-betas (0.9,0.98) --adam-eps 1e-6 --lr 5e-4 "
             "--lr-scheduler polynomial_decay --warmup-updates 5 --total-num-update 100 --batch-size 8 "
             "--dropout 0 --attention-dropout 0 --seed 1 --cpu --log-format json --log-interval 1 "
             "--no-epoch-checkpoints").split()


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> Path:
    folder = shared_data.parent / "reference" / "fairseq-0.12.2"
    if not (folder / "mlm" / "checkpoint_last.pt").is_file():
        pytest.skip(f"fairseq 0.12.2 reference files not found in {folder}")
    return folder


def run_fairseq_command(reference: Path, save_dir: Path, *, max_update: int) -> str:
    """`mlm/COMMAND.sh` with roberta-train, in `save_dir` (which may hold a checkpoint to resume); returns the log."""
    shutil.copytree(reference / "mlm" / "data-bin", save_dir / "data-bin")
    log_file = save_dir / "train.log"
    train.main([str(save_dir / "data-bin"), *MLM_FLAGS, "--max-update", str(max_update), "--save-dir", str(save_dir),
                "--num-workers", "0", "--log-file", str(log_file)])
    return log_file.read_text(encoding="utf-8")


def load_model(path: Path) -> RobertaModel:
    pretrained = load_pretrained(path)
    model = RobertaModel(pretrained.config)
    for name, (inner_dim, num_classes) in pretrained.heads.items():
        model.register_classification_head(name, num_classes, inner_dim)
    model.load_state_dict(pretrained.state_dict)
    return model.eval()


def test_fairseq_checkpoint_computes_what_fairseq_computed(reference: Path) -> None:
    model = load_model(reference / "mlm" / "checkpoint_last.pt")
    expected = json.loads((reference / "mlm" / "expected_outputs.json").read_text())
    for row in expected["rows"]:
        tokens = torch.tensor(row["tokens"][: row["length_nonpad"]]).unsqueeze(0)
        with torch.no_grad():
            features = model(tokens, features_only=True)[0][0].double()
            logits = model(tokens)[0][0].double()
        assert torch.allclose(features[:4], torch.tensor(row["features_first4"], dtype=torch.float64), atol=1e-5)
        assert features.sum().item() == pytest.approx(row["features_sum"], abs=1e-3)
        assert logits.sum().item() == pytest.approx(row["logits_sum"], rel=1e-6)
        assert logits.pow(2).sum().item() == pytest.approx(row["logits_sumsq"], rel=1e-6)
        assert logits.argmax(-1).tolist() == row["argmax_per_position"]
        if "mask_top5" in row:
            log_probs = logits[row["mask_position"]].log_softmax(-1)
            top = log_probs.topk(5)
            assert top.indices.tolist() == [entry["index"] for entry in row["mask_top5"]]
            assert top.values.tolist() == pytest.approx([entry["logprob"] for entry in row["mask_top5"]], abs=1e-5)


def test_fairseq_finetuned_race_checkpoint_loads_with_its_head(reference: Path) -> None:
    model = load_model(reference / "race" / "checkpoint_best.pt")
    assert model.config.max_positions == 512 and model.config.encoder_embed_dim == 32
    assert set(model.classification_heads) == {"sentence_classification_head"}


def test_roberta_train_continues_fairseqs_own_run_update_for_update(reference: Path, tmp_path: Path) -> None:
    """fairseq resumed its checkpoint_last.pt (epoch 1 @ 20 updates) to update 40: `continue.log`."""
    shutil.copy(reference / "mlm" / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")
    log = run_fairseq_command(reference, tmp_path, max_update=40)
    ours = json_events(log, "train_inner")
    theirs = fairseq_log(reference / "mlm" / "continue.log", "train_inner")
    assert [int(line["num_updates"]) for line in ours] == list(range(21, 41))
    assert [int(line["num_updates"]) for line in theirs] == list(range(21, 41))
    for mine, fairseq in zip(ours, theirs):
        assert abs(float(mine["loss"]) - float(fairseq["loss"])) <= 0.002, (mine, fairseq)
        assert (mine["wpb"], mine["bsz"]) == (fairseq["wpb"], fairseq["bsz"])
        assert float(mine["lr"]) == pytest.approx(float(fairseq["lr"]), rel=1e-5)
        assert abs(float(mine["gnorm"]) - float(fairseq["gnorm"])) <= 0.002
        assert mine["update"] == fairseq["update"]  # the same position in the epoch
    valid_ours = json_events(log, "valid")[-1]
    valid_theirs = fairseq_log(reference / "mlm" / "continue.log", "valid")[-1]
    assert abs(float(valid_ours["valid_loss"]) - float(valid_theirs["valid_loss"])) <= 0.002


def test_roberta_validate_reports_fairseq_validates_loss(reference: Path, capsys: pytest.CaptureFixture) -> None:
    validate.main([str(reference / "mlm" / "data-bin"), "--path", str(reference / "mlm" / "checkpoint_last.pt"),
                   "--task", "masked_lm", "--valid-subset", "valid", "--cpu", "--seed", "1", "--max-tokens", "4096",
                   "--num-workers", "0", "--log-format", "json"])
    text = (reference / "mlm" / "validate.txt").read_text(encoding="utf-8")
    fairseq = dict(field.split(" ", 1) for field in text.split("valid on 'valid' subset | ")[1].splitlines()[0].split(" | "))
    printed = capsys.readouterr()
    ours = json_events(printed.out + printed.err, "valid")[-1]
    assert (ours["valid_loss"], ours["valid_ppl"]) == (fairseq["loss"], fairseq["ppl"])
    assert (ours["valid_wpb"], ours["valid_bsz"]) == (fairseq["wpb"], fairseq["bsz"])  # one batch of 44 blocks


def test_roberta_train_from_scratch_reproduces_fairseqs_run(reference: Path, tmp_path: Path) -> None:
    """Same seed, same command as `mlm/COMMAND.sh`: fairseq's initial weights, batches and masks,
    so `train.log` is reproduced line by line."""
    log = run_fairseq_command(reference, tmp_path, max_update=20)
    ours = json_events(log, "train_inner")
    theirs = fairseq_log(reference / "mlm" / "train.log", "train_inner")
    assert len(ours) == len(theirs) == 20
    for mine, fairseq in zip(ours, theirs):
        assert abs(float(mine["loss"]) - float(fairseq["loss"])) <= 0.002, (mine, fairseq)
        assert (mine["wpb"], mine["bsz"], mine["gnorm"]) == (fairseq["wpb"], fairseq["bsz"], fairseq["gnorm"])
    valid = json_events(log, "valid")[-1]
    assert valid["valid_loss"] == fairseq_log(reference / "mlm" / "train.log", "valid")[-1]["valid_loss"]


def test_hub_loads_fairseqs_checkpoint(reference: Path, gpt2_bpe_dir: Path) -> None:
    from roberta.hub import from_pretrained

    mlm = reference / "mlm"
    hub = from_pretrained(mlm, checkpoint_file="checkpoint_last.pt", data_name_or_path="./data-bin",
                          gpt2_encoder_json=gpt2_bpe_dir / "encoder.json", gpt2_vocab_bpe=gpt2_bpe_dir / "vocab.bpe")
    hub.eval()
    row = json.loads((mlm / "expected_outputs.json").read_text())["rows"][0]
    with torch.no_grad():
        features = hub.extract_features(torch.tensor(row["tokens"]))[0]
    assert torch.allclose(features[:4], torch.tensor(row["features_first4"]), atol=1e-5)
