"""Numerical parity of our RoBERTa with transformers' RoBERTa given the same weights."""
from __future__ import annotations

import pytest
import torch

from roberta.models import ModelConfig, RobertaModel
from roberta.models.encoder import _attention_with_dropout, make_positions
from roberta.models.hf_mapping import from_hf_state_dict, to_hf_state_dict

transformers = pytest.importorskip("transformers")

VOCAB, PAD, MAX_POSITIONS, LAYERS, DIM, HEADS, FFN = 100, 1, 40, 3, 48, 4, 96
TOLERANCE = 1e-5
HEAD = "cls"


def _config() -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB, encoder_layers=LAYERS, encoder_embed_dim=DIM,
                       encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS,
                       max_positions=MAX_POSITIONS, padding_idx=PAD)


def _hf_config(attn: str, num_labels: int = 2):
    return transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS + PAD + 1,
        type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=PAD, bos_token_id=0,
        eos_token_id=2, hidden_act="gelu", num_labels=num_labels, attn_implementation=attn)


@pytest.fixture(scope="module")
def ours() -> RobertaModel:
    torch.manual_seed(0)
    model = RobertaModel(_config())
    model.register_classification_head(HEAD, num_classes=3)
    # Perturb every parameter (LayerNorms included) so a mis-mapped tensor cannot hide.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def _tokens(padded: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, VOCAB, (4, 17), generator=generator)
    tokens[:, 0], tokens[:, -1] = 0, 2
    if padded:
        for row, length in enumerate((17, 12, 5, 9)):
            tokens[row, length - 1] = 2
            tokens[row, length:] = PAD
    return tokens


def _load_hf(model_cls, attn: str, state: dict[str, torch.Tensor], num_labels: int = 2):
    hf = model_cls(_hf_config(attn, num_labels)).eval()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not missing, missing
    return hf, unexpected


def _max_diff(a: torch.Tensor, b: torch.Tensor, real: torch.Tensor) -> float:
    return (a[real] - b[real]).abs().max().item()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "right-padded"])
def test_hidden_states_and_mlm_logits_match(ours: RobertaModel, attn: str, padded: bool) -> None:
    hf, unexpected = _load_hf(transformers.RobertaForMaskedLM, attn,
                              to_hf_state_dict(ours.state_dict()))
    assert not unexpected, unexpected
    tokens = _tokens(padded)
    real = tokens.ne(PAD)
    assert padded == (not bool(real.all()))
    with torch.no_grad():
        logits, extra = ours(tokens, return_all_hiddens=True)
        ref = hf(input_ids=tokens, attention_mask=real.long(), output_hidden_states=True)
    assert len(extra["inner_states"]) == len(ref.hidden_states) == LAYERS + 1
    for ours_state, hf_state in zip(extra["inner_states"], ref.hidden_states):
        assert ours_state.shape == hf_state.shape
        assert _max_diff(ours_state, hf_state, real) < TOLERANCE
    assert logits.shape == ref.logits.shape == (*tokens.shape, VOCAB)
    assert _max_diff(logits, ref.logits, real) < TOLERANCE


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_classification_head_matches(ours: RobertaModel, attn: str) -> None:
    hf, unexpected = _load_hf(transformers.RobertaForSequenceClassification, attn,
                              to_hf_state_dict(ours.state_dict(), classification_head=HEAD),
                              num_labels=3)
    assert all(key.startswith("lm_head.") for key in unexpected), unexpected
    tokens = _tokens(padded=True)
    with torch.no_grad():
        logits, _ = ours(tokens, classification_head_name=HEAD)
        all_hiddens, _ = ours(tokens, classification_head_name=HEAD, return_all_hiddens=True)
        ref = hf(input_ids=tokens, attention_mask=tokens.ne(PAD).long()).logits
    assert logits.shape == (tokens.size(0), 3)
    assert (logits - ref).abs().max().item() < TOLERANCE
    assert (all_hiddens - ref).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("padded", [False, True], ids=["dense", "right-padded"])
