"""Trainer.train_step: accumulation equals a larger batch; OOM skips an update; divergence stops cleanly."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

import criterions.masked_lm  # noqa: F401  (registers the criterion)
from criterions.masked_lm import MaskedLMCriterion
from roberta.errors import UserError
from roberta.faults import ENVIRONMENT_VARIABLE, parse_faults
from roberta.models import ModelConfig, RobertaModel
from roberta.oom import is_out_of_memory
from roberta.optim.adam import Adam
from roberta.optim.lr_scheduler.fixed import FixedSchedule
from roberta.optim.loss_scaler import TrainingDiverged
from roberta.trainer import Trainer


def make_batch(seed: int, size: int = 4, length: int = 16) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 60, (size, length), generator=generator)
    tokens[:, 0] = 0
    target = torch.full_like(tokens, 1)
    chosen = torch.rand(size, length, generator=generator) < 0.3
    chosen[:, 0] = False
    target[chosen] = tokens[chosen]
    source = tokens.masked_fill(chosen, 63)
    return {"id": torch.arange(size), "nsentences": size, "ntokens": size * length,
            "net_input": {"src_tokens": source, "src_lengths": torch.full((size,), length)}, "target": target}


def concat(a: dict, b: dict) -> dict:
    return {"id": torch.cat([a["id"], b["id"]]), "nsentences": a["nsentences"] + b["nsentences"],
            "ntokens": a["ntokens"] + b["ntokens"],
            "net_input": {key: torch.cat([a["net_input"][key], b["net_input"][key]]) for key in a["net_input"]},
            "target": torch.cat([a["target"], b["target"]])}


def make_trainer(model: RobertaModel, clip_norm: float = 0.0, oom_backoff: bool = False) -> Trainer:
    optimizer = Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    return Trainer(model, MaskedLMCriterion(padding_idx=1), optimizer, FixedSchedule(optimizer, [1e-3]),
                   device=torch.device("cpu"), clip_norm=clip_norm, oom_backoff=oom_backoff)


@pytest.fixture
def model() -> RobertaModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                         encoder_attention_heads=4, max_positions=32, dropout=0.0, attention_dropout=0.0)
    return RobertaModel(config)


@pytest.mark.parametrize("clip_norm", [0.0, 0.05])
def test_accumulated_micro_batches_equal_one_large_batch(model: RobertaModel, clip_norm: float) -> None:
    accumulated, single = make_trainer(copy.deepcopy(model), clip_norm), make_trainer(copy.deepcopy(model), clip_norm)
    for step in range(3):
        first, second = make_batch(2 * step), make_batch(2 * step + 1)
        out_a = accumulated.train_step([first, second])
        out_b = single.train_step([concat(first, second)])
        assert out_a["gnorm"] == pytest.approx(out_b["gnorm"], rel=1e-5)
        assert out_a["logging_output"]["sample_size"] == out_b["logging_output"]["sample_size"]
    for (name, a), b in zip(accumulated.model.named_parameters(), single.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_is_normalised_by_total_sample_size(model: RobertaModel) -> None:
    """Duplicating a micro-batch must not change the gradient (it is a mean over predictions)."""
    once, twice = make_trainer(copy.deepcopy(model)), make_trainer(copy.deepcopy(model))
    batch = make_batch(7)
    assert once.train_step([batch])["gnorm"] == pytest.approx(twice.train_step([batch, batch])["gnorm"], rel=1e-5)


def test_non_finite_gradient_stops_with_the_update_named(model: RobertaModel) -> None:
    trainer = make_trainer(model)
    with torch.no_grad():
        model.encoder.lm_head.dense.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="update 1"):
        trainer.train_step([make_batch(0)])


def test_empty_placeholder_batches_are_skipped(model: RobertaModel) -> None:
    trainer = make_trainer(model)
    assert trainer.train_step([{}]) is None
    assert trainer.num_updates == 0


def test_faults_are_parsed_strictly() -> None:
    faults = parse_faults("oom-forward:rank=1:steps=2,3; nan-loss; kill-save:updates=8,16")
    assert faults[0].matches("oom-forward", 1, 3, 0, 7) and not faults[0].matches("oom-forward", 0, 3, 0, 7)
    assert faults[1].matches("nan-loss", 5, 9, 2, None)
    assert faults[2].matches("kill-save", 0, 0, 0, 16) and not faults[2].matches("kill-save", 0, 0, 0, 12)
    assert not faults[2].matches("kill-save", 0, 0, 0, None)
    for bad in ("oom-sideways", "oom-forward:when=2", "oom-forward:steps=two"):
        with pytest.raises(UserError, match=ENVIRONMENT_VARIABLE):
            parse_faults(bad)


def test_out_of_memory_is_recognised_by_type_and_by_message() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                                         "allocate memory: you tried to allocate 1 bytes. out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("fault", ["oom-forward:steps=2", "oom-backward:steps=2:micro_batches=1"])
def test_oom_skips_the_update_and_training_goes_on(model: RobertaModel, monkeypatch, caplog, fault: str) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, fault)
    trainer = make_trainer(model)
    assert trainer.train_step([make_batch(0), make_batch(1)]) is not None
    before = copy.deepcopy(trainer.model.state_dict())
    with caplog.at_level(logging.WARNING):
        assert trainer.train_step([make_batch(2), make_batch(3)]) is None
    assert trainer.num_updates == 1 and trainer.oom_updates == 1
    assert all(torch.equal(before[key], value) for key, value in trainer.model.state_dict().items())
    assert all(p.grad is None for p in trainer.model.parameters())
    messages = [record.getMessage() for record in caplog.records]
    assert "attempting to recover from OOM in forward/backward pass" in messages
    assert "OOM in all workers, skipping update" in messages
    assert trainer.extra_stats()["oom"] == 1
    assert trainer.train_step([make_batch(4), make_batch(5)]) is not None and trainer.num_updates == 2


def test_oom_backoff_halves_the_micro_batches_after_repeated_ooms(model: RobertaModel, monkeypatch, caplog) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "oom-forward:steps=1,2,3,4")
    trainer = make_trainer(model, oom_backoff=True)
    parts = []
    with caplog.at_level(logging.WARNING):
        for step in range(5):
            trainer.train_step([make_batch(step)])
            parts.append(trainer.oom_backoff.parts)
    assert parts == [1, 2, 2, 4, 4]
    assert sum("--oom-backoff" in record.getMessage() for record in caplog.records) == 2
    assert trainer.num_updates == 1


def test_non_finite_loss_stops_with_the_update_named(model: RobertaModel, monkeypatch) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "nan-loss:steps=3")
    trainer = make_trainer(model)
    trainer.train_step([make_batch(0)])
    trainer.train_step([make_batch(1)])
    with pytest.raises(TrainingDiverged, match="the training loss became nan at update 3"):
        trainer.train_step([make_batch(2)])
