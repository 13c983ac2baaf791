"""Model config, architecture presets, flags, state-dict names and forward contracts."""
from __future__ import annotations

import argparse
import io
import logging

import pytest
import torch

from roberta.errors import UserError
from roberta.models import ModelConfig, RobertaModel, add_model_args, build_model_config
from roberta.models.architectures import ArchSettings, arch_settings
from roberta.models.encoder import dropout
from roberta.registry import ARCHS

ROBERTA_VOCAB = 50265


def _args(arch: str, *flags: str) -> ArchSettings:
    """The architecture settings the command layer makes of `--arch arch` and `flags`."""
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    return arch_settings({**vars(parser.parse_args(list(flags))), "arch": arch})


def _sizes(config: ModelConfig) -> tuple[int, int, int, int]:
    return (config.encoder_layers, config.encoder_embed_dim, config.encoder_ffn_embed_dim,
            config.encoder_attention_heads)


def _num_params(config: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(param.numel() for param in RobertaModel(config).parameters())


@pytest.mark.parametrize("arch, sizes, millions", [
    ("roberta", (12, 768, 3072, 12), 125),
    ("roberta_base", (12, 768, 3072, 12), 125),
    ("roberta_large", (24, 1024, 4096, 16), 355),
    ("roberta_small", (4, 256, 1024, 4), None),
    ("roberta_tiny", (2, 64, 256, 4), None),
])
def test_presets_have_documented_sizes(arch: str, sizes: tuple, millions: int | None) -> None:
    config = build_model_config(_args(arch), ROBERTA_VOCAB)
    assert _sizes(config) == sizes
    assert (config.max_positions, config.dropout, config.attention_dropout) == (512, 0.1, 0.1)
    assert (config.activation_dropout, config.pooler_dropout) == (0.0, 0.0)
    if millions is not None:
        assert abs(_num_params(config) / 1e6 - millions) < 1.5


def test_flags_override_preset() -> None:
    args = _args("roberta_base", "--encoder-layers", "3", "--encoder-embed-dim", "48",
                 "--encoder-ffn-embed-dim", "96", "--encoder-attention-heads", "6",
                 "--max-positions", "64", "--dropout", "0.2", "--attention-dropout", "0.0",
                 "--activation-dropout", "0.05", "--pooler-dropout", "0.3",
                 "--untie-weights-roberta")
    config = build_model_config(args, 100)
    assert _sizes(config) == (3, 48, 96, 6)
    assert (config.max_positions, config.dropout, config.attention_dropout) == (64, 0.2, 0.0)
    assert (config.activation_dropout, config.pooler_dropout) == (0.05, 0.3)
    assert config.untie_weights_roberta and config.vocab_size == 100
    assert not build_model_config(_args("roberta_base"), 100).untie_weights_roberta


def test_every_model_flag_has_help() -> None:
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    flags = [action for action in parser._actions if action.dest != "help"]
    assert len(flags) == 10
    assert all(action.help and action.default is None for action in flags)


def test_model_args_go_on_an_argument_group() -> None:
    parser = argparse.ArgumentParser()
    add_model_args(parser.add_argument_group("model"))
    args = parser.parse_args(["--encoder-layers", "5"])
    assert args.encoder_layers == 5 and args.dropout is None


def test_dropout_statistics_and_gradient() -> None:
    x = torch.full((400, 500), 2.0, requires_grad=True)
    torch.manual_seed(5)
    y = dropout(x, 0.1, training=True)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.1, training=True), y)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.005
    assert torch.allclose(y[kept], torch.tensor(2 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * (65536 / (65536 - 6554)))  # p rounded to 1/65536
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("flags, flag_named", [
    (("--encoder-embed-dim", "100", "--encoder-attention-heads", "3"), "--encoder-embed-dim"),
    (("--encoder-layers", "0"), "--encoder-layers"),
    (("--encoder-ffn-embed-dim", "-1"), "--encoder-ffn-embed-dim"),
    (("--max-positions", "0"), "--max-positions"),
    (("--dropout", "1.0"), "--dropout"),
    (("--attention-dropout", "-0.1"), "--attention-dropout"),
])
def test_bad_sizes_raise_user_error_naming_flag(flags: tuple, flag_named: str) -> None:
    with pytest.raises(UserError, match=flag_named):
        build_model_config(_args("roberta_tiny", *flags), 100)


def test_unknown_arch_lists_choices() -> None:
    with pytest.raises(UserError, match="roberta_base"):
        build_model_config(_args("roberta_huge"), 100)
    assert {"roberta", "roberta_base", "roberta_large", "roberta_tiny"} <= set(ARCHS.names())


def test_config_round_trips_through_a_weights_only_checkpoint() -> None:
    config = build_model_config(_args("roberta_tiny", "--untie-weights-roberta"), 77)
    buffer = io.BytesIO()
    torch.save({"model_config": config.to_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, map_location="cpu", weights_only=True)
    assert ModelConfig.from_dict(loaded["model_config"]) == config
    with pytest.raises(UserError, match="unknown fields"):
        ModelConfig.from_dict({**config.to_dict(), "encoder_normalize_before": True})
    with pytest.raises(UserError, match="vocab_size"):
        ModelConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "vocab_size"})


