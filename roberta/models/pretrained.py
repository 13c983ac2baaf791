"""Reading RoBERTa weights in any of the layouts they are distributed in, as our state dict.

`load_pretrained` accepts a roberta-train checkpoint, a fairseq `model.pt` with the 2019 key
names (`decoder.sentence_encoder.*`, `emb_layer_norm`, fused `in_proj_*`; config in an
`argparse.Namespace`) or the current ones (`encoder.sentence_encoder.*`, separate q/k/v, a
`version` buffer; config in a `cfg` dict), and a Hugging Face folder (`config.json` plus
`model.safetensors` or `pytorch_model.bin`, optionally sharded). Pickled files are read only
through `roberta.checkpoint.load_checkpoint`'s allow-list, here widened by the numpy scalar
globals that legacy fairseq `args` can hold; anything else needs `--unsafe-load`.

The sizes are read from the weights themselves (the `args` of a pruned or resized model may
say otherwise); only the number of attention heads and the dropouts come from the stored config.
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from roberta import checkpoint, fairseq_resume
from roberta.errors import UserError
from roberta.models.config import ModelConfig
from roberta.models.heads import LMHead
from roberta.models.hf_mapping import from_hf_state_dict, to_hf_state_dict
from roberta.models.roberta import RobertaModel, init_bert_params
from roberta.registry import ARCHS

logger = logging.getLogger(__name__)

HF_HEAD_NAME = "sentence_classification_head"
HF_CONFIG = "config.json"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
HF_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")
FAIRSEQ_MODEL_FILE = "model.pt"
ENCODER = "encoder.sentence_encoder."
EMBED_TOKENS = ENCODER + "embed_tokens.weight"
EMBED_POSITIONS = ENCODER + "embed_positions.weight"
LM_HEAD = "encoder.lm_head."
FAIRSEQ_PADDING_IDX = 1  # fairseq's Dictionary always pads with index 1

_IN_PROJ = re.compile(r"^(.*\.self_attn\.)in_proj_(weight|bias)$")
# fairseq 0.12.2 under torch >= 1.12 also saves each encoder layer's weights fused for its
# BetterTransformer fast path (`layers.N.in_proj_weight`, `fc1_weight`, ...), next to the real ones.
_FUSED_COPY = re.compile(r"^(?:encoder|decoder)\.sentence_encoder\.layers\.\d+\.(?:in_proj|out_proj|fc1|fc2)_(?:weight|bias)$")
_HEAD_OUT = re.compile(r"^classification_heads\.([^.]+)\.out_proj\.weight$")
_LAYER = re.compile(r"^encoder\.sentence_encoder\.layers\.(\d+)\.")
# Buffers fairseq keeps in its state dicts that are not weights (format versions, a device
# marker of sinusoidal positions) and HF's old persistent position-id buffer.
_BUFFER_SUFFIXES = (".version", "._float_tensor", "embeddings.position_ids")
_DESCRIPTIONS = {"ours": "roberta-train checkpoint", "fairseq-2019": "fairseq model (2019 key names)",
                 "fairseq": "fairseq model", "huggingface": "Hugging Face transformers model"}


def _numpy_scalar_globals() -> list:
    """What unpickling a numpy scalar calls: `scalar(dtype, bytes)`, the dtype and its class.

    None of them runs code from the file; legacy fairseq `args` sometimes hold such scalars.
    Files written with numpy 1.x name `scalar` under `numpy.core`, numpy 2 under `numpy._core`.
    """
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefd"}
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *sorted(dtype_classes, key=str)]


FAIRSEQ_SAFE_GLOBALS = _numpy_scalar_globals()


@dataclass
class Pretrained:
    """Weights under our parameter names, and what the file says about the model.

    `source` is "ours", "fairseq-2019" (the released files' key names), "fairseq" (current
    names) or "huggingface". `config` is None only for a file that does not describe its model
    (the trainer then relies on `--arch`). `heads` maps each classification head to (inner_dim, num_classes). `training_state` is the
    loaded checkpoint (with `model` replaced by `state_dict`) for our and fairseq files, None for
    Hugging Face folders. `missing` lists weights the file lacks that the described model needs;
    `newly_initialized` those filled with a fresh initialisation instead (the masked-LM head of a
    Hugging Face `RobertaModel` or `RobertaForSequenceClassification`).
    """
    state_dict: dict[str, Tensor]
    config: ModelConfig | None
    heads: dict[str, tuple[int, int]]
    source: str
    training_state: dict | None = None
    missing: list[str] = field(default_factory=list)
    newly_initialized: list[str] = field(default_factory=list)

    def training_flags(self) -> dict:
        """Flag defaults for a run on this model: the stored training flags, with the model's
        sizes as read from the file (so `--arch` need not be guessed for a foreign file)."""
        flags = checkpoint.training_flags(self.training_state or {})
        if self.config is None:
            return flags
        flags.update(model_flags(self.config))
        if self.source != "ours" or not flags.get("arch"):
            flags["arch"] = "roberta_base"  # every size is overridden by the flags above
        return flags


def model_flags(config: ModelConfig) -> dict:
    """`config` as the values of the `--encoder-*`, `--max-positions` and dropout flags."""
    names = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
             "max_positions", "dropout", "attention_dropout", "activation_dropout", "pooler_dropout",
             "untie_weights_roberta")
    return {name: getattr(config, name) for name in names}


def load_pretrained(path: str | Path, *, unsafe: bool = False, head_name: str | None = None) -> Pretrained:
    """Read weights from `path` (file or folder; format detected) as our state dict.

    `head_name` names the head a Hugging Face `classifier` becomes (default
    `sentence_classification_head`). Every failure is a UserError naming the file.
    """
    path = Path(path)
    if path.is_file() and path.name in (HF_CONFIG, *HF_WEIGHT_FILES) and (path.parent / HF_CONFIG).is_file():
        path = path.parent
    if path.is_dir():
        if (path / HF_CONFIG).is_file():
            return _load_hf_folder(path, head_name or HF_HEAD_NAME, unsafe)
        if not (path / FAIRSEQ_MODEL_FILE).is_file():
            raise UserError(f"{path}: a folder with neither {HF_CONFIG} (Hugging Face) nor "
                            f"{FAIRSEQ_MODEL_FILE} (fairseq); pass a checkpoint file or a model folder")
        path = path / FAIRSEQ_MODEL_FILE
    with torch.serialization.safe_globals(FAIRSEQ_SAFE_GLOBALS):
        state = checkpoint.load_checkpoint(path, unsafe=unsafe)
    return _from_checkpoint(state, path)


def check_tying(pretrained: Pretrained, config: ModelConfig, path: str | Path) -> None:
    """Refuse to load an untied LM head into a tied model: the head's projection would silently
    overwrite the token embeddings it shares a tensor with."""
    if pretrained.config is not None and pretrained.config.untie_weights_roberta \
            and not config.untie_weights_roberta:
        raise UserError(f"{path}: its masked-LM head has its own output projection (untied weights); "
                        f"pass --untie-weights-roberta")


# ----------------------------------------------------------------------------------- fairseq


def detect_source(state: dict) -> str:
    """'ours', 'fairseq-2019' or 'fairseq' for a loaded checkpoint (see module docstring)."""
    keys = list(state["model"])
    if any(key.startswith("decoder.") or ".emb_layer_norm." in key or _IN_PROJ.match(key) for key in keys):
        return "fairseq-2019"
    cfg = state.get("cfg")
    if isinstance(state.get("args"), argparse.Namespace) or (isinstance(cfg, dict) and "common" in cfg) \
            or any(key.endswith(".version") for key in keys):
        return "fairseq"
    return "ours"


def from_fairseq_state_dict(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """fairseq keys of either generation -> ours: `decoder.` -> `encoder.`, `emb_layer_norm` ->
    `layernorm_embedding`, fused `in_proj_*` split into q, k, v (in that order); buffers and
    fairseq 0.12's fused duplicates (see `_FUSED_COPY`) dropped."""
    out: dict[str, Tensor] = {}
    for name, value in weights.items():
        ours = our_key(name)
        if ours is None:
            continue
        fused = _IN_PROJ.match(ours)
        if fused is None:
            out[ours] = value
            continue
        if value.size(0) % 3:
            raise UserError(f"{name} has {value.size(0)} rows, not three equal q/k/v blocks")
        for part, chunk in zip("qkv", value.chunk(3)):
            out[f"{fused.group(1)}{part}_proj.{fused.group(2)}"] = chunk
    return out


