"""Evaluation: `lmf eval` (multiple-choice benchmarks, optionally through lm-evaluation-harness) and the
BLEU / ROUGE scoring of generated predictions (metrics.py, scripts/eval_bleu_rouge.py)."""
