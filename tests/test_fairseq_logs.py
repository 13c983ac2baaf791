"""Log fields as fairseq 0.12.2 names and counts them, checked against the logs it wrote
(`reference/fairseq-0.12.2/{mlm,race}` in the shared folder, where present)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from criterions.masked_lm import MaskedLMCriterion
from criterions.sentence_prediction import SentencePredictionCriterion
from criterions.sentence_ranking import SentenceRankingCriterion
from roberta.cli import validate
from roberta.data.multiple_choice import MultipleChoiceDataset
from roberta.logging import format_stat


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> Path:
    path = shared_data.parent / "reference" / "fairseq-0.12.2"
    if not path.is_dir():
        pytest.skip(f"fairseq's reference outputs not found in {path}")
    return path


def _pipe_fields(line: str) -> dict[str, str]:
    """`valid on 'x' subset | loss 2 | nll_loss 0.008 | ...` as {name: text}, in order."""
    return dict(part.split(" ", 1) for part in line.split(" | ")[1:])


def test_multiple_choice_ntokens_counts_the_first_option_only() -> None:
    sizes = np.array([3, 2])
    dataset = MultipleChoiceDataset(SimpleNamespace(sizes=sizes), [SimpleNamespace(sizes=sizes)] * 4, None, pad_idx=1)
    samples = [{"id": 0, "options": [torch.arange(n) for n in (5, 7, 6, 9)]},
               {"id": 1, "options": [torch.arange(n) for n in (4, 3, 8, 2)]}]
    batch = dataset.collater(samples)
    # fairseq's sentence_ranking: ntokens = tokens of net_input1 (the first option), unpadded.
    assert batch["ntokens"] == 5 + 4
    assert batch["net_input"]["src_lengths"].sum() == 44


@pytest.mark.parametrize("criterion", [SentenceRankingCriterion, SentencePredictionCriterion])
def test_classification_logs_nll_loss_per_token_between_loss_and_accuracy(criterion) -> None:
    # RACE valid in race/validate.txt: 17 examples, 4028 tokens of first options, loss 2 bits each.
    totals = {"loss": 17 * 2 * math.log(2), "ntokens": 4028, "nsentences": 17, "sample_size": 17, "ncorrect": 5}
    metrics = criterion.reduce_metrics(totals)
    assert list(metrics) == ["loss", "nll_loss", "accuracy"]
    assert [format_stat(key, value) for key, value in metrics.items()] == ["2", "0.008", "29.4"]
    # fairseq logs nll_loss only when the sample size differs from ntokens.
    assert "nll_loss" not in criterion.reduce_metrics({**totals, "ntokens": 17})


def test_masked_lm_logs_no_nll_loss() -> None:
    metrics = MaskedLMCriterion.reduce_metrics({"loss": 100.0, "ntokens": 512, "nsentences": 8, "sample_size": 70})
    assert list(metrics) == ["loss", "ppl"]


def test_race_validate_line_fields_match_fairseqs_names(reference: Path) -> None:
    line = next(line for line in (reference / "race" / "validate.txt").read_text().splitlines()
                if "valid on 'valid' subset" in line)
    fields = _pipe_fields(line.split(" | valid | ", 1)[1])
    totals = {"loss": 17 * float(fields["loss"]) * math.log(2), "ntokens": float(fields["wpb"]),
              "nsentences": int(fields["bsz"]), "sample_size": int(fields["bsz"]), "ncorrect": 5}
    ours = {key: format_stat(key, value) for key, value in SentenceRankingCriterion.reduce_metrics(totals).items()}
    assert ours == {key: fields[key] for key in ("loss", "nll_loss", "accuracy")}


def test_validate_names_no_epoch_like_fairseq_validate(reference: Path, capfd) -> None:
    mlm = reference / "mlm"
    validate.main([str(mlm / "data-bin"), "--path", str(mlm / "checkpoint_last.pt"), "--task", "masked_lm",
                   "--valid-subset", "valid", "--cpu", "--seed", "1", "--max-tokens", "4096", "--log-format", "simple"])
    ours = next(line for line in capfd.readouterr().err.splitlines() if "| valid | " in line).split(" | valid | ", 1)[1]
    theirs = next(line for line in (mlm / "validate.txt").read_text().splitlines()
                  if "valid on 'valid' subset" in line).split(" | valid | ", 1)[1]
    assert re.match(r"valid on 'valid' subset \| loss 11\.111 \| ppl 2211\.44 \|", theirs)
    assert ours.startswith(theirs[:theirs.index(" | wps")]), (ours, theirs)