def our_key(fairseq_key: str) -> str | None:
    """Our name for one fairseq state-dict key (a fused 2019 `in_proj_*` keeps its name);
    None for what we do not keep: buffers and the fused duplicates fairseq rebuilds on load."""
    if fairseq_key.endswith(_BUFFER_SUFFIXES) or _FUSED_COPY.match(fairseq_key):
        return None
    if fairseq_key.startswith("decoder."):
        fairseq_key = "encoder." + fairseq_key[len("decoder."):]
    return fairseq_key.replace(".emb_layer_norm.", ".layernorm_embedding.")


def _from_checkpoint(state: dict, path: Path) -> Pretrained:
    weights = state["model"]
    if not isinstance(weights, dict) or not all(torch.is_tensor(value) for value in weights.values()):
        raise UserError(f"checkpoint {path}: its 'model' entry is not a state dict of tensors")
    source = detect_source(state)
    if source == "ours":
        config = _our_config(state, weights, path)
    else:
        copies = [key for key in weights if _FUSED_COPY.match(key)]
        if copies:
            logger.info("%s: dropped %d fused duplicates of the layer weights (%s, ...) that fairseq 0.12 "
                        "saves for its fast path and rebuilds on load", path, len(copies), copies[0])
        try:
            weights = from_fairseq_state_dict(weights)
        except UserError as error:
            raise UserError(f"{path}: {error}") from None
        config = _fairseq_config(state, weights, path)
    pretrained = _reconcile(weights, config, source, path)
    pretrained.training_state = {**state, "model": pretrained.state_dict}
    if source != "ours":
        pretrained.training_state.update(_fairseq_training_state(state, path))
    return pretrained