def test_masked_tokens_equal_full_logit_rows(ours: RobertaModel, padded: bool) -> None:
    tokens = _tokens(padded)
    masked = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    masked &= tokens.ne(PAD)
    with torch.no_grad():
        full, _ = ours(tokens)
        partial, extra = ours(tokens, masked_tokens=masked)
    assert partial.shape == (int(masked.sum()), VOCAB)
    assert (partial - full[masked]).abs().max().item() < TOLERANCE
    assert extra["inner_states"] == []


def test_positions_follow_hf_rule() -> None:
    tokens = _tokens(padded=True)
    expected = transformers.models.roberta.modeling_roberta.RobertaEmbeddings \
        .create_position_ids_from_input_ids(tokens, PAD)
    assert torch.equal(make_positions(tokens, PAD), expected)
    assert make_positions(tokens, PAD)[2].tolist()[:7] == [2, 3, 4, 5, 6, 1, 1]


def test_hf_round_trip_and_token_type_folding(ours: RobertaModel) -> None:
    state = ours.state_dict()
    hf_state = to_hf_state_dict(state, classification_head=HEAD)
    back = from_hf_state_dict(hf_state, classification_head=HEAD)
    assert set(back) == set(state)
    assert all(torch.equal(back[key], state[key]) for key in state)

    # An HF-trained model has a non-zero token-type row; folding it keeps outputs equal.
    hf, _ = _load_hf(transformers.RobertaForMaskedLM, "sdpa", hf_state)
    with torch.no_grad():
        hf.roberta.embeddings.token_type_embeddings.weight.normal_()
    converted = RobertaModel(_config()).eval()
    converted.load_state_dict(from_hf_state_dict(hf.state_dict()), strict=True)
    tokens = _tokens(padded=True)
    real = tokens.ne(PAD)
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=real.long()).logits
        actual, _ = converted(tokens)
    assert _max_diff(actual, expected, real) < TOLERANCE


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(3)
    model = RobertaModel(_config()).train()
    tokens = _tokens(padded=True)
    masked = tokens.ne(PAD) & (torch.rand(tokens.shape) < 0.3)
    masked[0, 1] = True
    logits, _ = model(tokens, masked_tokens=masked)
    torch.nn.functional.cross_entropy(logits, tokens[masked]).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and bool(param.grad.abs().sum() > 0), name
    # The pad row of the (tied) token table does get a gradient, through the pad logit.
    assert not model.encoder.sentence_encoder.embed_positions.weight.grad[PAD].any()


def test_dropout_only_in_training(ours: RobertaModel) -> None:
    tokens = _tokens(padded=True)
    with torch.no_grad():
        first, _ = ours(tokens)
        second, _ = ours(tokens)
        ours.train()
        try:
            noisy, _ = ours(tokens)
        finally:
            ours.eval()
    assert torch.equal(first, second)
    assert not torch.allclose(first, noisy)


def test_training_attention_path_matches_sdpa() -> None:
    """CPU training computes attention explicitly; with a negligible drop rate it is SDPA."""
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, HEADS, 9, DIM // HEADS, generator=generator) for _ in range(3))
    attend = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    attend[1, ..., 6:] = False
    for mask in (None, attend):
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        actual = _attention_with_dropout(q, k, v, mask, p=1e-9)
        assert (actual - expected).abs().max().item() < TOLERANCE


def test_train_mode_without_dropout_equals_eval(ours: RobertaModel) -> None:
    config = _config()
    config.dropout = config.attention_dropout = 1e-9  # rounds to "drop nothing"
    model = RobertaModel(config)
    model.load_state_dict(ours.state_dict(), strict=False)
    tokens = _tokens(padded=True)
    real = tokens.ne(PAD)
    with torch.no_grad():
        train_logits, _ = model.train()(tokens)
        eval_logits, _ = model.eval()(tokens)
    assert _max_diff(train_logits, eval_logits, real) < TOLERANCE
