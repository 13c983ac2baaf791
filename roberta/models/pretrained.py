"""Reading RoBERTa weights in any of the layouts they are distributed in, as our state dict.

`load_pretrained` accepts a roberta-train checkpoint, a fairseq `model.pt` with the 2019 key
names (`decoder.sentence_encoder.*`, `emb_layer_norm`, fused `in_proj_*`; config in an
`argparse.Namespace`) or the current ones (`encoder.sentence_encoder.*`, separate q/k/v, a
`version` buffer; config in a `cfg` dict), and a Hugging Face folder (`config.json` plus
`model.safetensors` or `pytorch_model.bin`, optionally sharded). Pickled files are read only
through `roberta.checkpoint_files.load_checkpoint`'s allow-list, here widened by the numpy scalar
globals that legacy fairseq `args` can hold; anything else needs `--unsafe-load`.

The sizes are read from the weights themselves (the `args` of a pruned or resized model may
say otherwise); only the number of attention heads and the dropouts come from the stored config.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from roberta import fairseq_resume
from roberta.checkpoint import files as checkpoint_files
from roberta.errors import UserError
from roberta.models.architectures import ArchSettings, arch_settings, build_model_config, with_block_positions
from roberta.models.config import ModelConfig, shown
from roberta.models.hf_config import HF_CONFIG, config_from_hf, one_line, read_hf_config
from roberta.models.heads import LMHead
from roberta.models.hf_mapping import from_hf_state_dict, to_hf_state_dict
from roberta.models.roberta import RobertaModel, init_bert_params
from roberta.models.weights import LAYER_KEY
from roberta.registry import ARCHS
from roberta.torch_file import read_torch_file

logger = logging.getLogger(__name__)

HF_HEAD_NAME = "sentence_classification_head"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
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
# fairseq's buffers that are not weights, and HF's old persistent position-id buffer.
_BUFFER_SUFFIXES = (*fairseq_resume.FAIRSEQ_BUFFER_SUFFIXES, "embeddings.position_ids")
_DESCRIPTIONS = {"ours": "roberta-train checkpoint", "fairseq-2019": "fairseq model (2019 key names)",
                 "fairseq": "fairseq model", "huggingface": "Hugging Face transformers model"}


def _numpy_scalar_globals() -> list:
    """What unpickling a numpy scalar calls: `scalar(dtype, bytes)`, the dtype and its class.

    None of them runs code from the file; legacy fairseq `args` sometimes hold such scalars.
    Files written with numpy 1.x name `scalar` under `numpy.core`, numpy 2 under `numpy._core`.
    """
    if hasattr(np, "_core"):
        scalar = np._core.multiarray.scalar
    else:  # numpy 1.x, whose `np.core.multiarray` numpy 2's stubs no longer declare
        scalar = np.core.multiarray.scalar  # type: ignore[attr-defined]
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefd"}
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *sorted(dtype_classes, key=str)]


FAIRSEQ_SAFE_GLOBALS = _numpy_scalar_globals()


@dataclass
class Pretrained:
    """Weights under our parameter names, and what the file says about the model.

    `source` is "ours", "fairseq-2019" (the released files' key names), "fairseq" (current
    names) or "huggingface". `config` is None only for a file that does not describe its model
    (the trainer then relies on `--arch`). `heads` maps each classification head to (inner_dim,
    num_classes); `span_heads` names those of them that are span heads (SQuAD's start/end scorer,
    an output projection alone). `training_state` is the
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
    span_heads: list[str] = field(default_factory=list)

    def register_heads(self, model: RobertaModel) -> None:
        """Give `model` each head stored in the file, of its kind."""
        for name, (inner_dim, num_classes) in self.heads.items():
            if name in self.span_heads:
                model.register_span_head(name)
            else:
                model.register_classification_head(name, num_classes, inner_dim)

    def training_flags(self) -> dict:
        """Flag defaults for a run on this model: the stored training flags, with the model's
        sizes as read from the file (so `--arch` need not be guessed for a foreign file)."""
        flags = checkpoint_files.training_flags(self.training_state or {})
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
        state = checkpoint_files.load_checkpoint(path, unsafe=unsafe)
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
        if value.dim() == 0 or value.size(0) % 3:
            raise UserError(f"{name} has shape {tuple(value.shape)}, not three equal q/k/v blocks of rows")
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
    if not _is_state_dict(weights):
        raise UserError(f"checkpoint {path}: its 'model' entry is not a state dict of tensors")
    _check_weight_values(weights, f"checkpoint {path}")
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
                list(state.get("optimizer_history") or []), checkpoint_files.training_flags(state).get("optimizer"))}


