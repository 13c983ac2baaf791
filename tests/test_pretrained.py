"""Reading and writing fairseq `model.pt` files (both key generations) and Hugging Face folders."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from roberta.cli import convert, train, validate
from roberta.cli.common import run_cli
from roberta.data.dictionary import Dictionary
from roberta.errors import UserError
from roberta.models import ModelConfig, RobertaModel
from roberta.models.hf_export import save_fairseq_checkpoint, save_hf_folder
from roberta.models.pretrained import check_tying, load_pretrained
from roberta.models.weights import load_model_weights

transformers = pytest.importorskip("transformers")

VOCAB, PAD, MAX_POSITIONS, LAYERS, DIM, HEADS, FFN = 100, 1, 40, 2, 32, 4, 64
TOLERANCE = 1e-5
HEAD = "mnli"


def make_model(untie: bool = False, *, vocab: int = VOCAB, dim: int = DIM, ffn: int = FFN,
               max_positions: int = MAX_POSITIONS, seed: int = 0) -> RobertaModel:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, encoder_layers=LAYERS, encoder_embed_dim=dim,
                         encoder_ffn_embed_dim=ffn, encoder_attention_heads=HEADS,
                         max_positions=max_positions, untie_weights_roberta=untie)
    model = RobertaModel(config)
    model.register_classification_head(HEAD, num_classes=3)
    # Perturb every parameter (LayerNorms and biases included) so a mis-mapped tensor cannot hide.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def ours() -> RobertaModel:
    return make_model()


def tokens(padded: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(4, VOCAB, (4, 17), generator=generator)
    batch[:, 0], batch[:, -1] = 0, 2
    if padded:
        for row, length in enumerate((17, 12, 5, 9)):
            batch[row, length - 1] = 2
            batch[row, length:] = PAD
    return batch


def build(pretrained, path="file") -> RobertaModel:
    model = RobertaModel(pretrained.config)
    for name, (inner_dim, num_classes) in pretrained.heads.items():
        model.register_classification_head(name, num_classes, inner_dim)
    load_model_weights(model, pretrained.state_dict, path=path)
    return model.eval()


def max_diff(a: torch.Tensor, b: torch.Tensor, real: torch.Tensor | None = None) -> float:
    return ((a - b) if real is None else (a[real] - b[real])).abs().max().item()


def hf_config(num_labels: int = 2):
    return transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS + PAD + 1, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=PAD, bos_token_id=0, eos_token_id=2, hidden_act="gelu",
        num_labels=num_labels)


def perturbed(hf_model):
    torch.manual_seed(5)
    with torch.no_grad():
        for param in hf_model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return hf_model.eval()


# ------------------------------------------------------------------------------ round trips


def write(model: RobertaModel, target: str, path: Path) -> Path:
    if target == "huggingface":
        return save_hf_folder(path / "hf", model.state_dict(), model.config, classification_head=HEAD)
    generation = "2019" if target == "fairseq-2019" else "current"
    return save_fairseq_checkpoint(path / "model.pt", model.state_dict(), model.config, generation)


@pytest.mark.parametrize("untie", [False, True], ids=["tied", "untied"])
@pytest.mark.parametrize("target", ["fairseq", "fairseq-2019", "huggingface"])
def test_round_trip_gives_identical_tensors(tmp_path: Path, target: str, untie: bool) -> None:
    model = make_model(untie)
    path = write(model, target, tmp_path)
    loaded = load_pretrained(path, head_name=HEAD)
    state = model.state_dict()
    assert loaded.source == target
    assert loaded.config == model.config
    assert loaded.heads == {HEAD: (DIM, 3)}
    assert set(loaded.state_dict) == set(state)
    for key, tensor in state.items():
        assert torch.equal(loaded.state_dict[key], tensor), key
    assert not loaded.missing and not loaded.newly_initialized


def test_fairseq_files_have_each_generations_names(tmp_path: Path, ours: RobertaModel) -> None:
    old = torch.load(write(ours, "fairseq-2019", tmp_path), weights_only=False)
    assert isinstance(old["args"], argparse.Namespace) and old["args"].encoder_layers == LAYERS
    fused = old["model"]["decoder.sentence_encoder.layers.1.self_attn.in_proj_weight"]
    assert fused.shape == (3 * DIM, DIM)
    assert torch.equal(fused[DIM:2 * DIM], ours.encoder.sentence_encoder.layers[1].self_attn.k_proj.weight)
    assert "decoder.sentence_encoder.emb_layer_norm.weight" in old["model"]
    assert not any(key.startswith("encoder.") for key in old["model"])
    new = torch.load(write(ours, "fairseq", tmp_path), weights_only=False)
    assert new["args"] is None and new["cfg"]["model"].encoder_attention_heads == HEADS
    assert torch.equal(new["model"]["encoder.sentence_encoder.version"], torch.tensor([3.0]))
    assert "encoder.sentence_encoder.layernorm_embedding.weight" in new["model"]


# -------------------------------------------------------------- fairseq files built by hand


def fairseq_2019_state(model: RobertaModel) -> dict:
    """The layout of the released roberta.base/large `model.pt`, built independently of our writer."""
    renamed = {}
    for key, value in model.state_dict().items():
        key = key.replace("encoder.", "decoder.", 1).replace("layernorm_embedding", "emb_layer_norm")
        if "self_attn.k_proj" in key or "self_attn.v_proj" in key:
            continue
        if "self_attn.q_proj" in key:
            parts = [model.state_dict()[key.replace("decoder.", "encoder.", 1).replace("q_proj", p)]
                     for p in ("q_proj", "k_proj", "v_proj")]
            key, value = key.replace("q_proj.", "in_proj_"), torch.cat(parts)
        renamed[key] = value
    renamed["decoder.sentence_encoder.version"] = torch.tensor([2.0])
    config = model.config
    args = argparse.Namespace(arch="roberta_base", task="masked_lm", optimizer="adam", encoder_layers=config.encoder_layers,
                              encoder_embed_dim=config.encoder_embed_dim, encoder_attention_heads=HEADS,
                              dropout=np.float64(0.1), attention_dropout=0.1, pooler_dropout=0.0,
                              activation_fn="gelu", encoder_normalize_before=False, lr=[0.0006])
    return {"args": args, "model": renamed, "optimizer_history": [{"criterion_name": "MaskedLmLoss",
            "optimizer_name": "MemoryEfficientFP16Optimizer", "num_updates": 500000}],
            "extra_state": {"epoch": 40}, "last_optimizer_state": None}


def fairseq_current_state(model: RobertaModel) -> dict:
    weights = {**model.state_dict(), "encoder.sentence_encoder.version": torch.tensor([3.0]),
               "encoder.sentence_encoder.embed_positions._float_tensor": torch.tensor([])}
    return {"args": None, "model": weights,
            "cfg": {"common": {"fp16": True}, "model": {"_name": "roberta_large", "encoder_attention_heads": HEADS,
                                                        "dropout": 0.1}, "task": {"_name": "masked_lm"}},
            "optimizer_history": [{"optimizer_name": "FairseqAdam", "num_updates": 7}], "extra_state": {}}


@pytest.mark.parametrize("generation", ["2019", "current"])
def test_synthetic_fairseq_model_pt_predicts_like_the_original(tmp_path: Path, ours: RobertaModel,
                                                               generation: str) -> None:
    state = fairseq_2019_state(ours) if generation == "2019" else fairseq_current_state(ours)
    folder = tmp_path / "roberta.tiny"
    folder.mkdir()
    torch.save(state, folder / "model.pt")
    loaded = load_pretrained(folder)  # a released archive's folder holds model.pt
    assert loaded.source == ("fairseq-2019" if generation == "2019" else "fairseq")
    assert loaded.heads == {HEAD: (DIM, 3)}
    assert loaded.config.encoder_attention_heads == HEADS and loaded.config.max_positions == MAX_POSITIONS
    history = loaded.training_state["optimizer_history"]  # in our class names, so a resume matches its run
    assert [entry["num_updates"] for entry in history] == [entry["num_updates"] for entry in state["optimizer_history"]]
    assert history[-1]["optimizer_name"] == "Adam"
    model = build(loaded, folder / "model.pt")
    batch = tokens()
    with torch.no_grad():
        assert max_diff(model(batch, classification_head_name=HEAD)[0],
                        ours(batch, classification_head_name=HEAD)[0]) == 0.0
        assert max_diff(model(batch)[0], ours(batch)[0]) == 0.0


def test_numpy_1_scalars_in_legacy_args_load_other_globals_do_not(tmp_path: Path, ours: RobertaModel) -> None:
    # Released files were written by torch 1.x and numpy 1.x, in the pre-zip format.
    path = tmp_path / "model.pt"
    torch.save(fairseq_2019_state(ours), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray\n" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert load_pretrained(path).config.dropout == pytest.approx(0.1)

    module = types.ModuleType("fairseq_fake_configs")
    module.Config = type("Config", (), {"__module__": "fairseq_fake_configs"})
    sys.modules[module.__name__] = module
    try:
        torch.save({**fairseq_2019_state(ours), "cfg": module.Config()}, path)
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(UserError, match=r"global fairseq_fake_configs\.Config.*--unsafe-load"):
        load_pretrained(path)


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp") / f"roberta-pretrained-exploit-{os.getpid()}"


def test_malicious_pickle_disguised_as_model_pt_never_runs(tmp_path: Path, ours: RobertaModel,
                                                           demo_data_bin: Path) -> None:
    folder = tmp_path / "roberta.base"
    folder.mkdir()
    torch.save({**fairseq_2019_state(ours), "extra_state": {"x": Exploit()}}, folder / "model.pt")
    hf = tmp_path / "hf"
    save_hf_folder(hf, ours.state_dict(), ours.config)
    (hf / "model.safetensors").unlink()
    torch.save({"roberta.embeddings.word_embeddings.weight": Exploit()}, hf / "pytorch_model.bin")
    MARKER.unlink(missing_ok=True)
    for path in (folder, folder / "model.pt", hf):
        with pytest.raises(UserError, match=r"refusing to unpickle .*(model\.pt|pytorch_model\.bin): it needs "
                                            r"arbitrary code \(global (posix|os)\.system\).*--unsafe-load"):
            load_pretrained(path)
    with pytest.raises(UserError, match="refusing to unpickle"):
        train.main(train_args(demo_data_bin, tmp_path / "run", "--restore-file", str(folder / "model.pt")))
    assert not MARKER.exists()


# ------------------------------------------------------------------------------ Hugging Face


@pytest.mark.parametrize("file_format", ["safetensors", "pytorch_model.bin"])
def test_transformers_masked_lm_folder_matches_transformers(tmp_path: Path, file_format: str) -> None:
    hf = perturbed(transformers.RobertaForMaskedLM(hf_config()))
    assert hf.roberta.embeddings.token_type_embeddings.weight.abs().max() > 0  # exercises the folding
    if file_format == "safetensors":
        hf.save_pretrained(tmp_path)
    else:  # what transformers 4 wrote with safe_serialization=False: a pickled state dict
        hf.config.to_json_file(tmp_path / "config.json")
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = load_pretrained(tmp_path)
    assert loaded.source == "huggingface" and loaded.heads == {} and not loaded.newly_initialized
    model = build(loaded, tmp_path)
    batch = tokens()
    real = batch.ne(PAD)
    with torch.no_grad():
        logits, extra = model(batch, return_all_hiddens=True)
        ref = hf(input_ids=batch, attention_mask=real.long(), output_hidden_states=True)
    for mine, theirs in zip(extra["inner_states"], ref.hidden_states, strict=True):
        assert max_diff(mine, theirs, real) < TOLERANCE
    assert max_diff(logits, ref.logits, real) < TOLERANCE


def test_transformers_sequence_classification_folder(tmp_path: Path, caplog) -> None:
    hf = perturbed(transformers.RobertaForSequenceClassification(hf_config(num_labels=3)))
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO):
        loaded = load_pretrained(tmp_path, head_name=HEAD)
    assert loaded.heads == {HEAD: (DIM, 3)}
    assert sorted(loaded.newly_initialized) == sorted(f"encoder.lm_head.{name}" for name in (
        "dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"))
    assert "has no masked-LM head; newly initialized" in caplog.text
    model = build(loaded, tmp_path)
    batch = tokens()
    with torch.no_grad():
        ours_logits, _ = model(batch, classification_head_name=HEAD)
        ref = hf(input_ids=batch, attention_mask=batch.ne(PAD).long()).logits
    assert max_diff(ours_logits, ref) < TOLERANCE
    assert load_pretrained(tmp_path).heads == {"sentence_classification_head": (DIM, 3)}


def test_transformers_bare_model_folder(tmp_path: Path, caplog) -> None:
    hf = perturbed(transformers.RobertaModel(hf_config()))
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO):
        loaded = load_pretrained(tmp_path)
    assert "dropped the pooler" in caplog.text and "newly initialized" in caplog.text
    assert "encoder.lm_head.dense.weight" in loaded.newly_initialized
    model = build(loaded, tmp_path)
    batch = tokens()
    real = batch.ne(PAD)
    with torch.no_grad():
        features, _ = model(batch, features_only=True)
        ref = hf(input_ids=batch, attention_mask=real.long()).last_hidden_state
    assert max_diff(features, ref, real) < TOLERANCE


@pytest.mark.parametrize("untie", [False, True], ids=["tied", "untied"])
def test_our_export_loads_in_transformers(tmp_path: Path, untie: bool) -> None:
    model = make_model(untie)
    save_hf_folder(tmp_path / "mlm", model.state_dict(), model.config)
    save_hf_folder(tmp_path / "cls", model.state_dict(), model.config, classification_head=HEAD)
    mlm, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    cls = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
    assert type(cls).__name__ == "RobertaForSequenceClassification"
    batch = tokens()
    real = batch.ne(PAD)
    with torch.no_grad():
        assert max_diff(model(batch)[0], mlm.eval()(input_ids=batch, attention_mask=real.long()).logits,
                        real) < TOLERANCE
        assert max_diff(model(batch, classification_head_name=HEAD)[0],
                        cls(input_ids=batch, attention_mask=real.long()).logits) < TOLERANCE


def test_unsupported_hf_folders_are_refused_naming_the_file(tmp_path: Path, ours: RobertaModel) -> None:
    with pytest.raises(UserError, match="neither config.json"):
        load_pretrained(tmp_path)
    save_hf_folder(tmp_path, ours.state_dict(), ours.config)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"type_vocab_size": 1', '"type_vocab_size": 2'))
    with pytest.raises(UserError, match=r"config\.json: type_vocab_size is 2; expected the integer 1"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(config.replace('"hidden_act": "gelu"', '"hidden_act": "relu"'))
    with pytest.raises(UserError, match="hidden_act is \"relu\"; expected 'gelu'"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(config)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"model\.safetensors: not a readable safetensors file"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has config.json but no weights"):
        load_pretrained(tmp_path)


def test_sharded_hf_folder(tmp_path: Path, ours: RobertaModel) -> None:
    from safetensors.torch import load_file, save_file

    save_hf_folder(tmp_path, ours.state_dict(), ours.config)
    weights = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({key: weights[key] for key in keys}, tmp_path / shard, metadata={"format": "pt"})
    index = {"weight_map": {key: shard for shard, keys in shards.items() for key in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = load_pretrained(tmp_path)
    assert set(loaded.state_dict) == {key for key in ours.state_dict() if not key.startswith("classification")}
    assert all(torch.equal(loaded.state_dict[key], ours.state_dict()[key]) for key in loaded.state_dict)


def test_an_untied_head_needs_untie_weights_roberta(tmp_path: Path) -> None:
    untied = make_model(untie=True)
    save_hf_folder(tmp_path, untied.state_dict(), untied.config)
    loaded = load_pretrained(tmp_path)
    tied_config = ModelConfig(**{**untied.config.to_dict(), "untie_weights_roberta": False})
    with pytest.raises(UserError, match="--untie-weights-roberta"):
        check_tying(loaded, tied_config, tmp_path)
    check_tying(loaded, untied.config, tmp_path)


# ---------------------------------------------------------------------------------- the CLIs


def train_args(data: Path, save_dir: Path, *extra: str) -> list[str]:
    return [str(data), "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_tiny",
            "--sample-break-mode", "complete", "--tokens-per-sample", "128", "--max-tokens", "1024",
            "--optimizer", "adam", "--lr", "1e-9", "--lr-scheduler", "fixed", "--max-update", "1",
            "--save-dir", str(save_dir), "--num-workers", "0", "--seed", "3", "--log-format", "json",
            "--no-epoch-checkpoints", "--disable-validation", "--cpu", *extra]


def demo_vocab(data: Path) -> int:
    dictionary = Dictionary.load(data / "dict.txt")
    dictionary.add_symbol("<mask>")
    return len(dictionary)


def test_train_starts_from_a_fairseq_model_pt(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    original = make_model(vocab=demo_vocab(demo_data_bin), dim=64, ffn=256, max_positions=512)
    path = tmp_path / "model.pt"
    torch.save(fairseq_2019_state(original), path)
    train.main(train_args(demo_data_bin, tmp_path / "run", "--restore-file", str(path), "--reset-optimizer"))
    log = capfd.readouterr().err
    assert f"from {path} (fairseq model (2019 key names), 2 layers x 64" in log
    body = [key for key in original.state_dict() if not key.startswith("classification_heads.")]
    assert f"loaded {len(body)} tensors from {path}" in log
    assert "dropped classification heads" in log and HEAD in log  # masked_lm has no use for it
    saved = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert saved["optimizer_history"][-1]["num_updates"] == 1  # not fairseq's 500000
    for key, tensor in saved["model"].items():
        assert max_diff(tensor, original.state_dict()[key]) < 1e-6, key  # one step of lr 1e-9


def test_convert_validate_and_resume_from_a_hf_folder(demo_data_bin: Path, tmp_path: Path, capfd) -> None:
    train.main(train_args(demo_data_bin, tmp_path / "run", "--lr", "1e-3"))
    trained = tmp_path / "run" / "checkpoint_last.pt"
    hf, fairseq, back = tmp_path / "hf", tmp_path / "fs" / "model.pt", tmp_path / "back.pt"
    run_cli(convert.main, "roberta-convert", [str(trained), str(hf), "--to", "huggingface"])
    run_cli(convert.main, "roberta-convert", [str(hf), str(fairseq), "--to", "fairseq-2019"])
    run_cli(convert.main, "roberta-convert", [str(fairseq.parent), str(back), "--to", "ours"])
    original = torch.load(trained, weights_only=True)["model"]
    converted = load_pretrained(back)
    assert converted.source == "ours" and set(converted.state_dict) == set(original)
    assert all(torch.equal(converted.state_dict[key], original[key]) for key in original)
    capfd.readouterr()

    losses = []
    for path in (trained, hf, fairseq):  # a foreign file carries no task flags: give the training run's
        validate.main([str(demo_data_bin), "--path", str(path), "--log-format", "json", "--cpu", "--seed", "3",
                       "--tokens-per-sample", "128", "--sample-break-mode", "complete", "--max-tokens", "1024"])
        valid = [line for line in capfd.readouterr().err.splitlines() if "| valid | " in line][-1]
        losses.append(json.loads(valid.split("| valid | ", 1)[1])["valid_loss"])
    assert losses[0] == losses[1] == losses[2], losses

    train.main(train_args(demo_data_bin, tmp_path / "resumed", "--restore-file", str(hf)))
    log = capfd.readouterr().err
    assert f"{hf} is a huggingface model: starting from its weights" in log
    assert "fresh optimizer" in log and f"loaded {len(original)} tensors from {hf}" in log


def test_convert_errors_are_one_line(tmp_path: Path, ours: RobertaModel, capsys) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    save_fairseq_checkpoint(tmp_path / "model.pt", ours.state_dict(), ours.config)
    for argv, fragment in (([str(tmp_path / "nope.pt"), str(tmp_path / "out")], "nope.pt: no such file"),
                           ([str(text), str(tmp_path / "out")], "notes.pt: not a PyTorch checkpoint"),
                           ([str(tmp_path / "model.pt"), str(text / "out")], f"could not write {text / 'out'}"),
                           ([str(tmp_path / "model.pt"), str(tmp_path / "out"), "--classification-head-name",
                             "qnli"], "no classification head 'qnli' to export (the model has: mnli)")):
        with pytest.raises(SystemExit) as caught:
            run_cli(convert.main, "roberta-convert", [*argv, "--to", "huggingface"])
        assert caught.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("roberta-convert: error: ") and fragment in err[-1], err
    assert not (tmp_path / "out").exists()