def _fairseq_training_state(state: dict, path: Path) -> dict:
    """fairseq's optimizer state and history in our names; its meters (fairseq's own format)
    are left out, so a resumed epoch's averages restart."""
    extra = dict(state.get("extra_state") or {})
    extra.pop("metrics", None)
    return {"last_optimizer_state": None, "extra_state": extra,
            fairseq_resume.STATE_KEY: fairseq_resume.optimizer_state_by_name(state, state["model"], our_key, path),
            "optimizer_history": fairseq_resume.history_in_our_names(
                list(state.get("optimizer_history") or []), checkpoint.training_flags(state).get("optimizer"))}


def _our_config(state: dict, weights: dict[str, Tensor], path: Path) -> ModelConfig | None:
    cfg = state.get("cfg") if isinstance(state.get("cfg"), dict) else {}
    try:
        if isinstance(cfg.get("model"), dict):
            return ModelConfig.from_dict(cfg["model"])
        if cfg.get("arch") in ARCHS and EMBED_TOKENS in weights:
            return ARCHS.get(cfg["arch"])(argparse.Namespace(**cfg), weights[EMBED_TOKENS].size(0))
    except (UserError, TypeError) as error:
        raise UserError(f"checkpoint {path}: its model config is invalid ({error})") from None
    return None


def _fairseq_config(state: dict, weights: dict[str, Tensor], path: Path) -> ModelConfig | None:
    """Sizes from the weights; heads, dropouts and variant checks from `args` / `cfg.model`."""
    flags = {**checkpoint.training_flags(state), **checkpoint.config_group(state, "model")}
    if flags.get("encoder_normalize_before"):
        raise UserError(f"{path}: a pre-LayerNorm model (encoder_normalize_before, e.g. "
                        f"roberta_prenorm); only RoBERTa's post-LayerNorm layers are supported")
    if flags.get("activation_fn") not in (None, "gelu"):
        raise UserError(f"{path}: activation '{flags['activation_fn']}'; only RoBERTa's gelu is supported")
    first_fc1 = ENCODER + "layers.0.fc1.weight"
    for key in (EMBED_TOKENS, EMBED_POSITIONS, first_fc1):
        if key not in weights:
            raise UserError(f"{path}: no weight {key} (nor its 2019 name); not a RoBERTa checkpoint")
    vocab_size, embed_dim = weights[EMBED_TOKENS].shape
    heads = _attention_heads(flags, vocab_size)
    if heads is None:
        logger.warning("%s does not say how many attention heads the model has; pass --arch and "
                       "--encoder-attention-heads when training from it", path)
        return None
    lm_weight = weights.get(LM_HEAD + "weight")
    untied = lm_weight is not None and not torch.equal(lm_weight, weights[EMBED_TOKENS])
    try:
        return ModelConfig(
            vocab_size=vocab_size, encoder_layers=_count_layers(weights), encoder_embed_dim=embed_dim,
            encoder_ffn_embed_dim=weights[first_fc1].size(0), encoder_attention_heads=heads,
            max_positions=weights[EMBED_POSITIONS].size(0) - FAIRSEQ_PADDING_IDX - 1,
            dropout=_number(flags, "dropout", 0.1), attention_dropout=_number(flags, "attention_dropout", 0.1),
            activation_dropout=_number(flags, "activation_dropout", 0.0),
            pooler_dropout=_number(flags, "pooler_dropout", 0.0), padding_idx=FAIRSEQ_PADDING_IDX,
            untie_weights_roberta=untied or bool(flags.get("untie_weights_roberta")))
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _attention_heads(flags: dict, vocab_size: int) -> int | None:
    if flags.get("encoder_attention_heads"):
        return int(flags["encoder_attention_heads"])
    arch = flags.get("arch")
    if arch in ARCHS:  # a preset's default, as fairseq's arch functions fill it in
        return ARCHS.get(arch)(argparse.Namespace(), vocab_size).encoder_attention_heads
    return None


