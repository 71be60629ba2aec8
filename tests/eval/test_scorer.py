"""Scoring: accuracy from fixed logits equals a hand computation; batching never changes a question's logits."""

import json
import os
import re

import pytest

from llamafactory.eval.scorer import ChoiceScorer, answer_token_ids
from llamafactory.eval.tasks import load_task
from tests.eval.helpers import ROOT, FixedLogits, write_task

# Three subjects, six questions. For each question: its answer and the letter logits the fake model returns.
SUBJECTS = {
    "algebra": ("STEM", [("alg one?", "1", "2", "3", "4", "A"), ("alg two?", "1", "2", "3", "4", "B"),
                         ("alg three?", "1", "2", "3", "4", "C")], [("alg shot?", "1", "2", "3", "4", "D")]),
    "physics": ("STEM", [("phy one?", "1", "2", "3", "4", "D")], [("phy shot?", "1", "2", "3", "4", "A")]),
    "poetry": ("Humanities", [("poe one?", "1", "2", "3", "4", "A"), ("poe two?", "1", "2", "3", "4", "B")],
               [("poe shot?", "1", "2", "3", "4", "C")]),
}
DESIGNED = {
    "alg one?": {"A": 2.0, "B": 1.0},  # -> A, right
    "alg two?": {"B": 0.5, "C": 0.7},  # -> C, wrong
    "alg three?": {"C": 3.0, "D": 3.0},  # a tie goes to the earlier letter: C, right
    "phy one?": {"A": -2.0, "B": -2.0, "C": -2.0, "D": -1.0},  # -> D, right
    "poe one?": {},  # all letters equal -> A, right
    "poe two?": {"A": 5.0},  # -> A, wrong
}


@pytest.fixture
def fixed_task(tmp_path):
    write_task(str(tmp_path / "tasks"), "hand", SUBJECTS)
    return str(tmp_path / "tasks")


def test_accuracy_from_fixed_logits_matches_the_hand_computation(fixed_task, tiny_model_dir, tmp_path, monkeypatch,
                                                                 capsys):
    from llamafactory.cli import main
    from llamafactory.eval import evaluator

    models = []

    def fake_load_model(tokenizer, *args, **kwargs):
        models.append(FixedLogits(tokenizer, DESIGNED))
        return models[-1]

    monkeypatch.setattr(evaluator, "load_model", fake_load_model)
    save_dir = tmp_path / "out"
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", "template=chatml", f"task_dir={fixed_task}",
                 "task=hand_test", "n_shot=1", "batch_size=2", f"save_dir={save_dir}"]) == 0
    results = json.loads((save_dir / "results.json").read_text())["results"]
    subjects, categories = results["subjects"], results["categories"]
    # By hand: algebra 2 of 3, physics 1 of 1, poetry 1 of 2.
    assert {k: (v["correct"], v["total"], v["predictions"]) for k, v in subjects.items()} == {
        "algebra": (2, 3, "ACC"), "physics": (1, 1, "D"), "poetry": (1, 2, "AA")}
    assert subjects["algebra"]["accuracy"] == pytest.approx(66.6667)
    assert subjects["physics"]["accuracy"] == 100.0 and subjects["poetry"]["accuracy"] == 50.0
    # A category counts questions, not subjects: STEM is 3 of 4 = 75 (the mean of its subjects would be 83.33).
    assert list(categories) == ["STEM", "Humanities", "Average"]
    assert categories["STEM"] == {"subjects": 2, "correct": 3, "total": 4, "accuracy": 75.0}
    assert categories["Humanities"] == {"subjects": 1, "correct": 1, "total": 2, "accuracy": 50.0}
    assert categories["Average"] == {"subjects": 3, "correct": 4, "total": 6, "accuracy": pytest.approx(66.6667)}
    assert models[0].calls == 4  # batches of 2: algebra 2, physics 1, poetry 1
    out = capsys.readouterr().out
    assert re.search(r"^STEM +2 +4 +75\.00$", out, re.M) and re.search(r"^Average +3 +6 +66\.67$", out, re.M)
    log = (save_dir / "results.log").read_text()
    assert re.search(r"^algebra +STEM +3 +66\.67$", log, re.M)


def test_answer_tokens_are_the_letters_the_template_writes(tiny_tokenizer):
    from llamafactory.data.template import get_template

    ids = answer_token_ids(tiny_tokenizer, get_template("chatml"), 4)
    assert tiny_tokenizer.convert_ids_to_tokens(ids) == ["A", "B", "C", "D"]


def test_a_question_gets_the_same_logits_alone_or_in_a_batch(tiny_model_dir):
    import torch

    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments
    from llamafactory.model.loader import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=tiny_model_dir)
    tokenizer = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="chatml"))
    model = load_model(tokenizer, model_args, FinetuningArguments(), False, torch.float32)
    scorer = ChoiceScorer(model, tokenizer, template, 4, batch_size=4, max_length=2048)
    subject = load_task(os.path.join(ROOT, "evaluation"), "demo_test", n_shot=3, seed=42).subjects[1]
    prompts = [scorer.encode(subject, q, "en")[0] for q in subject.questions[:4]]
    assert len({len(p) for p in prompts}) > 1  # different lengths, so the batch is padded
    together = scorer.letter_logits(prompts)
    alone = torch.cat([scorer.letter_logits([p]) for p in prompts])
    assert together.shape == (4, 4)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])  # the logits do depend on the question


def test_prompts_longer_than_cutoff_len_drop_the_earliest_examples(tiny_tokenizer):
    from llamafactory.data.template import get_template

    subject = load_task(os.path.join(ROOT, "evaluation"), "demo_test", n_shot=5, seed=42).subjects[0]
    scorer = ChoiceScorer(None, tiny_tokenizer, get_template("chatml"), 4, batch_size=1, max_length=10**6)
    full, dropped, cut = scorer.encode(subject, subject.questions[0], "en")
    assert (dropped, cut) == (0, False)
    scorer.max_length = len(full) - 1
    shorter, dropped, cut = scorer.encode(subject, subject.questions[0], "en")
    assert (dropped, cut) == (1, False) and len(shorter) < len(full)
    assert tiny_tokenizer.decode(shorter).count("<|im_start|>assistant\n") == 5  # 4 examples and the question
    scorer.max_length = 8
    tail, dropped, cut = scorer.encode(subject, subject.questions[0], "en")
    assert (dropped, cut) == (5, True) and len(tail) == 8
    assert tail == full[-8:]  # the end of the prompt, where the answer is read, is kept
