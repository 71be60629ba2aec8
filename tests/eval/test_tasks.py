"""Task folders: the accepted layouts and formats, the errors that name the file, and the exact prompts."""

import json
import os

import pytest

from llamafactory.eval.tasks import (
    Question,
    build_messages,
    choose_shots,
    load_task,
    parse_task,
    read_questions,
)
from llamafactory.extras.errors import ConfigError
from tests.eval.helpers import ROOT, write_task

DEMO_DIR = os.path.join(ROOT, "evaluation")


def test_task_names_split_at_the_last_underscore():
    assert parse_task("mmlu_test") == ("mmlu", "test")
    assert parse_task("ceval_validation") == ("ceval", "validation")
    assert parse_task("demo_zh_test") == ("demo_zh", "test")
    for bad in ("mmlu", "mmlu_holdout", "_test"):
        with pytest.raises(ConfigError, match="task folder name plus its split"):
            parse_task(bad)


@pytest.mark.parametrize(("task", "questions"), [("demo_test", 40), ("demo_zh_test", 20)])
def test_the_shipped_demo_tasks_load(task, questions):
    loaded = load_task(DEMO_DIR, task, n_shot=5, seed=42)
    assert [s.category for s in loaded.subjects] == ["STEM", "Social Sciences", "Humanities", "Other"]
    assert sum(len(s.questions) for s in loaded.subjects) == questions
    assert all(len(s.shots) == 5 for s in loaded.subjects)
    assert loaded.num_options == 4
    every = [q for s in loaded.subjects for q in s.questions + s.shots]
    assert len({q.question for q in every}) == len(every)  # no question repeats, and no test question is a shot
    assert {q.answer_letter for q in every} == set("ABCD")


def test_demo_zh_names_subjects_in_chinese():
    loaded = load_task(DEMO_DIR, "demo_zh_test", n_shot=0, seed=42)
    assert [s.name for s in loaded.subjects] == ["算术", "地理", "历史与艺术", "生活常识"]
    assert loaded.subjects[0].shots == []


ROWS = [("What is 1 + 1?", "1", "2", "3", "4", "B"), ("Pick C", "x", "y", "z", "w", "C")]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_csv_json_and_jsonl_read_the_same(tmp_path, fmt):
    write_task(str(tmp_path), "t", {"s": ("STEM", ROWS, ROWS[:1])}, fmt=fmt)
    loaded = load_task(str(tmp_path), "t_test", n_shot=1, seed=0)
    assert loaded.subjects[0].questions == [Question("What is 1 + 1?", ("1", "2", "3", "4"), 1),
                                            Question("Pick C", ("x", "y", "z", "w"), 2)]
    assert loaded.subjects[0].shots == [Question("What is 1 + 1?", ("1", "2", "3", "4"), 1)]


def test_the_original_benchmark_layouts_load_as_they_are(tmp_path):
    # MMLU: data/<split>/<subject>_<split>.csv without a header; task mmlu_validation reads data/val/.
    mmlu = tmp_path / "mmlu"
    (mmlu / "data" / "val").mkdir(parents=True)
    (mmlu / "data" / "dev").mkdir(parents=True)
    (mmlu / "data" / "val" / "anatomy_val.csv").write_text('"Which, of these?",a,b,c,d,D\n', encoding="utf-8")
    (mmlu / "data" / "dev" / "anatomy_dev.csv").write_text("Q?,a,b,c,d,A\n", encoding="utf-8")
    (mmlu / "mapping.json").write_text(json.dumps({"anatomy": {"name": "anatomy", "category": "STEM"}}))
    loaded = load_task(str(tmp_path), "mmlu_validation", n_shot=5, seed=0)
    assert loaded.subjects[0].questions == [Question("Which, of these?", ("a", "b", "c", "d"), 3)]
    assert loaded.subjects[0].shots == [Question("Q?", ("a", "b", "c", "d"), 0)]
    # CMMLU: <split>/<subject>.csv with an unnamed index column and capitalised names.
    cmmlu = tmp_path / "cmmlu"
    (cmmlu / "test").mkdir(parents=True)
    (cmmlu / "test" / "agronomy.csv").write_text(",Question,A,B,C,D,Answer\n0,问题？,甲,乙,丙,丁,C\n", encoding="utf-8")
    (cmmlu / "mapping.json").write_text(json.dumps({"agronomy": {"name": "农学", "category": "Other"}}))
    assert load_task(str(tmp_path), "cmmlu_test", n_shot=0, seed=0).subjects[0].questions == [
        Question("问题？", ("甲", "乙", "丙", "丁"), 2)]
    # C-Eval: <split>/<subject>_<split>.csv with id and explanation columns.
    ceval = tmp_path / "ceval"
    (ceval / "val").mkdir(parents=True)
    (ceval / "val" / "law_val.csv").write_text("id,question,A,B,C,D,answer,explanation\n7,问？,a,b,c,d,B,因为\n",
                                               encoding="utf-8")
    (ceval / "mapping.json").write_text(json.dumps({"law": {"name": "法学", "category": "Humanities"}}))
    assert load_task(str(tmp_path), "ceval_validation", n_shot=0, seed=0).subjects[0].questions == [
        Question("问？", ("a", "b", "c", "d"), 1)]


