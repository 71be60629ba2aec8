"""Accuracy per subject and per category, the printed tables, and results.json / results.log.

Accuracies are percentages. A category's accuracy is the share of its questions answered correctly (so a
subject counts by its number of questions, as in MMLU's reports); `Average` is the share over all questions.
"""

import json
import os
from typing import Any

from ..extras.errors import UserError
from .scorer import SubjectScores
from .tasks import AVERAGE, CATEGORIES, LETTERS, Task


def _accuracy(correct: int, total: int) -> float:
    return round(100 * correct / total, 4) if total else 0.0


def summarize(task: Task, scores: dict[str, SubjectScores]) -> dict[str, Any]:
    """{"subjects": {key: {...}}, "categories": {category: {...}, ..., "Average": {...}}}."""
    subjects: dict[str, Any] = {}
    totals: dict[str, list[int]] = {}  # category -> [subjects, correct, questions]
    for subject in task.subjects:
        result = scores[subject.key]
        correct, total = sum(result.correct), len(result.correct)
        subjects[subject.key] = {"name": subject.name, "category": subject.category, "correct": correct,
                                 "total": total, "accuracy": _accuracy(correct, total),
                                 "predictions": "".join(LETTERS[p] for p in result.predictions)}
        for category in (subject.category, AVERAGE):
            counts = totals.setdefault(category, [0, 0, 0])
            counts[0], counts[1], counts[2] = counts[0] + 1, counts[1] + correct, counts[2] + total
    order = [c for c in CATEGORIES if c in totals]
    order += sorted(c for c in totals if c not in CATEGORIES and c != AVERAGE) + [AVERAGE]
    categories = {c: {"subjects": totals[c][0], "correct": totals[c][1], "total": totals[c][2],
                      "accuracy": _accuracy(totals[c][1], totals[c][2])} for c in order}
    return {"subjects": subjects, "categories": categories}


def delta(model: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of the model minus that of the base, per category and per subject (percentage points)."""
    return {part: {key: round(model[part][key]["accuracy"] - base[part][key]["accuracy"], 4) for key in model[part]}
            for part in ("categories", "subjects")}


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """Text columns left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) if i < text_columns else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _columns(part: str, key: str, results: dict[str, Any], base: dict[str, Any] | None) -> list[str]:
    accuracy = results[part][key]["accuracy"]
    if base is None:
        return [f"{accuracy:.2f}"]
    before = base[part][key]["accuracy"]
    return [f"{before:.2f}", f"{accuracy:.2f}", f"{accuracy - before:+.2f}"]


def category_table(results: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    scores = ["Accuracy"] if base is None else ["Base", "Adapter", "Delta"]
    rows = [[name, str(entry["subjects"]), str(entry["total"]), *_columns("categories", name, results, base)]
            for name, entry in results["categories"].items()]
    return _table(["Category", "Subjects", "Questions", *scores], rows)


def subject_table(results: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    scores = ["Accuracy"] if base is None else ["Base", "Adapter", "Delta"]
    rows = [[key, entry["category"], str(entry["total"]), *_columns("subjects", key, results, base)]
            for key, entry in results["subjects"].items()]
    return _table(["Subject", "Category", "Questions", *scores], rows, text_columns=2)


def headline(report: dict[str, Any]) -> str:
    config, average = report["config"], report["results"]["categories"][AVERAGE]
    shots = f"{config['n_shot']}-shot"
    return (f"{config['task']} ({config['lang']}, {shots}): {average['subjects']} subjects, {average['total']} "
            f"questions; model {config['model_name_or_path']}"
            + (f" + adapter {config['adapter_name_or_path']}" if config.get("adapter_name_or_path") else ""))


def render(report: dict[str, Any], with_subjects: bool = False) -> str:
    base = report.get("base")
    text = headline(report) + "\n\n" + category_table(report["results"], base)
    if with_subjects:
        text += "\n\n" + subject_table(report["results"], base)
    return text


def save(report: dict[str, Any], save_dir: str) -> list[str]:
    return write_results(save_dir, json.dumps(report, ensure_ascii=False, indent=2) + "\n",
                         render(report, with_subjects=True) + "\n")


def write_results(save_dir: str, results_json: str, results_log: str) -> list[str]:
    """Write results.json and results.log into save_dir (created by get_eval_args before scoring), never
    over a file: one that appeared while this run was scoring (another run with the same save_dir) stops it
    with an error, and neither file of this run is left behind."""
    paths = [os.path.join(save_dir, "results.json"), os.path.join(save_dir, "results.log")]
    written: list[str] = []
    try:
        for path, text in zip(paths, (results_json, results_log)):
            with open(path, "x", encoding="utf-8") as f:
                written.append(path)
                f.write(text)
    except FileExistsError as err:
        for path in written:
            os.remove(path)
        raise UserError(f"`{err.filename}` appeared while this run was scoring (another run with the same "
                        "save_dir?); results were not saved, so nothing is overwritten: the table printed above "
                        "is this run's. Give each run its own `save_dir`.") from err
    except OSError as err:
        for path in written:
            os.remove(path)
        raise UserError(f"cannot write `{err.filename or save_dir}`: {err.strerror}; results were not saved (the "
                        "table printed above is this run's)") from err
    return paths