def _our_config(state: dict, weights: dict[str, Tensor], path: Path) -> ModelConfig | None:
    cfg = state.get("cfg")
    if not isinstance(cfg, dict):
        cfg = {}
    try:
        if isinstance(cfg.get("model"), dict):
            return ModelConfig.from_dict(cfg["model"])
        if cfg.get("arch") in ARCHS and EMBED_TOKENS in weights:
            return build_model_config(with_block_positions(arch_settings(cfg), cfg.get("tokens_per_sample")),
                                      weights[EMBED_TOKENS].size(0))
    except (UserError, TypeError) as error:
        raise UserError(f"checkpoint {path}: its model config is invalid ({error})") from None
    return None


def _fairseq_config(state: dict, weights: dict[str, Tensor], path: Path) -> ModelConfig | None:
    """Sizes from the weights; heads, dropouts and variant checks from `args` / `cfg.model`."""
    flags = {**checkpoint_files.training_flags(state), **checkpoint_files.config_group(state, "model")}
    if flags.get("encoder_normalize_before"):
        raise UserError(f"{path}: a pre-LayerNorm model (encoder_normalize_before, e.g. "
                        f"roberta_prenorm); only RoBERTa's post-LayerNorm layers are supported")
    if flags.get("activation_fn") not in (None, "gelu"):
        raise UserError(f"{path}: activation '{flags['activation_fn']}'; only RoBERTa's gelu is supported")
    first_fc1 = ENCODER + "layers.0.fc1.weight"
    for key in (EMBED_TOKENS, EMBED_POSITIONS, first_fc1):
        if key not in weights:
            raise UserError(f"{path}: no weight {key} (nor its 2019 name); not a RoBERTa checkpoint")
    vocab_size, embed_dim = _matrix(weights, EMBED_TOKENS, path)
    heads = _attention_heads(flags, vocab_size, path)
    if heads is None:
        logger.warning("%s does not say how many attention heads the model has; pass --arch and "
                       "--encoder-attention-heads when training from it", path)
        return None
    lm_weight = weights.get(LM_HEAD + "weight")
    untied = lm_weight is not None and not torch.equal(lm_weight, weights[EMBED_TOKENS])
    try:
        return ModelConfig(
            vocab_size=vocab_size, encoder_layers=_count_layers(weights, path), encoder_embed_dim=embed_dim,
            encoder_ffn_embed_dim=_matrix(weights, first_fc1, path)[0], encoder_attention_heads=heads,
            max_positions=_matrix(weights, EMBED_POSITIONS, path)[0] - FAIRSEQ_PADDING_IDX - 1,
            dropout=_number(flags, "dropout", 0.1, path),
            attention_dropout=_number(flags, "attention_dropout", 0.1, path),
            activation_dropout=_number(flags, "activation_dropout", 0.0, path),
            pooler_dropout=_number(flags, "pooler_dropout", 0.0, path), padding_idx=FAIRSEQ_PADDING_IDX,
            untie_weights_roberta=untied or bool(flags.get("untie_weights_roberta")))
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _attention_heads(flags: dict, vocab_size: int, path: Path) -> int | None:
    heads = flags.get("encoder_attention_heads")
    if heads is not None:
        if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
            raise UserError(f"{path}: its encoder_attention_heads is {shown(heads)}; expected a positive integer")
        return int(heads)
    arch = flags.get("arch")
    if isinstance(arch, str) and arch in ARCHS:  # a preset's default, as fairseq's arch functions fill it in
        return build_model_config(ArchSettings(arch), vocab_size).encoder_attention_heads
    return None


def _number(flags: dict, name: str, default: float, path: Path) -> float:
    value = flags.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= value < 1:  # before float(), which overflows on a huge integer
        raise UserError(f"{path}: its {name} is {shown(value)}; expected a number in [0, 1)")
    return float(value)