def test_json_answers_may_be_option_indexes_and_options_may_number_more_than_four(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"Question": "q", "A": "1", "B": "2", "C": "3", "D": "4", "E": "5", "answer": 4}]))
    assert read_questions(str(path)) == [Question("q", ("1", "2", "3", "4", "5"), 4)]


def test_missing_task_mapping_and_subject_files_are_named(tmp_path):
    write_task(str(tmp_path), "ok", {"s": ("STEM", ROWS, ROWS)})
    with pytest.raises(ConfigError, match=r"task folder `.*nope` not found .*tasks there: ok"):
        load_task(str(tmp_path), "nope_test", n_shot=0, seed=0)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError, match=r"bare/mapping.json` not found"):
        load_task(str(tmp_path), "bare_test", n_shot=0, seed=0)
    mapping = json.loads((tmp_path / "ok" / "mapping.json").read_text())
    mapping["chemistry"] = {"name": "chemistry", "category": "STEM"}
    (tmp_path / "ok" / "mapping.json").write_text(json.dumps(mapping))
    with pytest.raises(ConfigError, match=r"no test file for subject `chemistry`.*ok/test/chemistry\.csv"):
        load_task(str(tmp_path), "ok_test", n_shot=0, seed=0)
    write_task(str(tmp_path), "nodev", {"s": ("STEM", ROWS, None)})
    with pytest.raises(ConfigError, match=r"no few-shot \(dev\) file for subject `s`.*nodev/dev/s\.csv.*n_shot: 0"):
        load_task(str(tmp_path), "nodev_test", n_shot=2, seed=0)
    assert load_task(str(tmp_path), "nodev_test", n_shot=0, seed=0).subjects[0].shots == []
    (tmp_path / "nocat").mkdir()
    (tmp_path / "nocat" / "mapping.json").write_text(json.dumps({"s": {"name": "s"}}))
    with pytest.raises(ConfigError, match=r"nocat/mapping.json: subject `s` needs a \"category\""):
        load_task(str(tmp_path), "nocat_test", n_shot=0, seed=0)


@pytest.mark.parametrize(("content", "message"), [
    ("question,A,B,C,D\nq,a,b,c,d\n", r"s\.csv: the header has no `answer` column"),
    ("question,A,B,C,D,answer\nq,a,b,c,d,E\n", r"s\.csv, row 2: answer 'E' is not one of the option letters A, B"),
    ("question,A,B,C,D,answer\nq,a,b,c,d,\n", r"s\.csv, row 2: the answer is empty .*ceval_validation"),
    ("question,A,B,C,D,answer\nq,a,b,c,d\n", r"s\.csv, row 2: 5 columns where the header has 6"),
    ("question,answer\nq,A\n", r"s\.csv, row 2: no option columns"),
    ("q,A\n", r"s\.csv: expected a header with question, A, B, \.\.\., answer"),
])
def test_broken_rows_name_the_file_and_row(tmp_path, content, message):
    path = tmp_path / "s.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        read_questions(str(path))


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"question": "q", "A": "a", "B": "b", "answer": "A"}\n{"question": "q", "A": "a"}\n')
    with pytest.raises(ConfigError, match=r"s\.jsonl, line 2: no option columns"):
        read_questions(str(path))
    path.write_text('{"question": \n')
    with pytest.raises(ConfigError, match=r"s\.jsonl:1: JSON syntax error"):
        read_questions(str(path))


