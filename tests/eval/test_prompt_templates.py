"""Which template eval prompts go through: `fewshot` for plain text, and reasoning prompts that end with an empty
thought, also through a model's own chat template that reads `enable_thinking`."""

import os

import pytest

from llamafactory.data.template import get_template, get_template_and_fix_tokenizer
from llamafactory.eval.evaluator import eval_template
from llamafactory.eval.scorer import answer_token_ids
from llamafactory.eval.tasks import build_messages, load_task
from llamafactory.hparams import DataArguments
from tests.eval.helpers import ROOT

DEMO_DIR = os.path.join(ROOT, "evaluation")

FEWSHOT_TWO_SHOT = (
    "Here are multiple-choice questions about arithmetic. Reply with the letter of the correct option only.\n\n"
    "What is 3 times 3?\nA. 9\nB. 6\nC. 12\nD. 8\nAnswer:A\n\n"
    "What is 12 divided by 4?\nA. 4\nB. 2\nC. 6\nD. 3\nAnswer:D\n\n"
    "What is 6 plus 7?\nA. 12\nB. 14\nC. 13\nD. 11\nAnswer:")

# ChatML whose assistant turns open with an empty thought when `enable_thinking` is false (as Qwen3's does).
THINKING_JINJA = (
    "{%- set no_think = enable_thinking is defined and enable_thinking is false %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' and no_think %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{{- message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if no_think %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
)


def _tokenizer(tiny_model_dir, chat_template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = chat_template
    return tokenizer


def _two_shot_messages():
    subject = load_task(DEMO_DIR, "demo_test", n_shot=2, seed=42).subjects[0]
    return build_messages(subject, subject.questions[0], "en")


def test_fewshot_prompt_is_plain_text_with_a_blank_line_after_each_answer(tiny_tokenizer):
    ids = get_template("fewshot").encode_prompt(tiny_tokenizer, _two_shot_messages())
    assert tiny_tokenizer.decode(ids) == FEWSHOT_TWO_SHOT
    # The answer letters scored are the tokens the examples show after "Answer:".
    assert tiny_tokenizer.convert_ids_to_tokens(answer_token_ids(tiny_tokenizer, get_template("fewshot"), 4)) == \
        ["A", "B", "C", "D"]


@pytest.mark.parametrize(("template", "chat_template"), [("empty", "keep"), ("fewshot", "keep"), (None, None)])
def test_plain_text_eval_prompts_use_fewshot(tiny_model_dir, template, chat_template):
    """`template: empty`, and a base model without template or chat template, get blank-line separators
    (`empty` alone runs `Answer:A` into the next question)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if chat_template is None:
        tokenizer.chat_template = None
    chosen = eval_template(tokenizer, DataArguments(template=template))
    assert chosen.name == "fewshot"
    assert tokenizer.decode(chosen.encode_prompt(tokenizer, _two_shot_messages())) == FEWSHOT_TWO_SHOT
    empty = get_template("empty").encode_prompt(tokenizer, _two_shot_messages())
    assert "Answer:AWhat is 12" in tokenizer.decode(empty)  # what eval used to score with `empty`


def test_a_chat_template_is_kept_when_set_or_when_the_model_has_one(tiny_model_dir):
    tokenizer = _tokenizer(tiny_model_dir, THINKING_JINJA)
    assert eval_template(tokenizer, DataArguments(template="chatml")).name == "chatml"
    assert eval_template(tokenizer, DataArguments(template=None)).name == "tokenizer"


@pytest.mark.parametrize(("enable_thinking", "ending"), [
    (False, "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    (True, "<|im_start|>assistant\n"),
    (None, "<|im_start|>assistant\n"),
])
def test_the_models_own_chat_template_gets_enable_thinking(tiny_model_dir, enable_thinking, ending):
    tokenizer = _tokenizer(tiny_model_dir, THINKING_JINJA)
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(enable_thinking=enable_thinking))
    assert template.name == "tokenizer"
    conversation = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Lumen."}]
    text = tokenizer.decode(template.encode_prompt(tokenizer, conversation[:1]))
    assert text == "<|im_start|>user\nWho are you?<|im_end|>\n" + ending
    (prompt, response), = template.encode_multiturn(tokenizer, conversation)
    assert tokenizer.decode(prompt) == text
    assert tokenizer.decode(response) == "Lumen.<|im_end|>\n"  # with false the thought is in the prompt


def test_eval_prompts_through_a_thinking_chat_template_end_with_an_empty_thought(tiny_model_dir):
    """Without `template`, a reasoning model's own chat template still gets the prompt eval scores: the empty
    thought closes it, so the logits read are those of the answer letter, which is the reply's first token."""
    tokenizer = _tokenizer(tiny_model_dir, THINKING_JINJA)
    template = eval_template(tokenizer, DataArguments())  # enable_thinking defaults to true; eval turns it off
    text = tokenizer.decode(template.encode_prompt(tokenizer, _two_shot_messages()))
    assert text.endswith("Answer:<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>" in text
    assert tokenizer.convert_ids_to_tokens(answer_token_ids(tokenizer, template, 4)) == ["A", "B", "C", "D"]


# Qwen3's shape: the answer after the last user turn carries a thought block, earlier answers do not.
QWEN3_LIKE_JINJA = (
    "{%- set ns = namespace(last=-1) %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' and loop.index0 > ns.last %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)


def test_a_qwen3_like_chat_template_scores_zero_shot_and_asks_for_template_with_examples(tiny_model_dir):
    from llamafactory.extras.errors import ConfigError

    tokenizer = _tokenizer(tiny_model_dir, QWEN3_LIKE_JINJA)
    template = eval_template(tokenizer, DataArguments())
    subject = load_task(DEMO_DIR, "demo_test", n_shot=0, seed=42).subjects[0]
    text = tokenizer.decode(template.encode_prompt(tokenizer, build_messages(subject, subject.questions[0], "en")))
    assert text.endswith("Answer:<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tokenizer.convert_ids_to_tokens(answer_token_ids(tokenizer, template, 4)) == ["A", "B", "C", "D"]
    with pytest.raises(ConfigError, match="set `template` to a registered one"):
        template.encode_prompt(tokenizer, _two_shot_messages())
