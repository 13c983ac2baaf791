"""The RoBERTa model: config, architecture presets (registered in `ARCHS`), encoder and heads."""
from __future__ import annotations

from roberta.models.architectures import add_model_args, build_model_config
from roberta.models.config import ModelConfig
from roberta.models.roberta import RobertaModel

__all__ = ["ModelConfig", "RobertaModel", "add_model_args", "build_model_config"]
