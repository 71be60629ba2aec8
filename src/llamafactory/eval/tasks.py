"""Multiple-choice task folders (MMLU / CMMLU / C-Eval style) and the prompts built from them.

A task is a folder `<task_dir>/<name>/` holding `mapping.json` (subject -> {"name", "category"}) and one file
per subject and split. `task: <name>_<split>` picks the folder and the split to score; the dev split gives the
few-shot examples. Accepted file places, for subject `anatomy` and split `test` (the first found wins):

    <name>/test/anatomy.csv            <name>/test/anatomy_test.csv
    <name>/data/test/anatomy_test.csv  <name>/data/test/anatomy.csv

with `.json` (a list of objects) or `.jsonl` (one object per line) in place of `.csv`. The split `val` may be
named `val` or `validation`, and `dev` may be named `dev` or `train` (`mmlu_validation` reads `val/`).

Files missing from the folder are looked for, at the same places, inside `<name>/<name>.zip` (or the folder's
only .zip), read without unpacking: LlamaFactory's evaluation folders (`mmlu/{mapping.json, mmlu.py,
mmlu.zip}`, likewise cmmlu and ceval) work as they are. Members may also sit under one top folder in the zip.

Each question has the text, two or more options under the letters A, B, C, ... and the answer letter. A CSV
either has a header naming `question`, `A`, `B`, ..., `answer` (any case; other columns such as an id or an
explanation are ignored: CMMLU and C-Eval files load as they are) or no header at all, in the order
question, options..., answer (the original MMLU files). JSON objects use the same keys; there the answer may
also be a 0-based option index (as in MMLU exported from the hub).
"""

import contextlib
import csv
import io
import json
import os
import random
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from ..extras.errors import ConfigError
from ..extras.logging import get_logger

logger = get_logger(__name__)

LETTERS = "ABCDEFGHIJ"
CATEGORIES = ("STEM", "Social Sciences", "Humanities", "Other")  # reported first, in this order
AVERAGE = "Average"
EXTENSIONS = ("csv", "json", "jsonl")
# split named in `task` -> folder / file names it may have on disk
SPLITS = {"test": ("test",), "val": ("val", "validation"), "validation": ("val", "validation"),
          "dev": ("dev", "train"), "train": ("dev", "train")}


@dataclass(frozen=True)
class Question:
    question: str
    options: tuple[str, ...]  # option texts, in letter order
    answer: int  # index of the right option

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]


@dataclass
class Subject:
    key: str  # the file name stem, e.g. high_school_physics
    name: str  # how prompts call it, e.g. "high school physics"
    category: str
    questions: list[Question]  # the scored split
    shots: list[Question]  # few-shot examples from the dev split


@dataclass
class Task:
    name: str
    split: str
    folder: str
    subjects: list[Subject]

    @property
    def num_options(self) -> int:
        return max(len(q.options) for s in self.subjects for q in s.questions + s.shots)


# ----------------------------------------------------------------------------------------------- loading
def parse_task(task: str) -> tuple[str, str]:
    """`mmlu_test` -> ("mmlu", "test"); the split is what follows the last underscore."""
    name, sep, split = task.rpartition("_")
    if not sep or not name or split not in SPLITS:
        raise ConfigError(f"`task` is a task folder name plus its split, e.g. mmlu_test or ceval_validation; got "
                          f"{task!r} (splits: {', '.join(SPLITS)})")
    return name, split


def load_task(task_dir: str, task: str, n_shot: int, seed: int) -> Task:
    """Read and check every file the run needs, so a bad file is reported before any model loads."""
    name, split = parse_task(task)
    folder = os.path.join(task_dir, name)
    if not os.path.isdir(folder):
        found = sorted(d for d in os.listdir(task_dir) if os.path.isfile(os.path.join(task_dir, d, "mapping.json"))) \
            if os.path.isdir(task_dir) else []
        where = f"tasks there: {', '.join(found)}" if found else f"task_dir `{task_dir}` has no task folders"
        raise ConfigError(f"task folder `{folder}` not found (task: {task}, task_dir: {task_dir}); {where}")
    mapping = _read_mapping(os.path.join(folder, "mapping.json"))
    archive = find_archive(folder, name)
    subjects = []
    for key, (subject_name, category) in mapping.items():
        path = find_subject_file(folder, key, split, archive)
        questions = read_questions(path)
        if not questions:
            raise ConfigError(f"{path}: no questions")
        shots: list[Question] = []
        if n_shot > 0:
            dev = read_questions(find_subject_file(folder, key, "dev", archive))
            shots = choose_shots(dev, n_shot, seed, key)
        subjects.append(Subject(key, subject_name, category, questions, shots))
    if not subjects:
        raise ConfigError(f"{os.path.join(folder, 'mapping.json')}: no subjects")
    fewer = [s.key for s in subjects if n_shot and len(s.shots) < n_shot]
    if fewer:
        logger.warning("%d subject(s) have fewer than %d dev examples and use all they have: %s", len(fewer), n_shot,
                       ", ".join(fewer[:5]) + (", ..." if len(fewer) > 5 else ""))
    return Task(name, split, folder, subjects)


