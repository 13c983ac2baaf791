"""`roberta-convert --init ... --to fairseq|fairseq-2019`, read by the real fairseq 0.12.2 (opt-in: set
FAIRSEQ_PYTHON; tests/test_fairseq_interop.py says how to build its venv).

fairseq loads the fresh model through `RobertaModel.from_pretrained` and gives our masked-LM
logits, and the weights it loads are those fairseq's own `task.build_model` draws under the same
seed: the fresh model is the one `fairseq-train --seed S` would start from.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from roberta.cli import convert
from roberta.models import RobertaModel
from roberta.models.pretrained import load_pretrained
from roberta.models.weights import load_model_weights
from support.fairseq_reference import (FAIRSEQ_ENV, FAIRSEQ_PYTHON, require_fairseq_0_12_2,
                                       skip_module_without_fairseq)
from support.train_args import model_size_flags

skip_module_without_fairseq()

FORMATS = ("fairseq", "fairseq-2019")
SEED = 5
TOLERANCE = 1e-5

FAIRSEQ_READS = '''
import json, os, re, sys, torch
from fairseq.models.roberta import RobertaModel
# 0.12.2's layers hold copies for its BetterTransformer path: zeros when built, filled when loaded.
COPIES = re.compile(r"layers[.][0-9]+[.](in_proj|out_proj|fc1|fc2)_(weight|bias)$")
def is_weight(key):  # not a copy, nor the version buffer (which says how a file's keys were named)
    return not COPIES.search(key) and not key.endswith(".version")
jobs, data, seed, rows_path, out_path = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = torch.load(rows_path)
out = {}
for name, path in jobs.items():
    hub = RobertaModel.from_pretrained(os.path.dirname(path), checkpoint_file=os.path.basename(path),
                                       data_name_or_path=data, bpe=None).eval()
    with torch.no_grad():
        out[name + "/lm"] = hub.model(rows)[0]
    torch.manual_seed(seed)  # what fairseq-train's utils.set_torch_seed does before building
    theirs = hub.task.build_model(hub.cfg.model).state_dict()
    loaded = hub.model.state_dict()
    weights = [key for key in theirs if is_weight(key)]
    out[name + "/differ"] = [key for key in weights if key not in loaded or not torch.equal(theirs[key], loaded[key])]
    out[name + "/compared"] = len(weights)
torch.save({key: value for key, value in out.items() if key.endswith("/lm")}, out_path)
print(json.dumps({key: value for key, value in out.items() if not key.endswith("/lm")}))
'''


@pytest.fixture(scope="module", autouse=True)
def fairseq_0_12_2() -> None:
    require_fairseq_0_12_2()


def our_logits(path: Path, rows: torch.Tensor) -> torch.Tensor:
    pretrained = load_pretrained(path)
    model = RobertaModel(pretrained.config)
    load_model_weights(model, pretrained.state_dict, path=path)
    with torch.no_grad():
        return model.eval()(rows)[0]


def test_fairseq_loads_the_fresh_model_and_would_have_drawn_the_same_weights(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dict.txt").write_text("".join(f"word{index} {500 - index}\n" for index in range(120)), encoding="utf-8")
    exports = {}
    for target in FORMATS:
        exports[target] = tmp_path / target / "model.pt"
        convert.main(["--init", "roberta_base", "--dict", str(data / "dict.txt"),
                      *model_size_flags(layers=2, embed_dim=32, ffn_dim=64, heads=2), "--max-positions", "64",
                      "--seed", str(SEED), str(exports[target]), "--to", target])
    rows = torch.randint(4, 124, (3, 12), generator=torch.Generator().manual_seed(7))
    rows[:, 0], rows[:, -1], rows[1, 8:] = 0, 2, 1
    torch.save(rows, tmp_path / "rows.pt")
    (tmp_path / "reads.py").write_text(FAIRSEQ_READS)
    result = subprocess.run([FAIRSEQ_PYTHON, str(tmp_path / "reads.py"),
                             json.dumps({name: str(path) for name, path in exports.items()}), str(data), str(SEED),
                             str(tmp_path / "rows.pt"), str(tmp_path / "out.pt")],
                            capture_output=True, text=True, cwd=tmp_path, env=FAIRSEQ_ENV, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    differ = json.loads(result.stdout.strip().splitlines()[-1])
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)
    real = rows.ne(1)
    for target, path in exports.items():
        assert differ[f"{target}/differ"] == [], target
        assert differ[f"{target}/compared"] >= len(load_pretrained(path).state_dict), target
        diff = (theirs[f"{target}/lm"][real] - our_logits(path, rows)[real]).abs().max().item()
        assert diff < TOLERANCE, (target, diff)
