"""RoBERTa training toolkit: fairseq-compatible data, checkpoints and command lines.

`roberta.from_pretrained(model_dir)` returns a `roberta.hub.RobertaHubInterface`.
"""
from __future__ import annotations

__version__ = "0.1.0"

_HUB_NAMES = ("from_pretrained", "RobertaHubInterface")


def __getattr__(name: str) -> object:
    # The hub interface pulls in torch; importing it on first use keeps `import roberta` light.
    if name in _HUB_NAMES:
        from roberta import hub
        return getattr(hub, name)
    raise AttributeError(f"module 'roberta' has no attribute {name!r}")