def _number(flags: dict, name: str, default: float) -> float:
    value = flags.get(name)
    return default if value is None else float(value)


def _count_layers(weights: dict[str, Tensor]) -> int:
    indices = {int(match.group(1)) for key in weights if (match := _LAYER.match(key))}
    return max(indices) + 1 if indices else 0


# ------------------------------------------------------------------------------ Hugging Face


def _load_hf_folder(folder: Path, head_name: str, unsafe: bool) -> Pretrained:
    hf_config = _read_hf_config(folder / HF_CONFIG)
    raw = _read_hf_weights(folder, unsafe)
    token_type = next((value for key, value in raw.items()
                       if key.endswith("embeddings.token_type_embeddings.weight")), None)
    if token_type is not None and token_type.size(0) != 1:
        raise UserError(f"{folder}: token_type_embeddings has {token_type.size(0)} rows; RoBERTa uses one "
                        f"token type (a model that uses several cannot be converted)")
    padding_idx = int(hf_config.get("pad_token_id", 1))
    weights = from_hf_state_dict(raw, classification_head=head_name, padding_idx=padding_idx)
    if EMBED_TOKENS not in weights:
        raise UserError(f"{folder}: no word embeddings (embeddings.word_embeddings.weight); "
                        f"not a RoBERTa model")
    config = _config_from_hf(hf_config, folder)
    if not config.untie_weights_roberta:  # as transformers does: a tied file may store it once or not at all
        weights[LM_HEAD + "weight"] = weights[EMBED_TOKENS]
    mapped_back = set(to_hf_state_dict(weights, classification_head=head_name))
    dropped = [key for key in raw if key not in mapped_back and "roberta." + key not in mapped_back
               and not key.endswith(_BUFFER_SUFFIXES)]
    pooler = [key for key in dropped if ".pooler." in f".{key}"]
    if pooler:
        logger.info("%s: dropped the pooler (%s); fairseq's RoBERTa has none and no head reads it",
                    folder, ", ".join(pooler))
    pretrained = _reconcile(weights, config, "huggingface", folder)
    unexpected = [key for key in dropped if key not in pooler]
    if unexpected:
        logger.warning("%s: ignored %d tensors that a RoBERTa model does not have: %s", folder,
                       len(unexpected), _few(unexpected))
    return pretrained


def _read_hf_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON config ({error})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a Hugging Face config (a JSON object is expected)")
    problems = []
    if config.get("model_type") not in HF_MODEL_TYPES:
        problems.append(f"model_type {config.get('model_type')!r} is not one of {', '.join(HF_MODEL_TYPES)}")
    if config.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act {config['hidden_act']!r} (RoBERTa uses the exact 'gelu')")
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type {config['position_embedding_type']!r} (only 'absolute')")
    if config.get("type_vocab_size", 1) != 1:
        problems.append(f"type_vocab_size {config['type_vocab_size']} (RoBERTa uses one token type)")
    if config.get("is_decoder"):
        problems.append("is_decoder is set (a causal model)")
    if problems:
        raise UserError(f"{path}: cannot be read as a RoBERTa encoder: {'; '.join(problems)}")
    return config


def _config_from_hf(hf: dict, folder: Path) -> ModelConfig:
    padding_idx = int(hf.get("pad_token_id", 1))
    try:
        classifier_dropout = hf.get("classifier_dropout")
        return ModelConfig(
            vocab_size=hf["vocab_size"], encoder_layers=hf["num_hidden_layers"],
            encoder_embed_dim=hf["hidden_size"], encoder_ffn_embed_dim=hf["intermediate_size"],
            encoder_attention_heads=hf["num_attention_heads"],
            max_positions=hf["max_position_embeddings"] - padding_idx - 1,
            dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            # HF's classification head falls back to the hidden dropout.
            pooler_dropout=float(hf.get("hidden_dropout_prob", 0.1) if classifier_dropout is None
                                 else classifier_dropout),
            padding_idx=padding_idx, untie_weights_roberta=not hf.get("tie_word_embeddings", True),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)))
    except KeyError as error:
        raise UserError(f"{folder / HF_CONFIG}: lacks the field {error.args[0]!r}") from None
    except UserError as error:
        raise UserError(f"{folder / HF_CONFIG}: {error}") from None


