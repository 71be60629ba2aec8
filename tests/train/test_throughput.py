import pytest

from llamafactory.train.throughput import ThroughputMeter, count_tokens, flops_per_token


def test_count_tokens_with_a_mask_and_with_neat_packing():
    import torch

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert count_tokens({"input_ids": torch.zeros(2, 4), "attention_mask": mask}, 0) == (5, 8)
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 0, 6, 8, 0]])  # pad id 0; a 0 inside a row is text
    labels = torch.tensor([[-100, 6, 7, -100, -100], [-100, 0, 6, 8, -100]])
    assert count_tokens({"input_ids": ids, "labels": labels}, 0) == (7, 10)


def test_flops_per_token_is_6n_for_full_and_about_4n_for_a_frozen_base(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    assert flops_per_token(model) == pytest.approx(4 * n + 2 * sum(p.numel() for p in model.parameters()))
    model.requires_grad_(False)
    assert flops_per_token(model) == pytest.approx(4 * n)
    assert torch.is_tensor(model.get_input_embeddings().weight)


def test_meter():
    meter = ThroughputMeter()
    meter.add(30, 40)
    meter.add(10, 20)
    assert meter.real == 40 and meter.padding_share() == pytest.approx(1 / 3)
