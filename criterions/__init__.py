"""Built-in criterions: importing the package registers each module listed here (`classification`
holds what two of them share and registers nothing)."""
from criterions import masked_lm, sentence_prediction, sentence_ranking, squad2

__all__ = ["masked_lm", "sentence_prediction", "sentence_ranking", "squad2"]

ROBERTA_PLUGIN_PACKAGE = True
