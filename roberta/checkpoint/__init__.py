"""Checkpoints: `files` (names, safe reading, the stored layout), `restore` (which file a run
starts from and what of it is restored) and `manager` (when and under which names to save,
retention, best score, early stopping).

Names and keys follow fairseq (`checkpoint_last.pt`, `checkpoint{E}.pt`, `checkpoint_{E}_{U}.pt`,
`checkpoint_best.pt`, `optimizer_history`, `extra_state`, ...) so runs and tools written for
fairseq keep working. Where fairseq was unsafe we are strict: a missing explicit --restore-file is
an error, every name is created atomically, loading never runs pickled code unless --unsafe-load
is given, and a fine-tuning run never inherits its pretraining run's best score.
"""
