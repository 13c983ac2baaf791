"""The config `roberta-convert --to fairseq|fairseq-2019` writes: what fairseq 0.12.2's loaders read.

The real fairseq reads these files in tests/test_fairseq_interop.py (opt-in); these tests pin the
layout without it: every top-level group, the task/criterion/head settings of a fine-tuned
model, plain values only (loads with weights_only=True plus argparse.Namespace).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from roberta.cli import convert
from roberta.models import ModelConfig, RobertaModel
from roberta.models.hf_export import save_fairseq_checkpoint
from roberta.models.pretrained import load_pretrained

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "fairseq-0.12.2"
GROUPS = ["_name", "common", "common_eval", "distributed_training", "dataset", "optimization", "checkpoint",
          "bmuf", "generation", "eval_lm", "interactive", "model", "task", "criterion", "optimizer",
          "lr_scheduler", "scoring", "bpe", "tokenizer", "ema"]
HEAD = "sentence_classification_head"
RANKING_FLAGS = {"data": "race-bin", "task": "sentence_ranking", "criterion": "sentence_ranking",
                 "arch": "roberta_tiny", "optimizer": "adam", "lr_scheduler": "fixed", "lr": [1e-5], "seed": 3,
                 "num_classes": 4, "init_token": 0, "separator_token": 2, "max_option_length": 128,
                 "shorten_method": "truncate", "shorten_data_split_list": "", "truncate_sequence": True,
                 "no_shuffle": False, "ranking_head_name": HEAD, "adam_betas": "(0.9, 0.98)", "adam_eps": 1e-6,
                 "weight_decay": 0.1, "batch_size": 16, "max_tokens": None, "batch_size_valid": None,
                 "encoder_layers": None, "max_positions": 64}
GLUE_FLAGS = {"data": "RTE-bin", "task": "sentence_prediction", "criterion": "sentence_prediction",
              "arch": "roberta_tiny", "num_classes": 2, "init_token": 0, "separator_token": 2,
              "classification_head_name": "rte_head", "regression_target": False, "shorten_method": "none",
              "shorten_data_split_list": "", "no_shuffle": False, "truncate_sequence": False, "seed": 1,
              "max_positions": 64}


def tiny_model(head: str, num_classes: int) -> RobertaModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                         encoder_attention_heads=2, max_positions=64)
    model = RobertaModel(config)
    model.register_classification_head(head, num_classes=num_classes)
    return model


def our_checkpoint(path: Path, model: RobertaModel, flags: dict) -> Path:
    """A roberta-train checkpoint: its flat `cfg` of training flags nests the ModelConfig."""
    torch.save({"args": None, "cfg": {**flags, "model": model.config.to_dict()}, "model": model.state_dict(),
                "criterion": None, "optimizer_history": [{"num_updates": 7}], "task_state": {},
                "extra_state": {}}, path)
    return path


def load_safely(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def ranking_checkpoint(tmp_path: Path) -> Path:
    return our_checkpoint(tmp_path / "checkpoint_best.pt", tiny_model(HEAD, 1), RANKING_FLAGS)


def export(source: Path, target: str, tmp_path: Path) -> dict:
    output = tmp_path / target / "model.pt"
    convert.main([str(source), str(output), "--to", target])
    return load_safely(output)


def assert_ranking_settings(namespace: argparse.Namespace) -> None:
    assert (namespace.task, namespace.criterion) == ("sentence_ranking", "sentence_ranking")
    assert (namespace.num_classes, namespace.init_token, namespace.separator_token) == (4, 0, 2)
    assert (namespace.max_option_length, namespace.shorten_method, namespace.ranking_head_name) == (128, "truncate", HEAD)
    assert (namespace.arch, namespace.encoder_layers, namespace.encoder_embed_dim) == ("roberta", 2, 16)
    assert (namespace.encoder_attention_heads, namespace.max_positions, namespace.data) == (2, 64, "race-bin")


def test_fairseq_export_of_a_ranking_model_keeps_task_criterion_and_head(ranking_checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    state = export(ranking_checkpoint, "fairseq", tmp_path)
    cfg = state["cfg"]
    assert state["args"] is None and list(cfg) == GROUPS
    # fairseq builds sentence_ranking (an argparse task) and its criterion from a Namespace of every flag.
    for group in ("model", "task", "criterion"):
        assert isinstance(cfg[group], argparse.Namespace), group
        assert_ranking_settings(cfg[group])
    assert (cfg["model"]._name, cfg["task"]._name, cfg["criterion"]._name) == ("roberta", "sentence_ranking",
                                                                              "sentence_ranking")
    assert cfg["common"]["seed"] == 3 and cfg["dataset"]["batch_size_valid"] == 16
    assert cfg["optimizer"] == {"_name": "adam", "adam_betas": "(0.9, 0.98)", "adam_eps": 1e-6, "weight_decay": 0.1,
                                "use_old_adam": False, "fp16_adam_stats": False, "lr": [1e-5]}
    assert cfg["lr_scheduler"]["_name"] == "fixed" and cfg["lr_scheduler"]["lr"] == [1e-5]
    assert state["optimizer_history"][-1]["criterion_name"] == "SentenceRankingCriterion"
    assert state["optimizer_history"][-1]["num_updates"] == 0 and state["last_optimizer_state"] is None
    assert f"classification_heads.{HEAD}.out_proj.weight" in state["model"]


def test_fairseq_2019_export_of_a_ranking_model_keeps_them_in_args(ranking_checkpoint: Path, tmp_path: Path) -> None:
    state = export(ranking_checkpoint, "fairseq-2019", tmp_path)
    assert "cfg" not in state and isinstance(state["args"], argparse.Namespace)
    assert_ranking_settings(state["args"])
    assert state["optimizer_history"][-1]["criterion_name"] == "SentenceRankingCriterion"
    assert f"classification_heads.{HEAD}.out_proj.weight" in state["model"]


@pytest.mark.parametrize("target", ["fairseq", "fairseq-2019"])
def test_our_loader_reads_the_settings_back(ranking_checkpoint: Path, tmp_path: Path, target: str) -> None:
    export(ranking_checkpoint, target, tmp_path)
    loaded = load_pretrained(tmp_path / target / "model.pt")
    flags = loaded.training_flags()
    assert (flags["task"], flags["num_classes"], flags["ranking_head_name"]) == ("sentence_ranking", 4, HEAD)
    assert loaded.heads == {HEAD: (16, 1)} and loaded.config.encoder_embed_dim == 16


def test_glue_export_has_exactly_the_dataclass_fields_fairseq_merges(tmp_path: Path) -> None:
    source = our_checkpoint(tmp_path / "glue.pt", tiny_model("rte_head", 2), GLUE_FLAGS)
    cfg = export(source, "fairseq", tmp_path)["cfg"]
    # fairseq merges a dict task into its dataclass: an unknown key (e.g. our truncate_sequence) would be an error.
    assert cfg["task"] == {"_name": "sentence_prediction", "data": "RTE-bin", "num_classes": 2, "init_token": 0,
                           "separator_token": 2, "no_shuffle": False, "shorten_method": "none",
                           "shorten_data_split_list": "", "add_prev_output_tokens": False, "max_positions": 64,
                           "regression_target": False, "classification_head_name": "rte_head", "seed": 1}
    assert cfg["criterion"] == {"_name": "sentence_prediction", "classification_head_name": "rte_head",
                                "regression_target": False}
    assert cfg["model"].classification_head_name == "rte_head"


def test_a_model_without_training_flags_is_described_as_masked_lm(tmp_path: Path) -> None:
    model = tiny_model("mnli", 3)
    state = save_fairseq_checkpoint(tmp_path / "model.pt", model.state_dict(), model.config)
    cfg = load_safely(state)["cfg"]
    assert cfg["task"] == {"_name": "masked_lm", "data": ".", "sample_break_mode": "none", "tokens_per_sample": 64,
                           "mask_prob": 0.15, "leave_unmasked_prob": 0.1, "random_token_prob": 0.1,
                           "freq_weighted_replacement": False, "mask_whole_words": False,
                           "mask_multiple_length": 1, "mask_stdev": 0.0, "shorten_method": "none",
                           "shorten_data_split_list": "", "seed": 1, "include_target_tokens": False}
    assert cfg["criterion"] == {"_name": "masked_lm", "tpu": False}
    assert cfg["optimizer"] is None and cfg["bpe"] is None and cfg["model"].task == "masked_lm"


def test_a_task_fairseq_lacks_falls_back_to_masked_lm_with_a_warning(tmp_path: Path, caplog) -> None:
    model = tiny_model("mnli", 3)
    flags = {"task": "squad2", "criterion": "squad2", "data": "squad-bin"}
    path = save_fairseq_checkpoint(tmp_path / "model.pt", model.state_dict(), model.config, flags=flags)
    cfg = load_safely(path)["cfg"]
    assert cfg["task"]["_name"] == "masked_lm" and cfg["criterion"]["_name"] == "masked_lm"
    assert "fairseq 0.12.2 has no task 'squad2'" in caplog.text


def test_groups_match_a_checkpoint_fairseq_wrote(tmp_path: Path) -> None:
    reference = REFERENCE / "mlm" / "checkpoint_last.pt"
    if not reference.is_file():
        pytest.skip(f"fairseq 0.12.2 reference checkpoint not found at {reference}")
    theirs = load_safely(reference)["cfg"]
    model = tiny_model("mnli", 3)
    ours = load_safely(save_fairseq_checkpoint(tmp_path / "model.pt", model.state_dict(), model.config))["cfg"]
    assert list(ours) == list(theirs)
    for name, group in theirs.items():
        if isinstance(group, dict) and name not in ("optimizer", "lr_scheduler", "scoring"):  # the run's choices
            assert set(ours[name]) == set(group), name
    model_keys = set(vars(ours["model"]))
    architecture = {"encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                    "max_positions", "activation_fn", "encoder_normalize_before", "untie_weights_roberta"}
    assert architecture <= model_keys
