"""Every flag of fairseq 0.12.2's help texts is accepted with fairseq's meaning and default, or is
listed in `roberta.cli.fairseq_flags` with a reason; docs/fairseq-flags.md is generated from both.

The help texts are the reference fixtures of the shared folder (skipped when absent). fairseq's
help prints no defaults, so FAIRSEQ_DEFAULTS holds them as fairseq 0.12.2's parser has them;
the opt-in test at the end (FAIRSEQ_PYTHON, see tests/test_fairseq_interop.py) re-reads them
from fairseq itself.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from roberta.cli import fairseq_flags
from roberta.cli import options
from roberta.errors import UserError
from roberta.optim.options import parse_float_tuple

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fairseq_flag_table", REPO / "scripts" / "fairseq_flag_table.py")
flag_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flag_table)

our_parser = functools.lru_cache(maxsize=None)(flag_table.our_parser)

# "ARCH": fairseq leaves the flag unset and the --arch preset fills it in (ours: None, then the preset).
FAIRSEQ_DEFAULTS: dict[str, object] = {
    '--activation-dropout': 'ARCH', '--adam-betas': [0.9, 0.999], '--adam-eps': 1e-08,
    '--attention-dropout': 'ARCH', '--batch-size': None, '--batch-size-valid': None,
    '--best-checkpoint-metric': 'loss', '--bf16': False, '--bpe': None, '--checkpoint-suffix': '',
    '--classification-head-name': 'sentence_classification_head', '--clip-norm': 0.0, '--cpu': False,
    '--ddp-backend': 'pytorch_ddp', '--disable-validation': False, '--distributed-init-method': None,
    '--distributed-world-size': 1, '--dropout': 'ARCH', '--encoder-attention-heads': 'ARCH',
    '--encoder-embed-dim': 'ARCH', '--encoder-ffn-embed-dim': 'ARCH', '--encoder-layers': 'ARCH',
    '--end-learning-rate': 0.0, '--find-unused-parameters': False, '--finetune-from-model': None,
    '--force-anneal': None, '--fp16': False, '--fp16-adam-stats': False, '--fp16-init-scale': 128,
    '--fp16-no-flatten-grads': False, '--fp16-scale-tolerance': 0.0, '--fp16-scale-window': None,
    '--freq-weighted-replacement': False, '--init-token': None, '--keep-best-checkpoints': -1,
    '--keep-interval-updates': -1, '--keep-interval-updates-pattern': -1, '--keep-last-epochs': -1,
    '--leave-unmasked-prob': 0.1, '--log-file': None, '--log-format': None, '--log-interval': 100,
    '--lr': '0.25', '--lr-shrink': 0.1, '--mask-multiple-length': 1, '--mask-prob': 0.15, '--mask-stdev': 0.0,
    '--mask-whole-words': False, '--max-epoch': 0, '--max-option-length': None, '--max-positions': 'ARCH',
    '--max-tokens': None, '--max-tokens-valid': None, '--max-update': 0,
    '--maximize-best-checkpoint-metric': False, '--memory-efficient-bf16': False,
    '--memory-efficient-fp16': False, '--min-loss-scale': 0.0001, '--no-epoch-checkpoints': False,
    '--no-last-checkpoints': False, '--no-progress-bar': False, '--no-save': False,
    '--no-save-optimizer-state': False, '--no-shuffle': False, '--num-workers': 1,
    '--optimizer-overrides': '{}', '--path': None, '--patience': -1, '--pooler-dropout': 'ARCH',
    '--power': 1.0, '--random-token-prob': 0.1, '--ranking-head-name': 'sentence_classification_head',
    '--regression-target': False, '--required-batch-size-multiple': 8, '--reset-dataloader': False,
    '--reset-lr-scheduler': False, '--reset-meters': False, '--reset-optimizer': False,
    '--restore-file': 'checkpoint_last.pt', '--sample-break-mode': 'none', '--save-dir': 'checkpoints',
    '--save-interval': 1, '--save-interval-updates': 0, '--save-predictions': None, '--seed': 1,
    '--separator-token': None, '--shorten-data-split-list': '', '--shorten-method': 'none',
    '--skip-invalid-size-inputs-valid-test': False, '--stop-min-lr': -1.0, '--tensorboard-logdir': None,
    '--threshold-loss-scale': None, '--tokens-per-sample': 1024, '--total-num-update': None,
    '--train-subset': 'train', '--untie-weights-roberta': 'ARCH', '--update-freq': '1',
    '--use-old-adam': False, '--user-dir': None, '--valid-subset': 'valid', '--validate-interval': 1,
    '--validate-interval-updates': 0, '--warmup-updates': 0, '--weight-decay': 0.0,
}

# The component choices have no default to compare (--task, --criterion, --optimizer: see DIFFERENCES).
CHOICE_FLAGS = ("--task", "--criterion", "--arch", "--optimizer", "--lr-scheduler")
TRAIN = ["data", "--arch", "roberta_base", "--batch-size", "8"]


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> Path:
    path = shared_data.parent / "reference" / "fairseq-0.12.2"
    if not (path / "help").is_dir():
        pytest.skip(f"fairseq's help texts not found in {path / 'help'}")
    return path


@pytest.mark.parametrize("stem", list(flag_table.CONFIGS))
def test_every_fairseq_flag_is_accepted_or_listed_with_a_reason(reference: Path, stem: str) -> None:
    flags = flag_table.config_flags(reference, stem)
    assert len(flags) > 100, "the help text was not parsed"
    parser = our_parser(stem)
    missing = sorted(flag for flag, alias in flags.items() if flag_table.status(parser, flag, alias)[0] is None)
    assert not missing, f"neither accepted nor in roberta/cli/fairseq_flags.py: {missing}"


def _default_cases() -> list:
    cases = []
    for flag, default in FAIRSEQ_DEFAULTS.items():
        if flag in fairseq_flags.DIFFERENCES:
            continue
        cases.append(pytest.param(flag, default, id=flag))
    return cases


@pytest.mark.parametrize(("flag", "fairseq_default"), _default_cases())
def test_accepted_flags_default_as_in_fairseq(flag: str, fairseq_default: object) -> None:
    actions = [our_parser(stem)._option_string_actions.get(flag) for stem in flag_table.CONFIGS]
    action = next(action for action in actions if action is not None and fairseq_flags.compat_kind(action) is None)
    ours = action.default
    if fairseq_default == "ARCH":
        assert ours is None, f"{flag}: the --arch preset must fill it in, as in fairseq"
        return
    if isinstance(ours, str) and action.type is not None and not isinstance(fairseq_default, str):
        ours = action.type(ours)
    if flag == "--adam-betas":
        ours = list(parse_float_tuple(ours, flag, 2))
    assert ours == fairseq_default or (isinstance(ours, float) and ours == pytest.approx(fairseq_default)), (
        f"{flag}: ours {ours!r}, fairseq {fairseq_default!r}")


def test_every_accepted_fairseq_flag_has_a_known_default(reference: Path) -> None:
    unknown = set()
    for stem in flag_table.CONFIGS:
        parser = our_parser(stem)
        for flag, alias in flag_table.config_flags(reference, stem).items():
            if flag_table.status(parser, flag, alias)[0] == "same":
                unknown.add(flag)
    unknown -= set(FAIRSEQ_DEFAULTS) | set(fairseq_flags.DIFFERENCES) | set(CHOICE_FLAGS) | {"-a"}
    assert not unknown, f"add fairseq's default to FAIRSEQ_DEFAULTS: {sorted(unknown)}"


def test_the_lists_name_only_fairseq_flags_and_each_once(reference: Path) -> None:
    known = set()
    for stem in flag_table.CONFIGS:
        known |= set(flag_table.config_flags(reference, stem))
    tables = [fairseq_flags.UNSUPPORTED, fairseq_flags.IGNORED, fairseq_flags.DEFAULT_ONLY]
    listed = [flag for table in tables for flag in table]
    assert len(listed) == len(set(listed)), "a flag is in two tables"
    everything = set(listed) | set(fairseq_flags.VALIDATE_IGNORED) | set(fairseq_flags.DIFFERENCES)
    assert everything <= known, sorted(everything - known)
    assert fairseq_flags.SWITCHES <= everything | set(fairseq_flags.VALIDATE_IGNORED)


def test_the_flag_table_document_is_up_to_date(reference: Path) -> None:
    current = (REPO / "docs" / "fairseq-flags.md").read_text(encoding="utf-8")
    assert current == flag_table.render(reference), "run scripts/fairseq_flag_table.py"


def test_an_unsupported_flag_is_one_line_naming_it_and_why() -> None:
    for argv in (TRAIN + ["--tpu"], ["--tpu"] + TRAIN, TRAIN + ["--distributed-port", "1234"]):
        with pytest.raises(UserError, match=r"^--(tpu|distributed-port) is a fairseq flag this toolkit does "
                                            r"not support: .+") as error:
            options.parse_args(argv, train=True)
        assert "\n" not in str(error.value)


def test_a_harmless_flag_is_accepted_and_said_once(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        args = options.parse_args(TRAIN + ["--sentence-avg", "--bucket-cap-mb", "50", "--sentence-avg"], train=True)
    assert args.data == "data" and not hasattr(args, "sentence_avg")
    ignored = [record.getMessage() for record in caplog.records if "ignoring --sentence-avg" in record.getMessage()]
    assert len(ignored) == 1 and "sample size" in ignored[0]
    assert any("ignoring --bucket-cap-mb" in record.getMessage() for record in caplog.records)


def test_a_default_only_flag_accepts_its_no_op_value_only() -> None:
    options.parse_args(TRAIN + ["--dataset-impl", "mmap", "--encoder-layerdrop", "0.0", "--pad", "1"], train=True)
    with pytest.raises(UserError, match="--dataset-impl lazy is a fairseq setting .* give --dataset-impl mmap"):
        options.parse_args(TRAIN + ["--dataset-impl", "lazy"], train=True)
    with pytest.raises(UserError, match="--encoder-layerdrop 0.1 .*LayerDrop"):
        options.parse_args(TRAIN + ["--encoder-layerdrop", "0.1"], train=True)


def test_validate_accepts_the_training_flags_fairseq_validate_ignores() -> None:
    args = options.parse_args(["data", "--path", "x.pt", "--batch-size", "1", "--optimizer", "adam",
                               "--lr-scheduler", "fixed", "--warmup-updates", "5", "--disable-validation"],
                              train=False)
    assert args.data == "data" and not hasattr(args, "optimizer")
    with pytest.raises(UserError, match="--save-predictions is a fairseq flag"):
        options.parse_args(TRAIN + ["--task", "sentence_ranking", "--save-predictions", "p.txt"], train=True)


def test_max_sentences_valid_is_batch_size_valid() -> None:
    assert options.parse_args(TRAIN + ["--max-sentences-valid", "3"], train=True).batch_size_valid == 3
    assert options.parse_args(["data", "--path", "x.pt", "--batch-size", "1", "--max-sentences-valid", "2"],
                              train=False).batch_size_valid == 2


def test_masked_lm_max_positions_defaults_to_tokens_per_sample() -> None:
    import tasks  # noqa: F401  registers the tasks
    from roberta.cli.assembly import assemble_training, model_arch
    from roberta.models import build_model_config

    def model_config(argv: list[str]):
        settings = assemble_training(options.parse_args(TRAIN + argv, train=True))
        return build_model_config(model_arch(settings.arch, settings.block_size), 100)

    assert model_config(["--task", "masked_lm", "--tokens-per-sample", "64"]).max_positions == 64
    assert model_config(["--tokens-per-sample", "64", "--max-positions", "128"]).max_positions == 128
    config = model_config(["--task", "sentence_ranking", "--num-classes", "4"])
    # fairseq's base_architecture values.
    assert (config.max_positions, config.dropout, config.attention_dropout, config.activation_dropout,
            config.pooler_dropout) == (512, 0.1, 0.1, 0.0, 0.0)


FAIRSEQ_PARSER = '''
import json, sys
from fairseq import options
which, argv = sys.argv[1], sys.argv[2:]
parser = options.get_training_parser() if which == "train" else options.get_validation_parser()
options.parse_args_and_arch(parser, input_args=argv, parse_known=True)
print(json.dumps({a.option_strings[0]: a.default for a in parser._actions if a.option_strings},
                 default=repr))
'''


@pytest.mark.skipif(not os.environ.get("FAIRSEQ_PYTHON"), reason="FAIRSEQ_PYTHON is not set")
def test_fairseq_defaults_are_fairseqs_own(tmp_path: Path) -> None:
    seen: dict[str, object] = {}
    for argv, train in flag_table.CONFIGS.values():
        command = [os.environ["FAIRSEQ_PYTHON"], "-c", FAIRSEQ_PARSER, "train" if train else "validate", *argv]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=True,
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        seen.update(json.loads(result.stdout.splitlines()[-1]))
    for flag, default in FAIRSEQ_DEFAULTS.items():
        assert seen[flag] == ("==SUPPRESS==" if default == "ARCH" else default), flag
