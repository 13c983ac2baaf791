"""Writing a model (our state dict + `ModelConfig`) in other toolkits' layouts.

- `save_hf_folder`: a Hugging Face folder, `config.json` + `model.safetensors`, that
  `transformers` loads as `RobertaForMaskedLM` (or, with a classification head,
  `RobertaForSequenceClassification`, which also keeps the LM head in the file).
- `save_fairseq_checkpoint`: a fairseq `model.pt`, with the current key names (a `cfg` of every
  group fairseq 0.12.2 writes, and a `encoder.sentence_encoder.version` buffer) or the 2019 ones
  of the released RoBERTa files (`decoder.` prefix, `emb_layer_norm`, fused `in_proj_*`, an
  `argparse.Namespace` in `args`). Both carry the model's task, criterion and head settings.
- `save_our_checkpoint`: our own layout with the model config and no training state.

Every file is written atomically; `roberta.models.pretrained.load_pretrained` reads them all back.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import roberta.optim  # noqa: F401  (registers the optimizers and LR schedulers named in a cfg)
from roberta.checkpoint import files as checkpoint_files
from roberta.errors import UserError
from roberta.fileio import atomic_write
from roberta.models.config import ModelConfig
from roberta.models.hf_mapping import to_hf_state_dict
from roberta.registry import LR_SCHEDULERS, OPTIMIZERS, Registry

logger = logging.getLogger(__name__)

GENERATIONS = ("current", "2019")
# fairseq's TransformerEncoder registers this buffer; its loader upgrades files older than 3.
FAIRSEQ_ENCODER_VERSION = 3.0
_QKV = re.compile(r"^(.*\.self_attn\.)([qkv])_proj\.(weight|bias)$")

# fairseq 0.12.2's top-level config groups and their defaults, as its checkpoints hold them
# (interpolations such as `${common.fp16}` resolved: a key of the same name shares one value).
_FAIRSEQ_GROUPS: dict[str, dict] = {
    "common": {
        "no_progress_bar": False, "log_interval": 100, "log_format": None, "log_file": None, "aim_repo": None,
        "aim_run_hash": None, "tensorboard_logdir": None, "wandb_project": None, "azureml_logging": False,
        "seed": 1, "cpu": False, "tpu": False, "bf16": False, "memory_efficient_bf16": False, "fp16": False,
        "memory_efficient_fp16": False, "fp16_no_flatten_grads": False, "fp16_init_scale": 128,
        "fp16_scale_window": None, "fp16_scale_tolerance": 0.0, "on_cpu_convert_precision": False,
        "min_loss_scale": 0.0001, "threshold_loss_scale": None, "amp": False, "amp_batch_retries": 2,
        "amp_init_scale": 128, "amp_scale_window": None, "user_dir": None, "empty_cache_freq": 0,
        "all_gather_list_size": 16384, "model_parallel_size": 1, "quantization_config_path": None,
        "profile": False, "reset_logging": False, "suppress_crashes": False, "use_plasma_view": False,
        "plasma_path": "/tmp/plasma"},
    "common_eval": {"path": None, "post_process": None, "quiet": False, "model_overrides": "{}",
                    "results_path": None},
    "distributed_training": {
        "distributed_world_size": 1, "distributed_num_procs": 1, "distributed_rank": 0,
        "distributed_backend": "nccl", "distributed_init_method": None, "distributed_port": -1, "device_id": 0,
        "distributed_no_spawn": False, "ddp_backend": "pytorch_ddp", "ddp_comm_hook": "none",
        "bucket_cap_mb": 25, "fix_batches_to_gpus": False, "find_unused_parameters": False,
        "gradient_as_bucket_view": False, "fast_stat_sync": False, "heartbeat_timeout": -1,
        "broadcast_buffers": False, "slowmo_momentum": None, "slowmo_base_algorithm": "localsgd",
        "localsgd_frequency": 3, "nprocs_per_node": 1, "pipeline_model_parallel": False,
        "pipeline_balance": None, "pipeline_devices": None, "pipeline_chunks": 0,
        "pipeline_encoder_balance": None, "pipeline_encoder_devices": None, "pipeline_decoder_balance": None,
        "pipeline_decoder_devices": None, "pipeline_checkpoint": "never", "zero_sharding": "none",
        "fp16": False, "memory_efficient_fp16": False, "tpu": False, "no_reshard_after_forward": False,
        "fp32_reduce_scatter": False, "cpu_offload": False, "use_sharded_state": False,
        "not_fsdp_flatten_parameters": False},
    "dataset": {
        "num_workers": 1, "skip_invalid_size_inputs_valid_test": False, "max_tokens": None, "batch_size": None,
        "required_batch_size_multiple": 8, "required_seq_len_multiple": 1, "dataset_impl": None,
        "data_buffer_size": 10, "train_subset": "train", "valid_subset": "valid", "combine_valid_subsets": None,
        "ignore_unused_valid_subsets": False, "validate_interval": 1, "validate_interval_updates": 0,
        "validate_after_updates": 0, "fixed_validation_seed": None, "disable_validation": False,
        "max_tokens_valid": None, "batch_size_valid": None, "max_valid_steps": None, "curriculum": 0,
        "gen_subset": "test", "num_shards": 1, "shard_id": 0, "grouped_shuffling": False,
        "update_epoch_batch_itr": None, "update_ordered_indices_seed": False},
    "optimization": {
        "max_epoch": 0, "max_update": 0, "stop_time_hours": 0, "clip_norm": 0.0, "sentence_avg": False,
        "update_freq": [1], "lr": [0.25], "stop_min_lr": -1.0, "use_bmuf": False, "skip_remainder_batch": False},
    "checkpoint": {
        "save_dir": "checkpoints", "restore_file": "checkpoint_last.pt", "continue_once": None,
        "finetune_from_model": None, "reset_dataloader": False, "reset_lr_scheduler": False,
        "reset_meters": False, "reset_optimizer": False, "optimizer_overrides": "{}", "save_interval": 1,
        "save_interval_updates": 0, "keep_interval_updates": -1, "keep_interval_updates_pattern": -1,
        "keep_last_epochs": -1, "keep_best_checkpoints": -1, "no_save": False, "no_epoch_checkpoints": False,
        "no_last_checkpoints": False, "no_save_optimizer_state": False, "best_checkpoint_metric": "loss",
        "maximize_best_checkpoint_metric": False, "patience": -1, "checkpoint_suffix": "",
        "checkpoint_shard_count": 1, "load_checkpoint_on_all_dp_ranks": False,
        "write_checkpoints_asynchronously": False, "model_parallel_size": 1},
    "bmuf": {"block_lr": 1, "block_momentum": 0.875, "global_sync_iter": 50, "warmup_iterations": 500,
             "use_nbm": False, "average_sync": False, "distributed_world_size": 1},
    "generation": {
        "beam": 5, "nbest": 1, "max_len_a": 0, "max_len_b": 200, "min_len": 1, "match_source_len": False,
        "unnormalized": False, "no_early_stop": False, "no_beamable_mm": False, "lenpen": 1, "unkpen": 0,
        "replace_unk": None, "sacrebleu": False, "score_reference": False, "prefix_size": 0,
        "no_repeat_ngram_size": 0, "sampling": False, "sampling_topk": -1, "sampling_topp": -1.0,
        "constraints": None, "temperature": 1.0, "diverse_beam_groups": -1, "diverse_beam_strength": 0.5,
        "diversity_rate": -1.0, "print_alignment": None, "print_step": False, "lm_path": None,
        "lm_weight": 0.0, "iter_decode_eos_penalty": 0.0, "iter_decode_max_iter": 10,
        "iter_decode_force_max_iter": False, "iter_decode_with_beam": 1,
        "iter_decode_with_external_reranker": False, "retain_iter_history": False, "retain_dropout": False,
        "retain_dropout_modules": None, "decoding_format": None, "no_seed_provided": False, "eos_token": None},
    "eval_lm": {"output_word_probs": False, "output_word_stats": False, "context_window": 0,
                "softmax_batch": sys.maxsize},
    "interactive": {"buffer_size": 0, "input": "-"},
    "ema": {"store_ema": False, "ema_decay": 0.9999, "ema_start_update": 0, "ema_seed_model": None,
            "ema_update_freq": 1, "ema_fp32": False},
}
# Defaults that fairseq takes from another key (`${dataset.max_tokens}`) when unset.
_RESOLVED_FROM = {"max_tokens_valid": "max_tokens", "batch_size_valid": "batch_size",
                  "update_epoch_batch_itr": "grouped_shuffling"}
# The RoBERTa tasks and criterions of fairseq 0.12.2 with their own flags' defaults. fairseq
# merges a dataclass task's cfg group into its dataclass (unknown keys are errors), while an
# argparse one (sentence_ranking) reads attributes of a Namespace holding every flag.
_TASKS: dict[str, dict] = {
    "masked_lm": {"data": ".", "sample_break_mode": "none", "tokens_per_sample": 1024, "mask_prob": 0.15,
                  "leave_unmasked_prob": 0.1, "random_token_prob": 0.1, "freq_weighted_replacement": False,
                  "mask_whole_words": False, "mask_multiple_length": 1, "mask_stdev": 0.0,
                  "shorten_method": "none", "shorten_data_split_list": "", "seed": 1,
                  "include_target_tokens": False},
    "sentence_prediction": {"data": ".", "num_classes": -1, "init_token": None, "separator_token": None,
                            "no_shuffle": False, "shorten_method": "none", "shorten_data_split_list": "",
                            "add_prev_output_tokens": False, "max_positions": 512, "regression_target": False,
                            "classification_head_name": "sentence_classification_head", "seed": 1},
    "sentence_ranking": {"data": ".", "num_classes": None, "init_token": None, "separator_token": None,
                         "no_shuffle": False, "shorten_method": "none", "shorten_data_split_list": "",
                         "max_option_length": None},
}
_CRITERIA: dict[str, dict] = {
    "masked_lm": {"tpu": False},
    "sentence_prediction": {"classification_head_name": "sentence_classification_head", "regression_target": False},
    "sentence_ranking": {"save_predictions": None, "ranking_head_name": "sentence_classification_head"},
}
_ARGPARSE_CONFIGS = {"sentence_ranking"}
# fairseq checks the criterion's class name in `optimizer_history` before reusing optimizer state.
_CRITERION_CLASSES = {"masked_lm": "MaskedLmLoss", "sentence_prediction": "SentencePredictionCriterion",
                      "sentence_ranking": "SentenceRankingCriterion"}


def hf_config(config: ModelConfig, *, num_labels: int | None = None) -> dict:
    """`config` as a `transformers.RobertaConfig` dict (sequence classification with `num_labels`)."""
    architecture = "RobertaForMaskedLM" if num_labels is None else "RobertaForSequenceClassification"
    fields = {
        "architectures": [architecture], "model_type": "roberta", "vocab_size": config.vocab_size,
        "hidden_size": config.encoder_embed_dim, "num_hidden_layers": config.encoder_layers,
        "num_attention_heads": config.encoder_attention_heads,
        "intermediate_size": config.encoder_ffn_embed_dim, "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.attention_dropout,
        "classifier_dropout": config.pooler_dropout,
        "max_position_embeddings": config.max_positions + config.padding_idx + 1,
        "position_embedding_type": "absolute", "type_vocab_size": 1, "initializer_range": 0.02,
        "layer_norm_eps": config.layer_norm_eps, "pad_token_id": config.padding_idx, "bos_token_id": 0,
        "eos_token_id": 2, "tie_word_embeddings": not config.untie_weights_roberta, "is_decoder": False,
    }
    if num_labels is not None:
        fields["id2label"] = {str(index): f"LABEL_{index}" for index in range(num_labels)}
        fields["label2id"] = {f"LABEL_{index}": index for index in range(num_labels)}
    return fields


def save_hf_folder(directory: str | Path, state_dict: dict[str, Tensor], config: ModelConfig, *,
                   classification_head: str | None = None) -> Path:
    """Write `config.json` and `model.safetensors` into `directory` (created if needed)."""
    try:
        from safetensors.torch import save as safetensors_bytes
    except ImportError:
        raise UserError("writing a Hugging Face folder needs the safetensors package: "
                        "pip install safetensors") from None
    directory = Path(directory)
    num_labels = _check_hf_head(state_dict, config, classification_head)
    if config.activation_dropout:
        logger.warning("transformers' RoBERTa has no activation dropout; the exported config drops "
                       "--activation-dropout %g (it only matters for training)", config.activation_dropout)
    others = sorted({key.split(".")[1] for key in state_dict if key.startswith("classification_heads.")}
                    - {classification_head})
    if others:
        logger.warning("a Hugging Face folder holds at most one classification head; not exported: %s",
                       ", ".join(others))
    hf = to_hf_state_dict(state_dict, classification_head=classification_head)
    if not config.untie_weights_roberta:
        # transformers ties these to the word embeddings and lm_head.bias only when tied.
        hf.pop("lm_head.decoder.weight", None)
        hf.pop("lm_head.decoder.bias", None)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "config.json", "w", encoding="utf-8") as handle:
        json.dump(hf_config(config, num_labels=num_labels), handle, indent=2, sort_keys=True)
        handle.write("\n")
    with atomic_write(directory / "model.safetensors", "wb") as handle:
        handle.write(safetensors_bytes(_unshared(hf), metadata={"format": "pt"}))
    logger.info("wrote Hugging Face folder %s (%d tensors)", directory, len(hf))
    return directory


def _check_hf_head(state_dict: dict[str, Tensor], config: ModelConfig, name: str | None) -> int | None:
    if name is None:
        return None
    prefix = f"classification_heads.{name}."
    if prefix + "out_proj.weight" not in state_dict:
        heads = sorted({key.split(".")[1] for key in state_dict if key.startswith("classification_heads.")})
        raise UserError(f"no classification head '{name}' to export (the model has: "
                        f"{', '.join(heads) or 'none'})")
    num_classes, inner_dim = state_dict[prefix + "out_proj.weight"].shape
    if inner_dim != config.encoder_embed_dim:
        raise UserError(f"classification head '{name}' has inner dimension {inner_dim}; transformers' "
                        f"RoBERTa head needs the hidden size {config.encoder_embed_dim}")
    return int(num_classes)


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors sharing memory (q/k/v views of one fused matrix, tied weights):
    give every such tensor, and every non-contiguous one, its own copy."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        pointer = value.untyped_storage().data_ptr()
        shared = pointer in seen or value.untyped_storage().nbytes() != value.numel() * value.element_size()
        seen.add(pointer)
        out[key] = value.detach().clone().contiguous() if shared or not value.is_contiguous() else value.detach()
    return out


def to_fairseq_state_dict(state_dict: dict[str, Tensor], generation: str = "current") -> dict[str, Tensor]:
    """Our keys -> fairseq's: `current` adds the encoder's version buffer; `2019` renames to
    `decoder.*` and `emb_layer_norm` and fuses q, k, v into `in_proj_*` (in that order)."""
    if generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {GENERATIONS}, got {generation!r}")
    if generation == "current":
        return {**state_dict, "encoder.sentence_encoder.version": torch.tensor([FAIRSEQ_ENCODER_VERSION])}
    out: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        if name.startswith("encoder."):
            name = "decoder." + name[len("encoder."):]
        name = name.replace(".layernorm_embedding.", ".emb_layer_norm.")
        qkv = _QKV.match(name)
        if qkv is None:
            out[name] = value
        elif qkv.group(2) == "q":
            parts = [state_dict[_our_name(f"{qkv.group(1)}{part}_proj.{qkv.group(3)}")] for part in "qkv"]
            out[f"{qkv.group(1)}in_proj_{qkv.group(3)}"] = torch.cat(parts)
    return out


def _our_name(fairseq_2019_name: str) -> str:
    return "encoder." + fairseq_2019_name[len("decoder."):]


def save_fairseq_checkpoint(path: str | Path, state_dict: dict[str, Tensor], config: ModelConfig,
                            generation: str = "current", *, flags: dict | None = None) -> Path:
    """Write a fairseq `model.pt` with the keys fairseq's loader expects of that generation.

    `flags` are the training flags the model was made with (`roberta.checkpoint.files.training_flags`):
    a fine-tuned model keeps its task, criterion and head settings, so fairseq-validate and the
    hub interface rebuild it; without them the file describes a masked-LM model.
    """
    path = Path(path)
    flat = fairseq_flat_args(config, flags or {})
    state: dict[str, Any] = {
        "model": to_fairseq_state_dict(state_dict, generation),
        "criterion": None,
        "optimizer_history": [{"criterion_name": _CRITERION_CLASSES[flat["criterion"]],
                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": None},
                               "num_updates": 0}],
        "task_state": {},
        "extra_state": {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0,
                                           "shuffle": True}, "val_loss": None},
        "last_optimizer_state": None,
    }
    if generation == "2019":
        state["args"] = argparse.Namespace(**flat)
    else:
        state["args"] = None
        state["cfg"] = fairseq_cfg(flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)
    logger.info("wrote fairseq checkpoint %s (%s key names, task %s)", path, generation, flat["task"])
    return path


def fairseq_flat_args(config: ModelConfig, flags: dict) -> dict:
    """Every flag of the run as one flat dict, the way fairseq's argparse namespace holds them:
    fairseq's defaults, overlaid by our stored flags (same names), the model's sizes and arch."""
    # Our flat cfg nests the ModelConfig under "model"; fairseq's groups each carry a "_name".
    stored = {key: value for key, value in checkpoint_files.plain_config(flags).items()
              if key not in ("model", "_name")}
    flat = {key: value for group in _FAIRSEQ_GROUPS.values() for key, value in group.items()}
    flat.update(stored)
    for key, source in _RESOLVED_FROM.items():
        if flat[key] is None:
            flat[key] = flat[source]
    task = flat.get("task") or "masked_lm"
    if task not in _TASKS:
        logger.warning("fairseq 0.12.2 has no task '%s'; the exported file names masked_lm, so fairseq can "
                       "load the encoder but cannot evaluate %s", task, task)
        task = "masked_lm"
    criterion = flat["criterion"] if flat.get("criterion") in _CRITERIA else task
    flat.update({"task": task, "criterion": criterion, "data": flat.get("data") or ".",
                 "tokens_per_sample": flat.get("tokens_per_sample") or config.max_positions,
                 "bpe": None, "tokenizer": None, **_fairseq_model_args(config)})
    for defaults in (_TASKS[task], _CRITERIA[criterion]):
        for key, value in defaults.items():
            flat.setdefault(key, value)
    return flat


def fairseq_cfg(flat: dict) -> dict:
    """The `cfg` fairseq 0.12.2 saves: every group of its top-level config, `model` (and the task
    and criterion of a task fairseq declares with argparse) as a Namespace of all flags, the others
    as plain dicts holding exactly their dataclass's fields (fairseq merges them into it)."""
    groups: dict = {"_name": None}
    for name, defaults in _FAIRSEQ_GROUPS.items():
        groups[name] = {"_name": None, **{key: flat[key] for key in defaults}}
    task, criterion = flat["task"], flat["criterion"]
    ema = groups.pop("ema")
    return {
        **groups,
        "model": argparse.Namespace(**flat, _name=flat["arch"]),
        "task": _config_group(task, _TASKS[task], flat),
        "criterion": _config_group(criterion, _CRITERIA[criterion], flat),
        "optimizer": _component_group(OPTIMIZERS, flat.get("optimizer"), flat),
        "lr_scheduler": _component_group(LR_SCHEDULERS, flat.get("lr_scheduler"), flat),
        "scoring": None, "bpe": None, "tokenizer": None, "ema": ema,
    }


