"""Log-probabilities of answers and the LD-DPO weighting, against a direct computation."""

import math

import torch

from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.train.reference import reduce_logps, sequence_logps, token_logps


def test_token_logps_match_log_softmax_and_skip_ignored_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 5], [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX]])
    per_token, mask = token_logps(logits, labels)
    expected = torch.log_softmax(logits, -1)
    assert mask.tolist() == [[False, True, True, True], [True, True, False, False]]
    assert math.isclose(per_token[0, 1].item(), expected[0, 1, 3].item(), rel_tol=1e-5)  # logits at t predict t+1
    assert math.isclose(per_token[1, 0].item(), expected[1, 0, 1].item(), rel_tol=1e-5)
    assert per_token[1, 2].item() == 0.0
    total = sequence_logps(logits, labels)
    assert math.isclose(total[0].item(), sum(expected[0, t, labels[0, t + 1]].item() for t in (1, 2, 3)),
                        rel_tol=1e-5)
    mean = sequence_logps(logits, labels, average=True)
    assert math.isclose(mean[1].item(), (expected[1, 0, 1] + expected[1, 1, 2]).item() / 2, rel_tol=1e-5)


def test_ld_alpha_downweights_tokens_beyond_the_shorter_answer():
    per_token = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, 0.0, 0.0]])  # chosen 4 tokens, rejected 2
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    plain = reduce_logps(per_token, mask)
    weighted = reduce_logps(per_token, mask, ld_alpha=0.5)
    assert plain.tolist() == [-4.0, -4.0]
    assert weighted.tolist() == [-3.0, -4.0]  # chosen: 2 shared tokens + 0.5 x 2 extra


def test_cache_key_covers_how_the_reference_is_loaded_and_needs_a_fingerprint():
    from types import SimpleNamespace

    from llamafactory.hparams import ModelArguments
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.train.reference import _cache_key

    data = SimpleNamespace(_fingerprint="abc")
    base = _cache_key(ModelArguments(model_name_or_path="m"), FinetuningArguments(stage="dpo"), data, "train",
                      torch.float32)
    assert base == _cache_key(ModelArguments(model_name_or_path="m"), FinetuningArguments(stage="dpo"), data,
                              "train", torch.float32)
    quantized = _cache_key(ModelArguments(model_name_or_path="m", quantization_bit=4),
                           FinetuningArguments(stage="dpo"), data, "train", torch.float32)
    other_dtype = _cache_key(ModelArguments(model_name_or_path="m"), FinetuningArguments(stage="dpo"), data,
                             "train", torch.bfloat16)
    averaged = _cache_key(ModelArguments(model_name_or_path="m"), FinetuningArguments(stage="dpo", pref_loss="ipo"),
                          data, "train", torch.float32)
    assert len({base, quantized, other_dtype, averaged}) == 4
    assert _cache_key(ModelArguments(model_name_or_path="m"), FinetuningArguments(stage="dpo"), [1, 2], "train",
                      torch.float32) is None  # no fingerprint: nothing is cached rather than risk a collision