def _count_layers(weights: dict[str, Tensor], path: Path) -> int:
    """How many layers the weights hold; their indices must run 0..N-1 (a stray large index would
    otherwise size a model of that many layers)."""
    indices = sorted({int(match.group(1)) for key in weights if (match := LAYER_KEY.match(key))})
    if indices != list(range(len(indices))):
        absent = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise UserError(f"{path}: holds weights of layers {_few([str(index) for index in indices])}, but none "
                        f"of layer {absent[0]}; layers must be numbered 0..N-1, the file is damaged")
    return len(indices)


# ------------------------------------------------------------------------------ Hugging Face


def _load_hf_folder(folder: Path, head_name: str, unsafe: bool) -> Pretrained:
    hf_config = read_hf_config(folder / HF_CONFIG)
    raw = _read_hf_weights(folder, unsafe)
    _check_weight_values(raw, str(folder))
    token_type = next((value for key, value in raw.items()
                       if key.endswith("embeddings.token_type_embeddings.weight")), None)
    if token_type is not None and (token_type.dim() != 2 or token_type.size(0) != 1):
        raise UserError(f"{folder}: token_type_embeddings has shape {tuple(token_type.shape)}; RoBERTa uses one "
                        f"token type (a model that uses several cannot be converted)")
    weights = from_hf_state_dict(raw, classification_head=head_name, padding_idx=hf_config["pad_token_id"])
    if EMBED_TOKENS not in weights:
        raise UserError(f"{folder}: no word embeddings (embeddings.word_embeddings.weight); "
                        f"not a RoBERTa model")
    config = config_from_hf(hf_config, folder)
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


def _read_hf_weights(folder: Path, unsafe: bool) -> dict[str, Tensor]:
    """The weights of a HF folder: one file, or the shards its `*.index.json` lists."""
    for name in HF_WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return _read_weight_file(path, unsafe)
        weights: dict[str, Tensor] = {}
        for shard in _shard_names(path):
            weights.update(_read_weight_file(folder / shard, unsafe))
        return weights
    raise UserError(f"{folder}: has {HF_CONFIG} but no weights ({' or '.join(HF_WEIGHT_FILES[::2])})")


def _shard_names(path: Path) -> list[str]:
    """The files a `*.index.json` maps the weights to (its `weight_map`: name -> file name)."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UserError(f"{path}: not a readable shard index ({one_line(error)})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise UserError(f"{path}: not a shard index (a JSON object whose weight_map maps each weight "
                        f"to a file name is expected)")
    return sorted(set(weight_map.values()))


def _read_weight_file(path: Path, unsafe: bool) -> dict[str, Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (listed in the shard index)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    weights = read_torch_file(path, unsafe=unsafe)
    if not _is_state_dict(weights):
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


def _is_state_dict(weights: Any) -> bool:
    return isinstance(weights, dict) and all(isinstance(key, str) and torch.is_tensor(value)
                                             for key, value in weights.items())


def _check_weight_values(weights: dict[str, Tensor], where: str) -> None:
    """Weights must be floating point (an integer or complex tensor would be cast without a word)
    and finite: NaN or infinite ones, saved by a run that diverged, make every output garbage, and
    no reader (training, validation, the hub, conversion) can use them."""
    kept = {key: value for key, value in weights.items() if not key.endswith(_BUFFER_SUFFIXES)}
    for key, value in kept.items():
        if not value.is_floating_point():
            raise UserError(f"{where}: the weight {key} has dtype {str(value.dtype).removeprefix('torch.')}; "
                            f"weights must be floating point (float32, float16 or bfloat16): the file is "
                            f"damaged or holds something else")
    broken = [key for key, value in kept.items() if not bool(torch.isfinite(value).all())]
    if broken:
        raise UserError(f"{where}: {len(broken)} weights hold NaN or infinite values ({_few(broken, 3)}); the run "
                        f"that saved them diverged: use an earlier checkpoint")


def _reconcile(weights: dict[str, Tensor], config: ModelConfig | None, source: str, path: Path) -> Pretrained:
    """Compare `weights` with the model `config` describes: drop what it does not have, give a
    missing LM head a fresh initialisation, and log both."""
    heads = _stored_heads(weights, path)
    pretrained = Pretrained(weights, config, heads, source, span_heads=[
        name for name in heads if _is_span_head(weights, name, heads[name])])
    if config is not None:
        _check_sizes(config, weights, source, path)
        expected = _expected_shapes(config, pretrained)
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
                ", ".join(f"{name} ({'span' if name in pretrained.span_heads else f'{classes} classes'})"
                          for name, (_, classes) in heads.items()) or "none")
    return pretrained


def _stored_heads(weights: dict[str, Tensor], path: Path) -> dict[str, tuple[int, int]]:
    """Each stored head's (inner_dim, num_classes), read off its output projection."""
    heads = {}
    for key in weights:
        if (match := _HEAD_OUT.match(key)) is not None:
            num_classes, inner_dim = _matrix(weights, key, path)
            heads[match.group(1)] = (inner_dim, num_classes)
    return heads