def _config_group(name: str, fields: dict, flat: dict) -> dict | argparse.Namespace:
    if name in _ARGPARSE_CONFIGS:
        return argparse.Namespace(**flat, _name=name)
    return {"_name": name, **{key: flat[key] for key in fields}}


def _component_group(registry: Registry, name: str | None, flat: dict) -> dict | None:
    """An optimizer's or LR scheduler's group: its own flags (declared with fairseq's names) and lr."""
    if not name or name not in registry:
        return None
    parser = argparse.ArgumentParser(add_help=False)
    registry.get(name).add_args(parser)
    defaults = vars(parser.parse_known_args([])[0])
    return {"_name": name, **{key: flat.get(key, value) for key, value in defaults.items()}, "lr": flat.get("lr")}


def _fairseq_model_args(config: ModelConfig) -> dict:
    return {
        "arch": "roberta", "encoder_layers": config.encoder_layers,
        "encoder_embed_dim": config.encoder_embed_dim, "encoder_ffn_embed_dim": config.encoder_ffn_embed_dim,
        "encoder_attention_heads": config.encoder_attention_heads, "max_positions": config.max_positions,
        "max_source_positions": config.max_positions,
        "dropout": config.dropout, "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout, "pooler_dropout": config.pooler_dropout,
        "activation_fn": "gelu", "pooler_activation_fn": "tanh", "encoder_normalize_before": False,
        "encoder_learned_pos": True, "no_scale_embedding": True, "layernorm_embedding": True,
        "encoder_layerdrop": 0.0, "untie_weights_roberta": config.untie_weights_roberta,
    }


def save_our_checkpoint(path: str | Path, state_dict: dict[str, Tensor], config: ModelConfig) -> Path:
    """Our checkpoint layout holding only the model: a run restoring it starts its optimizer,
    schedule and data position afresh, as after --reset-optimizer --reset-dataloader."""
    path = Path(path)
    state: dict[str, Any] = {"args": None, "cfg": {"model": config.to_dict()}, "model": state_dict, "criterion": None,
             "optimizer_history": [], "task_state": {}, "extra_state": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)
    logger.info("wrote checkpoint %s", path)
    return path
