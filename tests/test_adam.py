"""fairseq's Adam: the foreach implementation against a per-parameter reference of the formula."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import math
import sys
import types

import pytest
import torch

from roberta.cli.settings import settings_from_flags
from roberta.errors import UserError
from roberta.optim import adam as adam_module
from roberta.optim import add_optimization_args
from roberta.optim.adam import Adam, build_adam, parse_betas
from roberta.registry import OPTIMIZERS


def reference_step(params: list[torch.Tensor], state: dict, *, lr: float, betas: tuple[float, float],
                   eps: float, wd: float) -> None:
    """fairseq's update written out per parameter, in fp32."""
    beta1, beta2 = betas
    for p in params:
        if p.grad is None:
            continue
        s = state.setdefault(p, {"step": 0, "m": torch.zeros_like(p, dtype=torch.float32),
                                 "v": torch.zeros_like(p, dtype=torch.float32)})
        s["step"] += 1
        t = s["step"]
        grad, p32 = p.grad.float(), p.detach().float()
        p32.add_(p32, alpha=-lr * wd)
        s["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
        s["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p32.addcdiv_(s["m"], s["v"].sqrt().add_(eps), value=-step_size)
        with torch.no_grad():
            p.copy_(p32)


def make_params(dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    return [torch.randn(shape, generator=generator).to(dtype).requires_grad_() for shape in shapes]


def set_grads(params: list[torch.Tensor], step: int, skip: int | None = None) -> None:
    generator = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        grad = torch.randn(p.shape, generator=generator) * 10 ** (i - 2)
        p.grad = None if i == skip else grad.to(p.dtype)


def clone_params(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference_over_several_steps(dtype: torch.dtype) -> None:
    ours, ref = make_params(dtype), make_params(dtype)
    hyper = {"lr": 3e-3, "betas": (0.9, 0.98), "eps": 1e-6}
    optimizer = Adam(ours, weight_decay=0.01, **hyper)
    ref_state: dict = {}
    for step in range(6):
        # The third tensor misses a gradient once, so the parameters' step counts diverge.
        skip = 2 if step == 3 else None
        set_grads(ours, step, skip)
        set_grads(ref, step, skip)
        optimizer.step()
        reference_step(ref, ref_state, wd=0.01, **hyper)
    for p, r in zip(ours, ref):
        assert p.dtype == dtype
        assert torch.equal(p, r)  # same operations in the same order: bitwise equal on CPU
    assert optimizer.state[ours[2]]["step"] == 5 and optimizer.state[ours[0]]["step"] == 6
    assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())


def test_weight_decay_is_decoupled_and_reaches_every_parameter() -> None:
    # Zero gradients: the Adam term vanishes, leaving exactly p * (1 - lr*wd) for every tensor.
    params = [torch.ones(4, dtype=torch.float64, requires_grad=True),
              torch.full((2,), 3.0, dtype=torch.float64, requires_grad=True)]
    optimizer = Adam(params, lr=1e-5, weight_decay=0.01)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(params[0], torch.full((4,), 1 - 1e-7, dtype=torch.float64), rtol=1e-15, atol=0)
    torch.testing.assert_close(params[1], torch.full((2,), 3 * (1 - 1e-7), dtype=torch.float64), rtol=1e-15, atol=0)


def test_eps_is_added_before_bias_correction_unlike_torch_adamw() -> None:
    # Gradients near eps make the placement visible: torch's AdamW must disagree with us here.
    ours, ref, torch_params = make_params(), make_params(), make_params()
    optimizer = Adam(ours, lr=1e-2, betas=(0.9, 0.98), eps=1e-3)
    adamw = torch.optim.AdamW(torch_params, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, weight_decay=0.0)
    ref_state: dict = {}
    for params in (ours, ref, torch_params):
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    adamw.step()
    reference_step(ref, ref_state, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, wd=0.0)
    torch.testing.assert_close(ours[0], ref[0])
    assert not torch.allclose(ours[0], torch_params[0], rtol=1e-4, atol=0)


def test_lr_scale_groups_get_scaled_lr_and_update() -> None:
    ours, ref = make_params(), make_params()
    groups = [{"params": ours[:2], "lr_scale": 0.25}, {"params": ours[2:]}]
    optimizer = OPTIMIZERS.get("adam").build(Adam.Settings(lr=(0.01,)), groups)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0025, 0.01]
    assert optimizer.param_groups[0]["lr_scale"] == 0.25
    set_grads(ours, 0)
    set_grads(ref, 0)
    optimizer.step()
    state: dict = {}
    reference_step(ref[:2], state, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, wd=0.0)
    reference_step(ref[2:], state, lr=0.01, betas=(0.9, 0.999), eps=1e-8, wd=0.0)
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_resumes_identically(dtype: torch.dtype) -> None:
    params = make_params(dtype)
    groups = [{"params": params[:2], "lr_scale": 0.5}, {"params": params[2:], "weight_decay": 0.0}]
    optimizer = Adam(groups, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for step in range(3):
        set_grads(params, step)
        optimizer.step()
    saved_params = [p.detach().clone() for p in params]
    saved_state = roundtrip(optimizer.state_dict())

    resumed = clone_params(saved_params)
    resumed_groups = [{"params": resumed[:2], "lr_scale": 0.5}, {"params": resumed[2:], "weight_decay": 0.0}]
    resumed_optimizer = Adam(resumed_groups, lr=1.0)
    resumed_optimizer.load_state_dict(saved_state)
    assert all(s["exp_avg_sq"].dtype == torch.float32 for s in resumed_optimizer.state.values())
    for step in range(3, 6):
        set_grads(params, step)
        set_grads(resumed, step)
        optimizer.step()
        resumed_optimizer.step()
    for p, r in zip(params, resumed):
        assert torch.equal(p, r)
    assert resumed_optimizer.param_groups[0]["lr"] == 5e-3


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_optimization_args(parser)
    Adam.add_args(parser)
    return parser.parse_args(argv)


def build_from_flags(argv: list[str]) -> torch.optim.Optimizer:
    """The optimizer the command layer builds from `argv`: flags, then its settings, then it."""
    return OPTIMIZERS.get("adam").build(settings_from_flags(Adam.Settings, parse(argv)), make_params())


def test_settings_fields_are_flag_dests_with_the_flag_defaults() -> None:
    flags = vars(parse([]))
    for field in dataclasses.fields(Adam.Settings):
        assert field.name in flags, f"field {field.name} is not a flag"
        if field.default is not dataclasses.MISSING:
            assert field.default == flags[field.name], f"default of {field.name}"


def test_flags_reach_the_optimizer() -> None:
    optimizer = build_from_flags(["--lr", "1e-5", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6",
                                  "--wd", "0.01", "--use-old-adam", "--fp16-adam-stats"])
    assert isinstance(optimizer, Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-5, (0.9, 0.98), 1e-6, 0.01)


@pytest.mark.parametrize("text", ["(0.9,)", "0.9, 0.98, 0.999", "abc", "(0.9, 1.5)", "__import__('os')", "(True, 0.9)"])
def test_bad_betas_name_the_flag(text: str) -> None:
    with pytest.raises(UserError, match="--adam-betas"):
        parse_betas(text)


def test_betas_accept_fairseq_spellings() -> None:
    assert parse_betas("(0.9,0.98)") == (0.9, 0.98)
    assert parse_betas("[0.9, 0.999]") == (0.9, 0.999)


def test_settings_check_the_betas() -> None:
    assert Adam.Settings(lr=(1e-5,), adam_betas="[0.9, 0.98]").betas == (0.9, 0.98)
    with pytest.raises(UserError, match="--adam-betas"):
        Adam.Settings(lr=(1e-5,), adam_betas="(0.9, 1.5)")


@pytest.mark.parametrize("argv, flag", [(["--adam-eps", "-1"], "--adam-eps"), (["--wd", "-0.1"], "--weight-decay")])
def test_negative_hyper_parameters_are_user_errors(argv: list[str], flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        build_from_flags(argv)


class FakeApexFusedAdam(torch.optim.Optimizer):
    """apex's FusedAdam semantics on CPU: eps on the bias-corrected sqrt(v_hat), step per group."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, adam_w_mode=True, weight_decay=0.0):
        assert adam_w_mode
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "bias_correction": True})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            (beta1, beta2), t = group["betas"], group["step"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                p.sub_(group["lr"] * (update + group["weight_decay"] * p))


def install_fake_apex(monkeypatch: pytest.MonkeyPatch) -> None:
    apex = types.ModuleType("apex")
    apex.optimizers = types.ModuleType("apex.optimizers")
    apex.optimizers.FusedAdam = FakeApexFusedAdam
    monkeypatch.setitem(sys.modules, "apex", apex)
    monkeypatch.setitem(sys.modules, "apex.optimizers", apex.optimizers)


@pytest.fixture
def fake_apex(monkeypatch: pytest.MonkeyPatch) -> None:
    """apex importable and the parameters treated as CUDA ones."""
    install_fake_apex(monkeypatch)
    monkeypatch.setattr(adam_module, "_all_fp32_on_cuda", lambda groups: True)


def test_fallback_is_chosen_when_apex_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apex", None)  # makes `import apex` raise ImportError
    monkeypatch.setattr(adam_module, "_all_fp32_on_cuda", lambda groups: True)
    assert adam_module._apex_fused_adam() is None
    assert type(build_adam(make_params(), lr=1e-3)) is Adam


def test_fallback_when_apex_lacks_its_cuda_extensions(fake_apex: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("apex.optimizers.FusedAdam requires cuda extensions")
    monkeypatch.setattr(FakeApexFusedAdam, "__init__", broken)
    assert type(build_adam(make_params(), lr=1e-3)) is Adam


def test_cpu_parameters_never_use_apex(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_apex(monkeypatch)
    assert adam_module._apex_fused_adam() is FakeApexFusedAdam
    assert type(build_adam(make_params(), lr=1e-3)) is Adam


def test_apex_path_computes_fairseqs_update(fake_apex: None) -> None:
    ours, ref = make_params(), make_params()
    optimizer = build_adam(ours, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, weight_decay=0.05)
    assert isinstance(optimizer, FakeApexFusedAdam)
    ref_state: dict = {}
    for step in range(4):
        set_grads(ours, step)
        set_grads(ref, step)
        optimizer.step()
        reference_step(ref, ref_state, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, wd=0.05)
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)


def test_checkpoints_move_between_apex_and_foreach_adam(fake_apex: None) -> None:
    hyper = {"lr": 1e-2, "betas": (0.9, 0.98), "eps": 1e-3, "weight_decay": 0.05}
    fused_params, ref = make_params(), make_params()
    fused = build_adam(fused_params, **hyper)
    ref_state: dict = {}
    for step in range(2):
        set_grads(fused_params, step)
        set_grads(ref, step)
        fused.step()
        reference_step(ref, ref_state, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, wd=0.05)
    plain_params = clone_params(fused_params)
    plain = Adam(plain_params, lr=1e-2)
    plain.load_state_dict(roundtrip(fused.state_dict()))
    assert plain.param_groups[0]["eps"] == 1e-3
    for step in range(2, 4):
        set_grads(plain_params, step)
        set_grads(ref, step)
        plain.step()
        reference_step(ref, ref_state, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, wd=0.05)
    back_params = clone_params(plain_params)
    back = build_adam(back_params, **hyper)
    back.load_state_dict(roundtrip(plain.state_dict()))
    assert back.param_groups[0]["step"] == 4
    set_grads(back_params, 4)
    set_grads(ref, 4)
    back.step()
    reference_step(ref, ref_state, lr=1e-2, betas=(0.9, 0.98), eps=1e-3, wd=0.05)
    for p, r in zip(back_params, ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)


def test_closure_loss_is_returned() -> None:
    params = make_params()
    optimizer = Adam(params, lr=1e-3)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    before = copy.deepcopy([p.detach() for p in params])
    loss = optimizer.step(closure)
    assert loss is not None and loss.item() > 0
    assert not torch.equal(before[0], params[0])