def test_few_shot_examples_are_all_of_a_small_dev_split_or_a_seeded_sample_in_file_order():
    dev = [Question(f"q{i}", ("a", "b"), 0) for i in range(6)]
    assert choose_shots(dev, 6, seed=1, subject="s") == dev
    picked = choose_shots(dev, 3, seed=1, subject="s")
    assert len(picked) == 3 and picked == sorted(picked, key=dev.index)
    assert picked == choose_shots(dev, 3, seed=1, subject="s")
    assert any(choose_shots(dev, 3, seed=seed, subject="s") != picked for seed in range(2, 8))


EN_MESSAGES = [
    {"role": "user", "content": "Here are multiple-choice questions about arithmetic. Reply with the letter of the "
                                "correct option only.\n\nWhat is 3 times 3?\nA. 9\nB. 6\nC. 12\nD. 8\nAnswer:"},
    {"role": "assistant", "content": "A"},
    {"role": "user", "content": "What is 12 divided by 4?\nA. 4\nB. 2\nC. 6\nD. 3\nAnswer:"},
    {"role": "assistant", "content": "D"},
    {"role": "user", "content": "What is 6 plus 7?\nA. 12\nB. 14\nC. 13\nD. 11\nAnswer:"},
]
ZH_MESSAGES = [
    {"role": "user", "content": "下面是关于算术的单项选择题，请只回答正确选项的字母。\n\n"
                                "3乘3等于多少？\nA. 9\nB. 6\nC. 12\nD. 8\n答案："},
    {"role": "assistant", "content": "A"},
    {"role": "user", "content": "12除以4等于多少？\nA. 4\nB. 2\nC. 6\nD. 3\n答案："},
    {"role": "assistant", "content": "D"},
    {"role": "user", "content": "6加7等于多少？\nA. 12\nB. 14\nC. 13\nD. 11\n答案："},
]


@pytest.mark.parametrize(("task", "lang", "expected"), [("demo_test", "en", EN_MESSAGES),
                                                        ("demo_zh_test", "zh", ZH_MESSAGES)])
def test_two_shot_prompt_text_is_exact(task, lang, expected):
    subject = load_task(DEMO_DIR, task, n_shot=2, seed=42).subjects[0]
    assert build_messages(subject, subject.questions[0], lang) == expected


def test_two_shot_prompt_through_the_chat_template(tiny_tokenizer):
    from llamafactory.data.template import get_template

    subject = load_task(DEMO_DIR, "demo_test", n_shot=2, seed=42).subjects[0]
    ids = get_template("chatml").encode_prompt(tiny_tokenizer, build_messages(subject, subject.questions[0], "en"))
    assert tiny_tokenizer.decode(ids) == (
        "<|im_start|>user\nHere are multiple-choice questions about arithmetic. Reply with the letter of the correct "
        "option only.\n\nWhat is 3 times 3?\nA. 9\nB. 6\nC. 12\nD. 8\nAnswer:<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 divided by 4?\nA. 4\nB. 2\nC. 6\nD. 3\nAnswer:<|im_end|>\n"
        "<|im_start|>assistant\nD<|im_end|>\n"
        "<|im_start|>user\nWhat is 6 plus 7?\nA. 12\nB. 14\nC. 13\nD. 11\nAnswer:<|im_end|>\n"
        "<|im_start|>assistant\n")



def _demo_rows(split):
    """Each demo subject's rows for the split (dev or test), header first."""
    import csv

    rows = {}
    for name in sorted(os.listdir(os.path.join(DEMO_DIR, "demo", split))):
        with open(os.path.join(DEMO_DIR, "demo", split, name), encoding="utf-8", newline="") as f:
            rows[name[:-len(".csv")]] = list(csv.reader(f))
    return rows