def _is_span_head(weights: dict[str, Tensor], name: str, head: tuple[int, int]) -> bool:
    """A span head (SQuAD's start/end scorer) is an output projection with two outputs and no
    dense layer before it; a sentence classification head always has one."""
    return head[1] == 2 and not any(key.startswith(f"classification_heads.{name}.dense.") for key in weights)


def _matrix(weights: dict[str, Tensor], key: str, path: Path) -> tuple[int, int]:
    """The (rows, columns) of a weight that must be a matrix."""
    shape = tuple(weights[key].shape)
    if len(shape) != 2:
        raise UserError(f"{path}: {key} has shape {shape}, not a matrix; the file is damaged")
    return shape


# The config.json fields that state each size, for messages about a Hugging Face folder.
_HF_SIZE_FIELDS = {"vocab_size": "vocab_size", "encoder_layers": "num_hidden_layers",
                   "encoder_embed_dim": "hidden_size", "encoder_ffn_embed_dim": "intermediate_size",
                   "max_positions": "max_position_embeddings"}


def _check_sizes(config: ModelConfig, weights: dict[str, Tensor], source: str, path: Path) -> None:
    """Every size the file's config states must be the one its tensors have. Checked before a model
    is built from the config, even on the meta device, where 100,000 layers would take minutes."""
    hf = source == "huggingface"
    where = path / HF_CONFIG if hf else f"checkpoint {path}: its model config"
    for name, stored, evidence in _stored_sizes(weights, config.padding_idx, path):
        stated = getattr(config, name)
        if stated == stored:
            continue
        if hf and name == "max_positions":  # config.json states the table's rows
            stated += config.padding_idx + 1
        raise UserError(f"{where}: {_HF_SIZE_FIELDS[name] if hf else name} is {shown(stated)}, but {evidence}; "
                        f"the config does not describe these weights (pass the config they were saved with)")


def _stored_sizes(weights: dict[str, Tensor], padding_idx: int, path: Path) -> Iterator[tuple[str, int, str]]:
    """Each size of the model as the stored tensors give it, with the tensor that gives it; the
    layer count first, so that a count with no layers stored is reported as such."""
    layers = _count_layers(weights, path)
    yield "encoder_layers", layers, f"the weights hold {layers} layers"
    fc1 = next((candidate for index in range(layers)
                if (candidate := f"{ENCODER}layers.{index}.fc1.weight") in weights), None)
    for key, what in ((EMBED_TOKENS, "token embeddings"), (EMBED_POSITIONS, "position embeddings"),
                      (fc1, "feed-forward weights (fc1)")):
        if key is None or key not in weights:
            raise UserError(f"{path}: holds no {what} ({key or ENCODER + 'layers.N.fc1.weight'}), so the sizes its "
                            f"config states cannot be checked; the file is incomplete")
    vocab_size, embed_dim = _matrix(weights, EMBED_TOKENS, path)
    yield "vocab_size", vocab_size, f"{EMBED_TOKENS} has {vocab_size} rows"
    yield "encoder_embed_dim", embed_dim, f"{EMBED_TOKENS} is {embed_dim} wide"
    assert fc1 is not None  # the loop above raised otherwise
    ffn_dim = _matrix(weights, fc1, path)[0]
    yield "encoder_ffn_embed_dim", ffn_dim, f"{fc1} has {ffn_dim} rows"
    position_rows = _matrix(weights, EMBED_POSITIONS, path)[0]
    yield "max_positions", position_rows - padding_idx - 1, f"{EMBED_POSITIONS} has {position_rows} rows"


def _expected_shapes(config: ModelConfig, pretrained: Pretrained) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a model with `config` and the stored heads, built without allocating memory."""
    with torch.device("meta"):
        model = RobertaModel(config)
        pretrained.register_heads(model)
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
