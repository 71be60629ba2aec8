"""BLEU-4 / ROUGE of generated_predictions.jsonl on strings checked by hand, and scripts/eval_bleu_rouge.py."""

import importlib.util
import json
import math
import os

import pytest

from llamafactory.eval.metrics import default_output, read_predictions, score_predictions, write_scores
from llamafactory.extras.errors import UserError
from tests.eval.helpers import ROOT


def _write(path, rows):
    path.write_text("".join(json.dumps({"prompt": "p", **row}, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    return str(path)


def test_scores_match_the_hand_computation(tmp_path):
    # "the cat" against "the cat sat":
    #   words the, cat vs the, cat, sat: ROUGE-1 P=1 R=2/3 F=0.8; ROUGE-2 P=1 R=1/2 F=2/3; ROUGE-L (LCS 2) F=0.8.
    #   characters: every 1..4-gram of the 7 predicted characters is in the 11 of the label, so BLEU-4 is the
    #   brevity penalty alone: exp(1 - 11/7).
    path = _write(tmp_path / "generated_predictions.jsonl", [{"predict": "the cat", "label": "the cat sat"}])
    scores = score_predictions(path)
    assert scores == {"bleu-4": pytest.approx(100 * math.exp(1 - 11 / 7), abs=1e-4), "rouge-1": 80.0,
                      "rouge-2": pytest.approx(200 / 3, abs=1e-4), "rouge-l": 80.0, "samples": 1}


def test_chinese_is_segmented_into_words(tmp_path):
    # jieba: 我 / 爱 / 北京 against 我 / 爱 / 北京 / 天安门: ROUGE-1 F = 2 * 1 * 3/4 / (1 + 3/4) = 6/7,
    # ROUGE-2 (2 of 3 label bigrams) F = 0.8; BLEU-4 over characters: exp(1 - 7/4).
    path = _write(tmp_path / "p.jsonl", [{"predict": "我爱北京", "label": "我爱北京天安门"}])
    scores = score_predictions(path)
    assert scores["rouge-1"] == pytest.approx(600 / 7, abs=1e-4)
    assert scores["rouge-2"] == pytest.approx(80.0)
    assert scores["rouge-l"] == pytest.approx(600 / 7, abs=1e-4)
    assert scores["bleu-4"] == pytest.approx(100 * math.exp(1 - 7 / 4), abs=1e-4)


def test_scores_are_averaged_over_examples(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"predict": "the cat", "label": "the cat sat"},
                                         {"predict": "same words", "label": "same words"},
                                         {"predict": "", "label": "nothing predicted"}])
    scores = score_predictions(path)
    assert scores["samples"] == 3
    assert scores["rouge-1"] == pytest.approx((80 + 100 + 0) / 3, abs=1e-4)
    assert scores["bleu-4"] == pytest.approx((100 * math.exp(1 - 11 / 7) + 100 + 0) / 3, abs=1e-4)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_predictions(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"predict": "a", "label": "b"}\n{"predict": "a"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: expected an object with string `predict` and `label`"):
        read_predictions(str(bad))
    bad.write_text("{oops\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:1: JSON syntax error"):
        read_predictions(str(bad))
    bad.write_text("\n")
    with pytest.raises(UserError, match="no predictions"):
        read_predictions(str(bad))


def test_scores_are_never_written_over_an_existing_file(tmp_path):
    out = tmp_path / "s.json"
    write_scores({"bleu-4": 1.0}, str(out))
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        write_scores({"bleu-4": 2.0}, str(out))
    write_scores({"bleu-4": 2.0}, str(out), overwrite=True)
    assert json.loads(out.read_text()) == {"bleu-4": 2.0}
    assert default_output("/x/generated_predictions.jsonl") == "/x/generated_predictions_scores.json"


def test_the_script_prints_and_writes_the_scores_beside_the_file(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eval_bleu_rouge", os.path.join(ROOT, "scripts",
                                                                                  "eval_bleu_rouge.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = _write(tmp_path / "generated_predictions.jsonl", [{"predict": "the cat", "label": "the cat sat"}])
    assert script.main([path]) == 0
    written = json.loads((tmp_path / "generated_predictions_scores.json").read_text())
    assert written["rouge-1"] == 80.0 and written["samples"] == 1
    assert '"rouge-1": 80.0' in capsys.readouterr().out
    assert script.main([path]) == 1
    assert "already exists" in capsys.readouterr().err
    assert script.main([path, "--output", str(tmp_path / "other.json")]) == 0
    assert script.main([path, "--overwrite"]) == 0
