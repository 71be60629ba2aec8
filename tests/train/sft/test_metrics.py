import math
from types import SimpleNamespace

import numpy as np
import pytest

from llamafactory.train.sft.metrics import bleu4, rouge_l, rouge_n, similarity_scores, token_accuracy


def test_bleu4_by_hand():
    assert bleu4(list("abcd"), list("abcd")) == pytest.approx(1.0)
    # 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0 matches -> 1/(2*1)
    assert bleu4(list("abcd"), list("abce")) == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25)
    # a short hypothesis pays the brevity penalty exp(1 - 8/4)
    assert bleu4(list("abcdefgh"), list("abcd")) == pytest.approx(math.exp(1 - 2))


def test_rouge_by_hand():
    ref, hyp = "the cat sat on the mat".split(), "the cat lay on the mat".split()
    assert rouge_n(ref, hyp, 1) == pytest.approx(5 / 6)
    assert rouge_n(ref, hyp, 2) == pytest.approx(3 / 5)
    assert rouge_l(ref, hyp) == pytest.approx(5 / 6)


def test_similarity_scores_are_x100_and_segment_chinese():
    scores = similarity_scores(["我爱北京天安门", "hello world"], ["我爱北京天安门", "hello world"])
    assert scores == {"predict_bleu-4": 100.0, "predict_rouge-1": 100.0, "predict_rouge-2": 100.0,
                      "predict_rouge-l": 100.0}
    assert similarity_scores(["完全不同"], ["我爱北京"])["predict_rouge-1"] == 0.0


def test_token_accuracy_shifts_and_ignores_masked_labels():
    predictions = np.array([[7, 8, 9, 0]])  # prediction at t is for token t+1
    labels = np.array([[-100, 7, 8, 5]])
    assert token_accuracy(SimpleNamespace(predictions=predictions, label_ids=labels)) == {"accuracy": 2 / 3}
