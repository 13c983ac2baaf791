"""Built-in tasks: importing the package registers each module listed here."""
from tasks import masked_lm, sentence_prediction, sentence_ranking, squad2

__all__ = ["masked_lm", "sentence_prediction", "sentence_ranking", "squad2"]

ROBERTA_PLUGIN_PACKAGE = True
