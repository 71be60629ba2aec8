from types import SimpleNamespace

import pytest

from llamafactory.data.processor.pretrain import PretrainProcessor
from llamafactory.data.processor.supervised import SupervisedProcessor, split_budget
from llamafactory.data.template import get_template
from llamafactory.extras.constants import IGNORE_INDEX

MULTI = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Lumen."},
    {"role": "user", "content": "Who made you?"},
]
ANSWER = [{"role": "assistant", "content": "Forge made me."}]


def processor(tokenizer, **kwargs):
    args = SimpleNamespace(cutoff_len=1024, train_on_prompt=False, mask_history=False, **kwargs)
    return SupervisedProcessor(get_template("chatml"), tokenizer, args)


def test_labels_mask_every_prompt_token(tiny_tokenizer):
    proc = processor(tiny_tokenizer)
    input_ids, labels = proc.encode(MULTI, ANSWER, "Be brief.")
    turns = get_template("chatml").encode_multiturn(tiny_tokenizer, MULTI + ANSWER, "Be brief.")
    expected_labels = []
    for prompt, response in turns:
        expected_labels += [IGNORE_INDEX] * len(prompt) + response
    assert input_ids == [i for p, r in turns for i in p + r]
    assert len(labels) == len(input_ids)
    for position, (token, label) in enumerate(zip(input_ids, labels)):
        assert label == expected_labels[position], position
        assert label in (IGNORE_INDEX, token)
    trained = tiny_tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert trained == "I am Lumen.<|im_end|>\nForge made me.<|im_end|>\n"  # answers and their stop token only


def test_train_on_prompt_and_mask_history(tiny_tokenizer):
    input_ids, labels = processor(tiny_tokenizer, ).encode(MULTI, ANSWER, None)
    _, all_labels = SupervisedProcessor(get_template("chatml"), tiny_tokenizer, SimpleNamespace(
        cutoff_len=1024, train_on_prompt=True, mask_history=False)).encode(MULTI, ANSWER, None)
    assert all_labels == input_ids
    _, last_only = SupervisedProcessor(get_template("chatml"), tiny_tokenizer, SimpleNamespace(
        cutoff_len=1024, train_on_prompt=False, mask_history=True)).encode(MULTI, ANSWER, None)
    assert tiny_tokenizer.decode([t for t in last_only if t != IGNORE_INDEX]) == "Forge made me.<|im_end|>\n"


@pytest.mark.parametrize("prompt,response,budget,expected", [
    (10, 10, 100, (10, 10)),
    (80, 40, 100, (60, 40)),  # answer fits in half: kept whole, prompt gets the rest
    (80, 80, 100, (50, 50)),
    (10, 200, 100, (10, 90)),  # short prompt kept, answer cut
])
def test_split_budget(prompt, response, budget, expected):
    assert split_budget(prompt, response, budget) == expected
    assert sum(split_budget(prompt, response, budget)) <= budget


def test_cutoff_len_truncates_and_keeps_alignment(tiny_tokenizer):
    proc = processor(tiny_tokenizer)
    proc.data_args.cutoff_len = 12
    input_ids, labels = proc.encode(MULTI, ANSWER, None)
    assert len(input_ids) == len(labels) == 12
    assert labels[:6] == [IGNORE_INDEX] * 6 and all(label != IGNORE_INDEX for label in labels[6:])


def test_rows_without_answer_are_skipped(tiny_tokenizer):
    proc = processor(tiny_tokenizer)
    batch = {"_prompt": [MULTI, MULTI, [{"role": "user", "content": ""}]], "_response": [ANSWER, [], ANSWER],
             "_system": ["", "", ""], "_tools": ["", "", ""]}
    out = proc.preprocess(batch)
    assert len(out["input_ids"]) == 1
    assert out["attention_mask"][0] == [1] * len(out["input_ids"][0])


def test_pretrain_blocks_keep_every_token(tiny_tokenizer):
    tiny_tokenizer.eos_token = "<|endoftext|>"
    proc = PretrainProcessor(None, tiny_tokenizer, SimpleNamespace(cutoff_len=8, packing=None))
    texts = ["the quick brown fox", "jumps over the lazy dog", "hi"]
    out = proc.preprocess({"_prompt": [[{"role": "user", "content": t}] for t in texts]})
    expected = tiny_tokenizer("".join(t + "<|endoftext|>" for t in texts), add_special_tokens=False)["input_ids"]
    flat = [i for block in out["input_ids"] for i in block]
    assert flat == expected
    assert all(len(b) == 8 for b in out["input_ids"][:-1]) and 0 < len(out["input_ids"][-1]) <= 8
    assert out["labels"] == out["input_ids"]