def _csv_text(rows):
    import csv
    import io

    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def _zipped_task(task_dir, name, members, zip_name=None):
    """A task folder as LlamaFactory ships it: mapping.json, a loader script and the data only in a zip."""
    import shutil
    import zipfile

    folder = task_dir / name
    folder.mkdir(parents=True)
    shutil.copy(os.path.join(DEMO_DIR, "demo", "mapping.json"), folder / "mapping.json")
    (folder / f"{name}.py").write_text("# a datasets loading script, not read by lmf eval\n")
    with zipfile.ZipFile(folder / (zip_name or f"{name}.zip"), "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
    return folder


@pytest.mark.parametrize(("name", "split", "layout", "header"), [
    ("mmlu", "test", {"test": "data/test/{s}_test.csv", "dev": "data/dev/{s}_dev.csv"}, False),  # MMLU: no header
    ("cmmlu", "test", {"test": "test/{s}.csv", "dev": "dev/{s}.csv"}, True),
    ("ceval", "validation", {"val": "val/{s}_val.csv", "dev": "dev/{s}_dev.csv"}, True),
])
def test_task_files_are_read_from_the_zip_llamafactory_ships(tmp_path, name, split, layout, header):
    demo_test, demo_dev = _demo_rows("test"), _demo_rows("dev")
    members = {}
    for kind, pattern in layout.items():
        for subject, rows in (demo_dev if kind == "dev" else demo_test).items():
            members[pattern.format(s=subject)] = _csv_text(rows if header else rows[1:])
    folder = _zipped_task(tmp_path, name, members)
    loaded = load_task(str(tmp_path), f"{name}_{split}", n_shot=5, seed=42)
    expected = load_task(DEMO_DIR, "demo_test", n_shot=5, seed=42)
    assert [(s.key, s.category, s.questions, s.shots) for s in loaded.subjects] == \
        [(s.key, s.category, s.questions, s.shots) for s in expected.subjects]
    assert sorted(os.listdir(folder)) == sorted(["mapping.json", f"{name}.py", f"{name}.zip"])  # nothing unpacked


def test_zip_members_under_a_top_folder_and_a_zip_of_another_name_are_found(tmp_path):
    members = {f"payload/data/{split}/{s}_{split}.csv": _csv_text(rows)
               for split in ("test", "dev") for s, rows in _demo_rows(split).items()}
    _zipped_task(tmp_path, "mmlu", members, zip_name="MMLU-data.zip")
    loaded = load_task(str(tmp_path), "mmlu_test", n_shot=2, seed=0)
    assert sum(len(s.questions) for s in loaded.subjects) == 40 and all(len(s.shots) == 2 for s in loaded.subjects)


def test_files_on_disk_win_over_the_zip_and_missing_members_are_named(tmp_path):
    demo_test = _demo_rows("test")
    folder = _zipped_task(tmp_path, "mmlu", {f"data/test/{s}_test.csv": _csv_text(rows)
                                             for s, rows in demo_test.items()})
    (folder / "test").mkdir()
    (folder / "test" / "arithmetic.csv").write_text("question,A,B,answer\nOn disk?,yes,no,A\n", encoding="utf-8")
    loaded = load_task(str(tmp_path), "mmlu_test", n_shot=0, seed=0)
    assert loaded.subjects[0].questions == [Question("On disk?", ("yes", "no"), 0)]
    assert len(loaded.subjects[1].questions) == 10  # geography: from the zip
    with pytest.raises(ConfigError, match=r"no few-shot \(dev\) file for subject `arithmetic`.*also inside "
                                          r".*mmlu\.zip"):
        load_task(str(tmp_path), "mmlu_test", n_shot=1, seed=0)
    bad = _zipped_task(tmp_path / "other", "broken", {})
    (bad / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"broken\.zip: not a readable zip archive"):
        load_task(str(tmp_path / "other"), "broken_test", n_shot=0, seed=0)


def test_a_broken_row_inside_a_zip_names_the_member(tmp_path):
    _zipped_task(tmp_path, "mmlu", {"data/test/arithmetic_test.csv": "q,a,b,c,d,Z\n"})
    (tmp_path / "mmlu" / "mapping.json").write_text(json.dumps({"arithmetic": {"category": "STEM"}}))
    with pytest.raises(ConfigError, match=r"mmlu\.zip/data/test/arithmetic_test\.csv, row 1: answer 'Z'"):
        load_task(str(tmp_path), "mmlu_test", n_shot=0, seed=0)
