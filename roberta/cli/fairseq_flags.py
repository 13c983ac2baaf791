"""fairseq 0.12.2 flags that no component of this toolkit declares, each with the reason.

A fairseq recipe must either run unchanged or stop with one line saying which flag is the
problem and why. Every flag of `fairseq-train`/`fairseq-validate` for the RoBERTa tasks is
therefore declared by a component (with fairseq's meaning and default) or listed here, in
one of three ways:

- `UNSUPPORTED`: a feature not implemented here; passing the flag is an error.
- `IGNORED`: fairseq's flag changes nothing for these tasks here (a speed or memory knob, an
  option of a feature that is off, a generation-only setting); it is accepted and a warning
  says once that it is ignored.
- `DEFAULT_ONLY`: accepted only at values that are a no-op (fairseq's default, the only
  behaviour here); any other value is an error.

`DIFFERENCES` notes where an implemented flag's default or choices differ from fairseq's.
`VALIDATE_IGNORED` lists training flags that fairseq-validate's parser accepts and never
reads. `docs/fairseq-flags.md` is generated from these tables
(`scripts/fairseq_flag_table.py`).
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Mapping, Sequence

from roberta.errors import UserError
from roberta.logging import warn_once

logger = logging.getLogger(__name__)

_TRACKERS = "experiment trackers (Aim, W&B, AzureML) are not integrated; use --tensorboard-logdir or --log-file"
_AMP = "use --fp16: here it is autocast over fp32 weights with dynamic loss scaling, which is what fairseq's --amp does"
_MODEL_PARALLEL = "model-parallel training (Megatron) only"
_PIPELINE = "only used with --pipeline-model-parallel, which is not supported"
_FSDP = "only used with --ddp-backend fully_sharded, which is not supported"
_SLOWMO = "only used with --ddp-backend slowmo, which is not supported"
_EMA = "only used with --store-ema, which is not supported"
_GENERATION = "used by fairseq's generation tools (translation) only; fairseq-train and fairseq-validate never read it"

UNSUPPORTED: dict[str, str] = {
    "--aim-repo": _TRACKERS,
    "--aim-run-hash": _TRACKERS,
    "--wandb-project": _TRACKERS,
    "--azureml-logging": _TRACKERS,
    "--tpu": "TPU-only (torch_xla); train on CUDA GPUs or the CPU",
    "--amp": _AMP,
    "--amp-batch-retries": _AMP,
    "--amp-init-scale": _AMP + " (--fp16-init-scale)",
    "--amp-scale-window": _AMP + " (--fp16-scale-window)",
    "--quantization-config-path": "quantization (fairseq's quant-noise/PQ pipeline) is not implemented",
    "--profile": "the autograd NVTX profiler hook is not implemented; run under `nsys` or torch.profiler instead",
    "--combine-valid-subsets": "each --valid-subset is validated and reported separately",
    "--combine-val": "each --valid-subset is validated and reported separately",
    "--fixed-validation-seed": "validation masks are already fixed: they derive from --seed and the example",
    "--max-valid-steps": "validation always covers the whole split",
    "--nval": "validation always covers the whole split",
    "--grouped-shuffling": "batches are shuffled individually, not in groups of --num-shards",
    "--update-ordered-indices-seed": "example order within length buckets is seeded by --seed only",
    "--distributed-num-procs": "the number of processes started here is --distributed-world-size (or torchrun's --nproc-per-node)",
    "--distributed-port": "give --distributed-init-method tcp://HOST:PORT, or launch with torchrun",
    "--fix-batches-to-gpus": "batches are shuffled across processes every epoch",
    "--pipeline-model-parallel": "pipeline model parallelism is not implemented",
    "--encoder-normalize-before": "the encoder is post-LayerNorm (RoBERTa's); pre-LayerNorm is not implemented",
    "--encoder-layers-to-keep": "LayerDrop pruning is not implemented",
    "--spectral-norm-classification-head": "spectral normalization of the classification head (R4F) is not implemented",
    "--load-checkpoint-heads": "not implemented: the model has the heads its task registers",
    "--include-target-tokens": "data2vec-only",
    "--add-prev-output-tokens": "BART-style decoder inputs; RoBERTa has no decoder",
    "--continue-once": "give --restore-file",
    "--store-ema": "an exponential moving average of the weights is not implemented",
    "--use-bmuf": "BMUF (blockwise model-update filtering) is not implemented",
    "--skip-remainder-batch": "not implemented: an epoch's last, shorter update is always trained",
    "--save-predictions": "roberta-validate --save-predictions writes the predictions of a checkpoint",
}

IGNORED: dict[str, str] = {
    "--on-cpu-convert-precision": "weights are never converted to 16 bits before moving to the GPU (autocast), so there is nothing to convert on the CPU",
    "--all-gather-list-size": "statistics are all-reduced as tensors, with no fixed-size pickle buffer",
    "--reset-logging": "fairseq reads it only in its hydra_train entry point",
    "--suppress-crashes": "fairseq reads it only in its hydra_train entry point",
    "--use-plasma-view": "fairseq's plasma store only shares dataset indices between processes to save memory; the data is the same without it",
    "--plasma-path": "fairseq's plasma store only shares dataset indices between processes to save memory; the data is the same without it",
    "--tokenizer": _GENERATION,
    "--bpe": "this task reads binarized data and never applies a BPE (masked_lm uses it for --mask-whole-words)",
    "--scoring": _GENERATION,
    "--pad": "an option of the BLEU scorer (--scoring); dictionaries fix <pad> at 1",
    "--eos": "an option of the BLEU scorer (--scoring); dictionaries fix </s> at 2",
    "--unk": "an option of the BLEU scorer (--scoring); dictionaries fix <unk> at 3",
    "--gen-subset": _GENERATION,
    "--num-shards": _GENERATION + " (batches are sharded over the processes of the run)",
    "--shard-id": _GENERATION + " (batches are sharded over the processes of the run)",
    "--data-buffer-size": "a prefetching knob; the batches are the same",
    "--ignore-unused-valid-subsets": "a valid* split left out of --valid-subset is never an error here",
    "--update-epoch-batch-itr": "fairseq's iterator-caching switch; batches are rebuilt the same way either way",
    "--distributed-backend": "the backend follows the device: NCCL on GPUs, gloo on the CPU",
    "--device-id": "each process takes its GPU from LOCAL_RANK (torchrun) or from its rank",
    "--local_rank": "each process takes its GPU from LOCAL_RANK (torchrun) or from its rank",
    "--distributed-no-spawn": "under torchrun no process is spawned; otherwise give --distributed-world-size 1 for one process",
    "--bucket-cap-mb": "a speed knob of torch DDP (which keeps its default bucket size); the gradients are the same",
    "--gradient-as-bucket-view": "a memory knob of torch DDP; the gradients are the same",
    "--fast-stat-sync": "deprecated in fairseq 0.12.2 itself, where it has no effect",
    "--broadcast-buffers": "RoBERTa has no buffers that training changes (no batch norm)",
    "--slowmo-momentum": _SLOWMO,
    "--slowmo-base-algorithm": _SLOWMO,
    "--localsgd-frequency": _SLOWMO,
    "--nprocs-per-node": _SLOWMO,
    "--pipeline-balance": _PIPELINE,
    "--pipeline-devices": _PIPELINE,
    "--pipeline-chunks": _PIPELINE,
    "--pipeline-encoder-balance": _PIPELINE,
    "--pipeline-encoder-devices": _PIPELINE,
    "--pipeline-decoder-balance": _PIPELINE,
    "--pipeline-decoder-devices": _PIPELINE,
    "--pipeline-checkpoint": _PIPELINE,
    "--no-reshard-after-forward": _FSDP,
    "--fp32-reduce-scatter": _FSDP,
    "--cpu-offload": _FSDP,
    "--use-sharded-state": _FSDP,
    "--not-fsdp-flatten-parameters": _FSDP,
    "--min-params-to-wrap": _FSDP,
    "--layernorm-embedding": "RoBERTa always has the embedding LayerNorm (fairseq's roberta architectures turn it on anyway)",
    "--quant-noise-pq-block-size": "only used with --quant-noise-pq, which must stay 0",
    "--shorten-data-split-list": "only used with --shorten-method, which masked_lm supports only as none",
    "--load-checkpoint-on-all-dp-ranks": "a loading strategy; every process ends with the same weights either way",
    "--write-checkpoints-asynchronously": "checkpoints are written synchronously (atomically); the files are the same",
    "--save-async": "checkpoints are written synchronously (atomically); the files are the same",
    "--ema-decay": _EMA,
    "--ema-start-update": _EMA,
    "--ema-seed-model": _EMA,
    "--ema-update-freq": _EMA,
    "--ema-fp32": _EMA,
    "--sentence-avg": "fairseq's masked_lm, sentence_prediction and sentence_ranking criterions normalize by their own sample size and never read it",
    "--post-process": _GENERATION,
    "--remove-bpe": _GENERATION,
    "--quiet": _GENERATION,
    "--results-path": _GENERATION,
}

# flag -> (the values that are a no-op here, why other values are not supported).
DEFAULT_ONLY: dict[str, tuple[tuple[str, ...], str]] = {
    "--empty-cache-freq": (("0",), "the CUDA cache is never emptied on a schedule"),
    "--model-parallel-size": (("1",), _MODEL_PARALLEL),
    "--required-seq-len-multiple": (("1",), "batches are padded to their longest example only"),
    "--dataset-impl": (("mmap",), "roberta-preprocess writes, and the tasks read, fairseq's mmap format only"),
    "--validate-after-updates": (("0",), "not implemented: validation follows --validate-interval(-updates) from the start"),
    "--curriculum": (("0",), "not implemented: batches are shuffled from the first epoch"),
    "--distributed-rank": (("0",), "ranks come from torchrun (RANK) or from the processes roberta-train starts"),
    "--ddp-comm-hook": (("none",), "fp16 gradient compression is not implemented"),
    "--heartbeat-timeout": (("-1",), "no heartbeat watchdog is implemented"),
    "--zero-sharding": (("none",), "optimizer-state sharding (ZeRO) is not implemented"),
    "--activation-fn": (("gelu",), "the encoder uses gelu, RoBERTa's activation"),
    "--pooler-activation-fn": (("tanh",), "classification heads use tanh, RoBERTa's pooler activation"),
    "--encoder-layerdrop": (("0",), "LayerDrop is not implemented"),
    "--quant-noise-pq": (("0",), "quantization noise is not implemented"),
    "--quant-noise-scalar": (("0",), "quantization noise is not implemented"),
    "--mha-reg-scale-factor": (("0",), "adaptive pruning of attention heads is not implemented"),
    "--ffn-reg-scale-factor": (("0",), "adaptive pruning of feed-forward blocks is not implemented"),
    "--mha-heads-to-keep": (("-1",), "pruning attention heads is not implemented"),
    "--ffn-blocks-to-remove": (("-1",), "pruning feed-forward blocks is not implemented"),
    "--shorten-method": (("none",), "masked_lm does not shorten lines: it cuts the corpus into --tokens-per-sample blocks"),
    "--checkpoint-shard-count": (("1",), "checkpoints are one file"),
    "--stop-time-hours": (("0",), "not implemented: stop with --max-update or --max-epoch, or send SIGTERM"),
    "--model-overrides": (("{}",), "give the flags themselves: flags on the command line override the checkpoint's"),
}

_TRAINING_ONLY = "a training flag; fairseq-validate accepts it and never reads it"
VALIDATE_IGNORED: dict[str, str] = {
    flag: _TRAINING_ONLY for flag in (
        "--optimizer", "--lr-scheduler", "--warmup-updates", "--force-anneal", "--lr-shrink",
        "--train-subset", "--disable-validation", "--validate-interval", "--validate-interval-updates")
}

# Flags a component implements whose default or choices differ from fairseq's, and why.
DIFFERENCES: dict[str, str] = {
    "--task": "default masked_lm (fairseq: translation, not implemented here)",
    "--criterion": "default: the task's namesake (fairseq: cross_entropy, not implemented here)",
    "--optimizer": "default adam (fairseq: none, the flag is required)",
    "--distributed-world-size": "default: WORLD_SIZE under torchrun, else every visible GPU, else 1 "
                                "(fairseq: every visible GPU, computed when its parser is built)",
    "--ddp-backend": "fully_sharded and slowmo are not implemented",
    "--bpe": "masked_lm (for --mask-whole-words) accepts gpt2 and sentencepiece only",
    "--num-classes": "unset is None here, -1 in fairseq; both mean not given",
}

# Flags of the tables above that fairseq declares without a value (store_true).
SWITCHES: frozenset[str] = frozenset({
    "--azureml-logging", "--tpu", "--amp", "--profile", "--combine-valid-subsets", "--combine-val",
    "--grouped-shuffling", "--update-ordered-indices-seed", "--fix-batches-to-gpus",
    "--pipeline-model-parallel", "--encoder-normalize-before", "--spectral-norm-classification-head",
    "--load-checkpoint-heads", "--include-target-tokens", "--add-prev-output-tokens", "--store-ema",
    "--use-bmuf", "--skip-remainder-batch", "--on-cpu-convert-precision", "--reset-logging",
    "--suppress-crashes", "--use-plasma-view", "--ignore-unused-valid-subsets", "--distributed-no-spawn",
    "--gradient-as-bucket-view", "--fast-stat-sync", "--broadcast-buffers", "--no-reshard-after-forward",
    "--fp32-reduce-scatter", "--cpu-offload", "--use-sharded-state", "--not-fsdp-flatten-parameters",
    "--layernorm-embedding", "--load-checkpoint-on-all-dp-ranks", "--write-checkpoints-asynchronously",
    "--save-async", "--ema-fp32", "--sentence-avg", "--quiet", "--disable-validation",
})


def add_fairseq_flags(parser: argparse.ArgumentParser, *, train: bool) -> None:
    """Declare every listed flag that no component of this run declared, each answering with its reason.

    Call it last, once the chosen components have added their flags: a flag a component
    implements (e.g. --shorten-method for sentence_ranking) keeps that meaning.
    """
    tables: list[tuple[Mapping[str, object], type[_FairseqFlag]]] = [
        (UNSUPPORTED, _Unsupported), (IGNORED, _Ignored), (DEFAULT_ONLY, _DefaultOnly)]
    if not train:
        tables.append((VALIDATE_IGNORED, _Ignored))
    declared = parser._option_string_actions
    for table, action in tables:
        for flag, reason in table.items():
            if flag not in declared:
                parser.add_argument(flag, action=action, reason=reason, nargs=_nargs(flag, action),
                                   dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _nargs(flag: str, action: type[argparse.Action]) -> int | str:
    if flag in SWITCHES:
        return 0
    # An unsupported flag fails wherever it is, so it must not swallow the positional data path.
    return "?" if action is _Unsupported else 1


def compat_kind(action: argparse.Action) -> str | None:
    """"unsupported", "ignored" or "default-only" for a flag declared from these tables; None for a
    flag a component implements."""
    return getattr(action, "kind", None)


class _FairseqFlag(argparse.Action):
    kind: str

    def __init__(self, option_strings: Sequence[str], dest: str, *, reason: Any, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.reason = reason


class _Unsupported(_FairseqFlag):
    kind = "unsupported"

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise UserError(f"{option_string} is a fairseq flag this toolkit does not support: {self.reason}")


class _Ignored(_FairseqFlag):
    kind = "ignored"

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        warn_once(logger, f"ignoring {option_string}: {self.reason}")


class _DefaultOnly(_FairseqFlag):
    kind = "default-only"

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        allowed, reason = self.reason
        value = values[0]
        if not any(_same(value, ok) for ok in allowed):
            raise UserError(f"{option_string} {value} is a fairseq setting this toolkit does not support "
                            f"({reason}); drop the flag or give {option_string} {allowed[0]}")
        warn_once(logger, f"ignoring {option_string} {value}: that is the only behaviour here")


def _same(value: str, allowed: str) -> bool:
    """`0.0` is `0` and `1e0` is `1`: compare as numbers where both are numbers."""
    try:
        return float(value) == float(allowed)
    except ValueError:
        return value == allowed