def test_mask_history_keeps_the_trained_last_turn_when_truncating(tiny_tokenizer):
    proc = processor(tiny_tokenizer, )
    proc.data_args.mask_history = True
    turns = get_template("chatml").encode_multiturn(tiny_tokenizer, MULTI + ANSWER)
    proc.data_args.cutoff_len = len(turns[1][0]) + len(turns[1][1])  # room for the last turn only
    input_ids, labels = proc.encode(MULTI, ANSWER, None)
    assert input_ids == turns[1][0] + turns[1][1]
    assert tiny_tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "Forge made me.<|im_end|>\n"


def test_packing_fills_rows_and_neat_packing_restarts_positions(tiny_tokenizer):
    from llamafactory.data.processor.packed import PackedSupervisedProcessor, first_fit_decreasing

    assert first_fit_decreasing([5, 3, 4, 2], 7) == [[0, 3], [2, 1]]
    args = SimpleNamespace(cutoff_len=64, train_on_prompt=False, mask_history=False, neat_packing=True)
    proc = PackedSupervisedProcessor(get_template("chatml"), tiny_tokenizer, args)
    batch = {"_prompt": [MULTI[:1], MULTI], "_response": [[MULTI[1]], ANSWER], "_system": ["", ""],
             "_tools": ["", ""]}
    single = SupervisedProcessor.preprocess(proc, batch)
    out = proc.preprocess(batch)
    assert len(out["input_ids"]) == 1  # both examples fit in one row
    lengths = [len(ids) for ids in single["input_ids"]]
    assert out["position_ids"][0] == list(range(lengths[0])) + list(range(lengths[1]))
    assert out["labels"][0] == single["labels"][0] + single["labels"][1]


def test_pretrain_without_packing_keeps_each_text(tiny_tokenizer):
    tiny_tokenizer.eos_token = "<|endoftext|>"
    proc = PretrainProcessor(None, tiny_tokenizer, SimpleNamespace(cutoff_len=4, packing=False))
    out = proc.preprocess({"_prompt": [[{"role": "user", "content": t}] for t in ["the quick brown fox", "hi"]]})
    assert len(out["input_ids"]) == 2 and len(out["input_ids"][0]) == 4
    assert out["input_ids"][1] == tiny_tokenizer("hi<|endoftext|>", add_special_tokens=False)["input_ids"]


class CountingBackend:
    """The fast tokenizer's Rust backend, counting one-text and batch calls."""

    def __init__(self, backend) -> None:
        self.backend, self.single, self.batched = backend, 0, 0
        self.encode_special_tokens = backend.encode_special_tokens

    def encode(self, *args, **kwargs):
        self.single += 1
        return self.backend.encode(*args, **kwargs)

    def encode_batch(self, *args, **kwargs):
        self.batched += 1
        return self.backend.encode_batch(*args, **kwargs)

    def encode_batch_fast(self, *args, **kwargs):
        self.batched += 1
        return self.backend.encode_batch_fast(*args, **kwargs)


@pytest.mark.parametrize("template", ["chatml", "llama3", "qwen3"])
def test_a_batch_is_tokenized_in_one_backend_call_with_the_same_ids(tiny_model_dir, template):
    """Each map batch's texts go to the Rust backend in one parallel encode_batch; the ids equal the
    message-by-message ones, for templates with a default system prompt (chatml), special tokens around
    the content (llama3) and thought rules (qwen3)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SimpleNamespace(cutoff_len=64, train_on_prompt=False, mask_history=False)
    proc = SupervisedProcessor(get_template(template), tokenizer, args)
    rows = {"_prompt": [MULTI, MULTI[:1], [{"role": "user", "content": "Hi " * 40}], MULTI[:2]],
            "_response": [ANSWER, ANSWER, [{"role": "assistant", "content": "<think>\nhm\n</think>\n\nok"}], ANSWER],
            "_system": ["Be brief.", None, "", None], "_tools": ["", None, None, None]}
    expected = [proc.encode(p, r, s, t) for p, r, s, t in
                zip(rows["_prompt"], rows["_response"], rows["_system"], rows["_tools"]) if proc.is_valid(p, r)]
    counting = tokenizer._tokenizer = CountingBackend(tokenizer._tokenizer)
    out = proc.preprocess(rows)
    assert list(zip(out["input_ids"], out["labels"])) == expected and len(expected) == 3  # MULTI[:2] is invalid
    assert counting.batched == 1 and counting.single == 0
