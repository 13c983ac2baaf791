"""fairseq 0.12 training checkpoints, built here in its layout: an argparse Namespace as `cfg["model"]`,
the fused duplicate tensors fairseq 0.12.2 saves, and Adam state keyed by fairseq's parameter order
(per parameter, or one flat fp32 buffer after `--fp16`). The state must reach the right parameters."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch

from roberta import fairseq_resume
from roberta.models import ModelConfig, RobertaModel
from roberta.models.pretrained import load_pretrained
from roberta.optim.adam import Adam

FUSED = {f"{part}_{kind}" for part in ("in_proj", "out_proj", "fc1", "fc2") for kind in ("weight", "bias")}
CONFIG = ModelConfig(vocab_size=40, encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                     encoder_attention_heads=2, max_positions=20)


def fairseq_names_in_order(model: RobertaModel) -> list[tuple[str, torch.Tensor]]:
    """fairseq's parameter order: per layer its fused duplicates first, then k, v, q, out, ..."""
    named = dict(model.named_parameters())
    order = []
    encoder = "encoder.sentence_encoder."
    order += [encoder + name for name in ("embed_tokens.weight", "embed_positions.weight",
                                          "layernorm_embedding.weight", "layernorm_embedding.bias")]
    for layer in range(CONFIG.encoder_layers):
        prefix = f"{encoder}layers.{layer}."
        order += [prefix + name for name in sorted(FUSED, key=lambda n: ("in_proj", "out_proj", "fc1", "fc2").index(n.rsplit("_", 1)[0]))]
        order += [f"{prefix}self_attn.{proj}.{kind}" for proj in ("k_proj", "v_proj", "q_proj", "out_proj")
                  for kind in ("weight", "bias")]
        order += [prefix + name for name in ("self_attn_layer_norm.weight", "self_attn_layer_norm.bias", "fc1.weight",
                                             "fc1.bias", "fc2.weight", "fc2.bias", "final_layer_norm.weight",
                                             "final_layer_norm.bias")]
    order += ["encoder.lm_head.bias", "encoder.lm_head.dense.weight", "encoder.lm_head.dense.bias",
              "encoder.lm_head.layer_norm.weight", "encoder.lm_head.layer_norm.bias"]
    out = []
    for name in order:
        if name in named:
            out.append((name, named[name].detach().clone()))
        else:  # a fused duplicate: fairseq saves zeros-shaped copies that never get a gradient
            layer = name.rsplit(".", 1)[0]
            part, kind = name.rsplit(".", 1)[1].rsplit("_", 1)
            source = {"in_proj": "self_attn.q_proj", "out_proj": "self_attn.out_proj", "fc1": "fc1", "fc2": "fc2"}[part]
            shape = named[f"{layer}.{source}.{kind}"].shape
            shape = (3 * shape[0], *shape[1:]) if part == "in_proj" else shape
            out.append((name, torch.zeros(shape)))
    return out


def fairseq_state(model: RobertaModel, *, flat: bool) -> dict:
    params = fairseq_names_in_order(model)
    weights = {"encoder.sentence_encoder.version": torch.tensor([3.0])}
    weights.update(params)
    weights["encoder.lm_head.weight"] = weights["encoder.sentence_encoder.embed_tokens.weight"]  # tied: shared
    # Each parameter's moments hold its position in fairseq's order, so a mix-up shows.
    moments = {i: {"step": 7, "exp_avg": torch.full(value.shape, float(i)), "exp_avg_sq": torch.full(value.shape, i + 0.5)}
               for i, (name, value) in enumerate(params) if name.rsplit(".", 1)[1] not in FUSED}
    if flat:
        flat_moments = {key: torch.cat([(moments[i][key] if i in moments else torch.zeros(value.shape)).flatten()
                                        for i, (_, value) in enumerate(params)]) for key in ("exp_avg", "exp_avg_sq")}
        moments = {0: {"step": 7, **flat_moments}}
        groups = [{"lr": 1e-4, "params": [0]}]
    else:
        groups = [{"lr": 1e-4, "params": list(range(len(params)))}]
    model_cfg = argparse.Namespace(arch="roberta_base", encoder_layers=2, encoder_embed_dim=16, encoder_attention_heads=2,
                                   dropout=0.0, attention_dropout=0.0, optimizer="adam")
    return {"args": None, "model": weights,
            "cfg": {"common": {"seed": 1}, "model": model_cfg, "task": {"_name": "masked_lm"}, "optimizer": {"_name": "adam"}},
            "optimizer_history": [{"criterion_name": "MaskedLmLoss",
                                   "optimizer_name": "FP16Optimizer" if flat else "FairseqAdam",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 7}],
            "extra_state": {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 7, "shuffle": True},
                            "metrics": {"fairseq": "meters"}, "best": None},
            "last_optimizer_state": {"state": moments, "param_groups": groups}}


@pytest.mark.parametrize("flat", [False, True], ids=["per-parameter", "fp16-flat"])
def test_fairseq_adam_state_reaches_the_right_parameters(tmp_path: Path, flat: bool, caplog) -> None:
    torch.manual_seed(0)
    model = RobertaModel(CONFIG)
    state = fairseq_state(model, flat=flat)
    torch.save(state, tmp_path / "checkpoint_last.pt")
    with caplog.at_level(logging.INFO):
        pretrained = load_pretrained(tmp_path / "checkpoint_last.pt")
    assert "dropped 16 fused duplicates" in caplog.text
    assert pretrained.config.encoder_attention_heads == 2 and pretrained.config.max_positions == 20
    training = pretrained.training_state
    assert training["optimizer_history"][-1]["optimizer_name"] == "Adam"
    assert training["optimizer_history"][-1]["criterion_name"] == "MaskedLMCriterion"
    assert "metrics" not in training["extra_state"]
    ours = RobertaModel(CONFIG)
    ours.load_state_dict(pretrained.state_dict)
    optimizer = Adam(ours.parameters(), lr=1e-4)
    restored = fairseq_resume.optimizer_state_for(training[fairseq_resume.STATE_KEY], optimizer, ours, tmp_path)
    optimizer.load_state_dict(restored)
    position = {name: i for i, (name, _) in enumerate(fairseq_names_in_order(model))}
    for name, param in ours.named_parameters():
        moments = optimizer.state[param]
        assert moments["step"] == 7, name
        assert torch.equal(moments["exp_avg"], torch.full(param.shape, float(position[name]))), name
        assert torch.equal(moments["exp_avg_sq"], torch.full(param.shape, position[name] + 0.5)), name
