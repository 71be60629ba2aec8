"""BLEU-4 and ROUGE-1/2/L of a `generated_predictions.jsonl` (what `lmf train` with do_predict writes).

The numbers are the ones `lmf train` puts in predict_results.json, from the same functions
(train/sft/metrics.py): BLEU-4 over characters with NIST geometric smoothing, ROUGE F1 over words with
Chinese segmented by jieba, each per example, then averaged, x100. Used by scripts/eval_bleu_rouge.py.
"""

import json
import os
from typing import Any

from ..extras.errors import UserError
from ..train.sft.metrics import bleu4, rouge_l, rouge_n, similarity_scores  # noqa: F401 - re-exported for callers


def read_predictions(path: str) -> tuple[list[str], list[str]]:
    """(predictions, labels) from a JSON-lines file whose lines hold `predict` and `label`."""
    if not os.path.isfile(path):
        raise UserError(f"`{path}` not found (lmf train with do_predict writes generated_predictions.jsonl in "
                        "output_dir)")
    predictions, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: JSON syntax error: {err.msg}") from err
            if not isinstance(row, dict) or not isinstance(row.get("predict"), str) \
                    or not isinstance(row.get("label"), str):
                raise UserError(f"{path}:{number}: expected an object with string `predict` and `label` (and "
                                "`prompt`), as generated_predictions.jsonl holds")
            predictions.append(row["predict"])
            labels.append(row["label"])
    if not predictions:
        raise UserError(f"{path}: no predictions")
    return predictions, labels


def score_predictions(path: str) -> dict[str, Any]:
    """{"bleu-4": ..., "rouge-1": ..., "rouge-2": ..., "rouge-l": ..., "samples": n}; scores are x100."""
    predictions, labels = read_predictions(path)
    scores = similarity_scores(predictions, labels)
    result: dict[str, Any] = {key.removeprefix("predict_"): value for key, value in scores.items()}
    result["samples"] = len(predictions)
    return result


def default_output(path: str) -> str:
    """generated_predictions.jsonl -> generated_predictions_scores.json, beside it."""
    stem, _ = os.path.splitext(path)
    return f"{stem}_scores.json"


def write_scores(scores: dict[str, Any], output: str, overwrite: bool = False) -> str:
    if os.path.exists(output) and not overwrite:
        raise UserError(f"`{output}` already exists; pass --overwrite to replace it, or --output to write elsewhere")
    with open(output, "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=2)
        f.write("\n")
    return output
