"""RoBERTa training toolkit: fairseq-compatible data, checkpoints and command lines."""
__version__ = "0.1.0"