def _tiny(untie: bool = False) -> RobertaModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=30, encoder_layers=2, encoder_embed_dim=16,
                         encoder_ffn_embed_dim=32, encoder_attention_heads=2, max_positions=12,
                         untie_weights_roberta=untie)
    return RobertaModel(config).eval()


def test_state_dict_uses_fairseq_names() -> None:
    model = _tiny()
    model.register_classification_head("mnli", num_classes=3)
    layer = "encoder.sentence_encoder.layers.1."
    expected = {"encoder.sentence_encoder.embed_tokens.weight",
                "encoder.sentence_encoder.embed_positions.weight",
                "encoder.sentence_encoder.layernorm_embedding.weight",
                "encoder.lm_head.weight", "encoder.lm_head.bias",
                "encoder.lm_head.dense.weight", "encoder.lm_head.layer_norm.bias",
                "classification_heads.mnli.dense.weight", "classification_heads.mnli.out_proj.bias"}
    expected |= {layer + name for name in (
        "self_attn.q_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight",
        "self_attn.out_proj.weight", "self_attn_layer_norm.weight", "fc1.weight", "fc2.bias",
        "final_layer_norm.bias")}
    keys = set(model.state_dict())
    assert expected <= keys
    assert len(keys) == 4 + 2 * 16 + 6 + 4
    positions = model.state_dict()["encoder.sentence_encoder.embed_positions.weight"]
    assert positions.shape == (12 + 2, 16)


def test_lm_weight_tied_unless_untied() -> None:
    tied, untied = _tiny(), _tiny(untie=True)
    assert tied.encoder.lm_head.weight is tied.encoder.sentence_encoder.embed_tokens.weight
    assert untied.encoder.lm_head.weight is not untied.encoder.sentence_encoder.embed_tokens.weight
    # fairseq keeps the default init of the bias-free Linear it takes the weight from: U(+-1/sqrt(dim)).
    dim = untied.config.encoder_embed_dim
    assert untied.encoder.lm_head.weight.std().item() == pytest.approx((3 * dim) ** -0.5, rel=0.1)
    assert untied.encoder.lm_head.weight.abs().max().item() <= dim ** -0.5


def test_bert_init() -> None:
    encoder = _tiny().encoder.sentence_encoder
    assert not encoder.embed_tokens.weight[1].any()
    assert not encoder.embed_positions.weight[1].any()
    assert not encoder.layers[0].fc1.bias.any()
    assert encoder.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert encoder.layers[0].self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_forward_shapes_and_all_hiddens() -> None:
    model = _tiny()
    tokens = torch.randint(4, 30, (3, 7))
    tokens[2, 4:] = 1
    with torch.no_grad():
        logits, extra = model(tokens, src_lengths=torch.tensor([7, 7, 4]))
        features, all_extra = model(tokens, features_only=True, return_all_hiddens=True)
    assert logits.shape == (3, 7, 30) and extra["inner_states"] == []
    assert features.shape == (3, 7, 16)
    states = all_extra["inner_states"]
    assert len(states) == 3 and all(state.shape == (3, 7, 16) for state in states)
    assert torch.equal(states[-1], features)
    assert not states[0][2, 4:].any()
    assert model.max_positions() == 12


def test_too_long_input_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--max-positions 12"):
        _tiny()(torch.full((1, 13), 5))


def test_register_classification_head(caplog: pytest.LogCaptureFixture) -> None:
    model = _tiny()
    model.register_classification_head("task", num_classes=2)
    first = model.classification_heads["task"]
    with caplog.at_level(logging.WARNING):
        model.register_classification_head("task", num_classes=2)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        model.register_classification_head("task", num_classes=5, inner_dim=8)
    assert "re-registering head 'task'" in caplog.text
    head = model.classification_heads["task"]
    assert head is not first and head.out_proj.out_features == 5 and head.dense.out_features == 8
    logits, _ = model(torch.randint(4, 30, (2, 6)), classification_head_name="task")
    assert logits.shape == (2, 5)
    with pytest.raises(UserError, match="registered: task"):
        model(torch.randint(4, 30, (2, 6)), classification_head_name="other")