def _read_mapping(path: str) -> dict[str, tuple[str, str]]:
    if not os.path.isfile(path):
        raise ConfigError(f"`{path}` not found: a task folder needs mapping.json, mapping each subject to its "
                          '{"name": ..., "category": ...} (see docs/eval.md)')
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of subjects to {{\"name\", \"category\"}}")
    mapping = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("category"), str) or not entry["category"]:
            raise ConfigError(f"{path}: subject `{key}` needs a \"category\" (STEM, Social Sciences, Humanities or "
                              "Other)")
        mapping[str(key)] = (str(entry.get("name") or str(key).replace("_", " ")), entry["category"])
    return mapping


@dataclass(frozen=True)
class Archive:
    """A zip of task files, read in place: its path and its files, by name and by name below the zip's top
    folder (a zip may hold `mmlu/data/test/...` where the folder layout has `data/test/...`)."""

    path: str
    names: frozenset[str]
    nested: dict[str, str]  # name without its top folder -> name

    def find(self, relatives: list[str]) -> str | None:
        """The first member at one of `relatives` (e.g. data/test/anatomy_test.csv), else the first below the
        zip's top folder, else None."""
        exact = next((r for r in relatives if r in self.names), None)
        return exact or next((self.nested[r] for r in relatives if r in self.nested), None)


def find_archive(folder: str, name: str) -> Archive | None:
    """`<folder>/<name>.zip`, else the folder's only .zip (LlamaFactory ships mmlu/mmlu.zip), else None."""
    path = os.path.join(folder, f"{name}.zip")
    if not os.path.isfile(path):
        zips = sorted(f for f in os.listdir(folder) if f.lower().endswith(".zip")
                      and os.path.isfile(os.path.join(folder, f)))
        if len(zips) != 1:
            return None
        path = os.path.join(folder, zips[0])
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError(f"{path}: not a readable zip archive ({err})") from err
    nested: dict[str, str] = {}
    for member in names:
        if "/" in member:
            nested.setdefault(member.split("/", 1)[1], member)
    return Archive(path, frozenset(names), nested)


def find_subject_file(folder: str, subject: str, split: str, archive: Archive | None = None) -> str:
    """The subject's file for the split: a path on disk, or `<zip path>/<member>` for a file inside `archive`."""
    tried = []
    relatives = []
    for split_name in SPLITS[split]:
        for pattern in ("{s}/{subject}", "{s}/{subject}_{s}", "data/{s}/{subject}_{s}", "data/{s}/{subject}"):
            relative = pattern.format(s=split_name, subject=subject)
            stem = os.path.join(folder, relative)
            for ext in EXTENSIONS:
                if os.path.isfile(f"{stem}.{ext}"):
                    return f"{stem}.{ext}"
                relatives.append(f"{relative}.{ext}")
            tried.append(f"{stem}.csv")
    if archive is not None and (member := archive.find(relatives)) is not None:
        return f"{archive.path}/{member}"
    few_shot = split in ("dev", "train")
    also = f"; split folders may also be named {' or '.join(SPLITS[split][1:])}" if len(SPLITS[split]) > 1 else ""
    inside = f", also inside {archive.path}" if archive is not None else ""
    raise ConfigError(f"no {'few-shot (dev)' if few_shot else split} file for subject `{subject}` (listed in "
                      f"{os.path.join(folder, 'mapping.json')}): looked for {', '.join(tried[:4])} and the same "
                      f"with .json or .jsonl{inside}{also}" + ("; or set `n_shot: 0`" if few_shot else ""))


def _zip_member(path: str) -> tuple[str, str] | None:
    """(zip path, member) when `path` names a file inside a zip (`.../mmlu.zip/data/test/x_test.csv`)."""
    start = 0
    while (end := path.lower().find(".zip/", start)) != -1:
        if os.path.isfile(path[:end + 4]):
            return path[:end + 4], path[end + 5:]
        start = end + 1
    return None


@contextlib.contextmanager
def _open_text(path: str, encoding: str) -> Iterator[IO[str]]:
    """A task file as text, from disk or from inside a zip."""
    inside = None if os.path.isfile(path) else _zip_member(path)
    if inside is None:
        with open(path, encoding=encoding, newline="") as f:
            yield f
        return
    with zipfile.ZipFile(inside[0]) as archive, archive.open(inside[1]) as raw:
        yield io.TextIOWrapper(raw, encoding=encoding, newline="")


