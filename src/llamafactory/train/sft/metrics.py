"""Scores for generated answers (BLEU-4, ROUGE-1/2/L, x100 as LlamaFactory reports them) and token accuracy.

BLEU-4 is computed over characters with NIST geometric smoothing (zero n-gram matches count as
1 / (2^k * n-grams)), ROUGE over words, with Chinese text segmented by jieba; both per example, then
averaged.
"""

import math
from collections import Counter
from typing import Any

import numpy as np

from ...extras.constants import IGNORE_INDEX


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(reference: list[str], hypothesis: list[str]) -> float:
    if not hypothesis or not reference:
        return 0.0
    log_precision, zeros = 0.0, 0
    for n in range(1, 5):
        hyp = _ngrams(hypothesis, n)
        total = sum(hyp.values())
        if total == 0:  # hypothesis shorter than n: the remaining orders add nothing
            return 0.0 if n == 1 else math.exp(log_precision / (n - 1)) * _brevity(reference, hypothesis)
        matches = sum(min(count, _ngrams(reference, n)[gram]) for gram, count in hyp.items())
        if matches == 0:
            zeros += 1
            precision = 1 / (2**zeros * total)
        else:
            precision = matches / total
        log_precision += math.log(precision)
    return math.exp(log_precision / 4) * _brevity(reference, hypothesis)


def _brevity(reference: list[str], hypothesis: list[str]) -> float:
    if len(hypothesis) >= len(reference):
        return 1.0
    return math.exp(1 - len(reference) / len(hypothesis))


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if overlap == 0 or hyp_total == 0 or ref_total == 0:
        return 0.0
    precision, recall = overlap / hyp_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(reference: list[str], hypothesis: list[str], n: int) -> float:
    ref, hyp = _ngrams(reference, n), _ngrams(hypothesis, n)
    return _f1(sum((ref & hyp).values()), sum(hyp.values()), sum(ref.values()))


def rouge_l(reference: list[str], hypothesis: list[str]) -> float:
    if not reference or not hypothesis:
        return 0.0
    previous = [0] * (len(hypothesis) + 1)
    for r in reference:
        current = [0]
        for j, h in enumerate(hypothesis):
            current.append(previous[j] + 1 if r == h else max(previous[j + 1], current[j]))
        previous = current
    return _f1(previous[-1], len(hypothesis), len(reference))


def _words(text: str) -> list[str]:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.lcut(text) if w.strip()]


def similarity_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    scores: dict[str, list[float]] = {"bleu-4": [], "rouge-1": [], "rouge-2": [], "rouge-l": []}
    for pred, ref in zip(predictions, references):
        hyp_words, ref_words = _words(pred), _words(ref)
        scores["bleu-4"].append(bleu4(list(ref), list(pred)))
        scores["rouge-1"].append(rouge_n(ref_words, hyp_words, 1))
        scores["rouge-2"].append(rouge_n(ref_words, hyp_words, 2))
        scores["rouge-l"].append(rouge_l(ref_words, hyp_words))
    return {f"predict_{k}": round(100 * float(np.mean(v)), 4) if v else 0.0 for k, v in scores.items()}


def argmax_logits(logits: Any, labels: Any) -> Any:
    """Keep only the predicted ids during evaluation, so accuracy never holds whole logit tensors."""
    if isinstance(logits, (list, tuple)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy(eval_prediction: Any) -> dict[str, float]:
    predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
    predictions, labels = np.asarray(predictions)[:, :-1], np.asarray(labels)[:, 1:]  # logits at t predict t+1
    mask = labels != IGNORE_INDEX
    correct = (predictions == labels) & mask
    return {"accuracy": float(correct.sum() / max(mask.sum(), 1))}
