"""Neat packing must be exact: a packed row gives each token the same loss as its example alone."""

from types import SimpleNamespace

import pytest

from llamafactory.data.collator import build_collator
from llamafactory.data.processor.packed import PackedSupervisedProcessor
from llamafactory.data.processor.supervised import SupervisedProcessor
from llamafactory.data.template import get_template
from llamafactory.extras.constants import IGNORE_INDEX

ROWS = {
    "_prompt": [[{"role": "user", "content": "Who are you?"}], [{"role": "user", "content": "Who made you?"}],
                [{"role": "user", "content": "hi"}]],
    "_response": [[{"role": "assistant", "content": "I am Lumen, an assistant."}],
                  [{"role": "assistant", "content": "Forge made me."}], [{"role": "assistant", "content": "Hello!"}]],
    "_system": ["", "", ""],
    "_tools": ["", "", ""],
}


def token_losses(model, batch):
    import torch

    with torch.no_grad():
        kwargs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**kwargs, use_cache=False).logits.float()  # training runs without a cache
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    return losses[labels != IGNORE_INDEX]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_neat_packed_batch_matches_examples_run_one_by_one(tiny_model_dir, tiny_tokenizer, attn):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32)
    args = SimpleNamespace(cutoff_len=256, train_on_prompt=False, mask_history=False, neat_packing=True)
    template = get_template("chatml")
    packed = PackedSupervisedProcessor(template, tiny_tokenizer, args).preprocess(ROWS)
    assert len(packed["input_ids"]) == 1  # all three examples share one row
    collate = build_collator(tiny_tokenizer, neat_packing=True)
    packed_losses = token_losses(model, collate([{k: v[0] for k, v in packed.items()}]))

    single = SupervisedProcessor(template, tiny_tokenizer, args).preprocess(ROWS)
    plain = build_collator(tiny_tokenizer)
    rows = [{k: v[i] for k, v in single.items()} for i in range(3)]
    order = sorted(range(3))  # packing keeps examples in their original order inside a row
    alone = torch.cat([token_losses(model, plain([rows[i]])) for i in order])
    assert packed_losses.shape == alone.shape
    torch.testing.assert_close(packed_losses, alone, rtol=1e-4, atol=1e-4)

    # Without neat packing the examples see each other, so the losses differ: the test can tell.
    crossed = build_collator(tiny_tokenizer)([{k: v[0] for k, v in packed.items() if k != "position_ids"}])
    assert not torch.allclose(token_losses(model, crossed), alone, atol=1e-4)


def test_pairwise_and_kto_batches(tiny_tokenizer):
    collate = build_collator(tiny_tokenizer)
    pair = {"chosen_input_ids": [1, 2, 3], "chosen_attention_mask": [1, 1, 1], "chosen_labels": [-100, 2, 3],
            "rejected_input_ids": [1, 2], "rejected_attention_mask": [1, 1], "rejected_labels": [-100, 2]}
    batch = collate([pair, pair])
    assert batch["input_ids"].shape == (4, 8)  # chosen rows, then rejected rows, padded to a multiple of 8
    assert batch["labels"][2].tolist()[:3] == [-100, 2, -100]
    kto = {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [-100, 2], "kl_input_ids": [1, 2, 3],
           "kl_attention_mask": [1, 1, 1], "kl_labels": [-100, 2, 3], "kto_tags": True}
    batch = collate([kto])
    assert batch["kl_input_ids"].shape == (1, 8) and batch["kto_tags"].tolist() == [True]


def test_padding_free_batch_is_one_row_with_example_boundaries(tiny_tokenizer):
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
            {"input_ids": [8, 9], "labels": [8, 9]},
            # a neat-packed row: its own two examples stay two segments
            {"input_ids": [10, 11, 12, 13], "labels": [10, 11, 12, 13], "position_ids": [0, 1, 0, 1]}]
    batch = build_collator(tiny_tokenizer, pad_to_multiple_of=4, padding_free=True)(rows)
    pad = build_collator(tiny_tokenizer).pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, pad, pad, pad]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 0, 1, 0, 1, 2]]
    # each example's first label has nothing of its own before it, as in a padded row; padding never counts
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9, IGNORE_INDEX, 11, IGNORE_INDEX, 13,
                                         IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 7, 9, 12]
    assert batch["max_length_q"] == 3 and "attention_mask" not in batch
    # generation batches (left padding) and pairwise batches stay padded
    left = build_collator(tiny_tokenizer, padding_side="left", padding_free=True)(rows[:2])
    assert left["input_ids"].shape[0] == 2


@pytest.mark.parametrize("attn", ["eager", "sdpa", "sdpa_varlen"])
def test_padding_free_batch_gives_the_padded_batch_losses(tiny_model_dir, tiny_tokenizer, attn):
    import torch
    from transformers import AutoModelForCausalLM

    from llamafactory.model.model_utils.varlen_attention import register

    register()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32)
    args = SimpleNamespace(cutoff_len=256, train_on_prompt=False, mask_history=False, neat_packing=False)
    single = SupervisedProcessor(get_template("chatml"), tiny_tokenizer, args).preprocess(ROWS)
    rows = [{k: v[i] for k, v in single.items()} for i in range(3)]
    padded = token_losses(model, build_collator(tiny_tokenizer)(rows))
    free = token_losses(model, build_collator(tiny_tokenizer, padding_free=True)(rows))
    assert free.shape == padded.shape
    torch.testing.assert_close(free, padded, rtol=1e-4, atol=1e-4)