def _read_hf_weights(folder: Path, unsafe: bool) -> dict[str, Tensor]:
    """The weights of a HF folder: one file, or the shards its `*.index.json` lists."""
    for name in HF_WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return _read_weight_file(path, unsafe)
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as error:
            raise UserError(f"{path}: not a readable shard index ({error!r})") from None
        weights: dict[str, Tensor] = {}
        for shard in shards:
            weights.update(_read_weight_file(folder / shard, unsafe))
        return weights
    raise UserError(f"{folder}: has {HF_CONFIG} but no weights ({' or '.join(HF_WEIGHT_FILES[::2])})")


def _read_weight_file(path: Path, unsafe: bool) -> dict[str, Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (listed in the shard index)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        weights = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        raise UserError(f"refusing to unpickle {path}: it needs arbitrary code (global "
                        f"{found.group(1) if found else '?'}). If you trust the file, pass --unsafe-load") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise UserError(f"{path}: not a PyTorch weight file ({type(error).__name__})") from None
    if not isinstance(weights, dict) or not all(torch.is_tensor(value) for value in weights.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return weights


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"reading {path} needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable safetensors file ({error})") from None


# ---------------------------------------------------------------------------------- checking


def _reconcile(weights: dict[str, Tensor], config: ModelConfig | None, source: str, path: Path) -> Pretrained:
    """Compare `weights` with the model `config` describes: drop what it does not have, give a
    missing LM head a fresh initialisation, and log both."""
    heads = {match.group(1): (value.size(1), value.size(0))
             for key, value in weights.items() if (match := _HEAD_OUT.match(key))}
    pretrained = Pretrained(weights, config, heads, source)
    if config is not None:
        expected = _expected_shapes(config, heads)
        for key in weights.keys() & expected.keys():
            if tuple(weights[key].shape) != expected[key]:
                raise UserError(f"{path}: {key} has shape {tuple(weights[key].shape)}, but the model its "
                                f"config describes needs {expected[key]}; the file is inconsistent")
        unexpected = sorted(weights.keys() - expected.keys())
        if unexpected:
            logger.warning("%s: ignored %d tensors that a RoBERTa model does not have: %s", path,
                           len(unexpected), _few(unexpected))
        missing = [key for key in expected if key not in weights]
        pretrained.state_dict = {key: value for key, value in weights.items() if key in expected}
        pretrained.newly_initialized = [key for key in missing if key.startswith(LM_HEAD)]
        pretrained.missing = [key for key in missing if not key.startswith(LM_HEAD)]
        if pretrained.newly_initialized:
            pretrained.state_dict.update(_fresh_lm_head(config, pretrained.state_dict, pretrained.newly_initialized))
            logger.warning("%s has no masked-LM head; newly initialized: %s", path,
                           ", ".join(pretrained.newly_initialized))
        if pretrained.missing:
            logger.warning("%s lacks %d weights the model needs: %s", path, len(pretrained.missing),
                           _few(pretrained.missing))
    body = config and f"{config.encoder_layers} layers x {config.encoder_embed_dim}, vocabulary {config.vocab_size}"
    logger.info("read %d tensors from %s (%s%s; classification heads: %s)", len(pretrained.state_dict), path,
                _DESCRIPTIONS[source], f", {body}" if body else "",
                ", ".join(f"{name} ({classes} classes)" for name, (_, classes) in heads.items()) or "none")
    return pretrained


def _expected_shapes(config: ModelConfig, heads: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a model with `config` and `heads`, built without allocating memory."""
    with torch.device("meta"):
        model = RobertaModel(config)
        for name, (inner_dim, num_classes) in heads.items():
            model.register_classification_head(name, num_classes, inner_dim)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _fresh_lm_head(config: ModelConfig, weights: dict[str, Tensor], keys: list[str]) -> dict[str, Tensor]:
    """A masked-LM head initialised as `RobertaModel` does, tied to the loaded token embeddings."""
    tied = None if config.untie_weights_roberta or EMBED_TOKENS not in weights \
        else nn.Parameter(weights[EMBED_TOKENS], requires_grad=False)
    head = LMHead(config.encoder_embed_dim, config.vocab_size, tied, config.layer_norm_eps)
    head.apply(init_bert_params)
    if tied is None:
        nn.init.normal_(head.weight, mean=0.0, std=0.02)
    fresh = {LM_HEAD + key: value.detach() for key, value in head.state_dict().items()}
    return {key: fresh[key] for key in keys}


def _few(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