def read_questions(path: str) -> list[Question]:
    if path.endswith(".csv"):
        return _read_csv(path)
    rows: list[tuple[str, object]] = []
    with _open_text(path, "utf-8") as f:
        if path.endswith(".jsonl"):
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append((f"line {number}", json.loads(line)))
                    except json.JSONDecodeError as err:
                        raise ConfigError(f"{path}:{number}: JSON syntax error: {err.msg}") from err
        else:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}") from err
            if not isinstance(data, list):
                raise ConfigError(f"{path}: expected a JSON list of questions")
            rows = [(f"item {i}", item) for i, item in enumerate(data)]
    questions = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise ConfigError(f"{path}, {where}: expected an object with question, A, B, ..., answer")
        questions.append(_question({str(k).strip().lower(): v for k, v in row.items()}, path, where))
    return questions


def _read_csv(path: str) -> list[Question]:
    with _open_text(path, "utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if "question" in header and "answer" in header:
        questions = []
        for number, row in enumerate(rows[1:], 2):
            if len(row) != len(header):
                raise ConfigError(f"{path}, row {number}: {len(row)} columns where the header has {len(header)}")
            questions.append(_question(dict(zip(header, row)), path, f"row {number}"))
        return questions
    if "question" in header or "answer" in header:
        missing = "answer" if "question" in header else "question"
        raise ConfigError(f"{path}: the header has no `{missing}` column (columns: {', '.join(rows[0])})")
    # No header: question, options..., answer (the original MMLU layout).
    width = len(rows[0])
    if width < 4:
        raise ConfigError(f"{path}: expected a header with question, A, B, ..., answer, or headerless rows of "
                          f"question, options, answer; the first row has {width} columns")
    questions = []
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            raise ConfigError(f"{path}, row {number}: {len(row)} columns where row 1 has {width}")
        fields = {"question": row[0], "answer": row[-1], **{LETTERS[i].lower(): v for i, v in enumerate(row[1:-1])}}
        questions.append(_question(fields, path, f"row {number}"))
    return questions


def _question(fields: dict[str, object], path: str, where: str) -> Question:
    """One question from lower-cased column names: question, a, b, ..., answer."""
    if "question" not in fields:
        raise ConfigError(f"{path}, {where}: no `question` column")
    options = []
    for letter in LETTERS.lower():
        if letter not in fields:
            break
        options.append(str(fields[letter]).strip())
    if len(options) < 2:
        raise ConfigError(f"{path}, {where}: no option columns (expected A, B, ...; got "
                          f"{', '.join(sorted(fields))})")
    if "answer" not in fields:
        raise ConfigError(f"{path}, {where}: no `answer` column")
    raw = fields["answer"]
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(options):
        answer = raw
    else:
        letter = str(raw if raw is not None else "").strip().upper()
        if not letter:
            raise ConfigError(f"{path}, {where}: the answer is empty (C-Eval keeps its test answers private: score "
                              "its validation split, e.g. ceval_validation)")
        if len(letter) != 1 or letter not in LETTERS[:len(options)]:
            raise ConfigError(f"{path}, {where}: answer {raw!r} is not one of the option letters "
                              f"{', '.join(LETTERS[:len(options)])}")
        answer = LETTERS.index(letter)
    return Question(str(fields["question"]).strip(), tuple(options), answer)


def choose_shots(dev: list[Question], n_shot: int, seed: int, subject: str) -> list[Question]:
    """All dev examples in file order when there are n_shot or fewer; else n_shot of them drawn with the seed
    (the same for every question of the subject), kept in file order."""
    if len(dev) <= n_shot:
        return list(dev)
    rng = random.Random(f"{seed}:{subject}")
    return [dev[i] for i in sorted(rng.sample(range(len(dev)), n_shot))]


# ----------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class Wording:
    intro: str  # opens the first user turn; {subject} is the subject's name
    answer: str  # closes each question


WORDING = {
    "en": Wording("Here are multiple-choice questions about {subject}. Reply with the letter of the correct "
                  "option only.\n\n", "Answer:"),
    "zh": Wording("下面是关于{subject}的单项选择题，请只回答正确选项的字母。\n\n", "答案："),
}


def format_question(question: Question, lang: str) -> str:
    lines = [question.question]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(question.options)]
    lines.append(WORDING[lang].answer)
    return "\n".join(lines)


def build_messages(subject: Subject, question: Question, lang: str, shots: list[Question] | None = None
                   ) -> list[dict[str, str]]:
    """The conversation scored for one question: each few-shot example is a user turn answered by its letter,
    the question is the last user turn, and the subject's introduction opens the first user turn."""
    shots = subject.shots if shots is None else shots
    messages = []
    for shot in shots:
        messages.append({"role": "user", "content": format_question(shot, lang)})
        messages.append({"role": "assistant", "content": shot.answer_letter})
    messages.append({"role": "user", "content": format_question(question, lang)})
    intro = WORDING[lang].intro.format(subject=subject.name)
    messages[0] = {"role": "user", "content": intro + messages[0]["content"]}
    return messages
