import pytest

from llamafactory.data.template import TEMPLATES, get_template
from llamafactory.extras.errors import ConfigError

CONVERSATION = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Lumen."},
    {"role": "user", "content": "Who made you?"},
    {"role": "assistant", "content": "Forge made me."},
]


def hf_ids(tokenizer, messages, **kwargs):
    ids = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_registry_has_the_first_templates():
    assert {"default", "empty", "chatml", "smollm2"} <= set(TEMPLATES)
    with pytest.raises(ConfigError, match="unknown template `nope`; available: .*chatml"):
        get_template("nope")


def test_unset_template_uses_the_tokenizers_own_chat_template(tiny_tokenizer):
    fallback = get_template(None, tiny_tokenizer)
    assert fallback.name == "tokenizer" and get_template(None).name == "empty"
    system = "You are terse."
    assert fallback.encode_multiturn(tiny_tokenizer, CONVERSATION, system) == \
        get_template("chatml").encode_multiturn(tiny_tokenizer, CONVERSATION, system)
    assert fallback.encode_prompt(tiny_tokenizer, CONVERSATION[:3]) == \
        get_template("chatml").encode_prompt(tiny_tokenizer, CONVERSATION[:3])


@pytest.mark.parametrize("system", [None, "You are terse."])
def test_chatml_equals_the_tokenizers_own_chat_template(tiny_tokenizer, system):
    template = get_template("chatml")
    messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
    turns = template.encode_multiturn(tiny_tokenizer, CONVERSATION, system)
    ours = [i for prompt, response in turns for i in prompt + response]
    assert ours == hf_ids(tiny_tokenizer, messages)
    prompt = template.encode_prompt(tiny_tokenizer, CONVERSATION[:3], system)
    assert prompt == hf_ids(tiny_tokenizer, messages[:-1], add_generation_prompt=True)


def test_turns_split_prompt_from_response(tiny_tokenizer):
    turns = get_template("chatml").encode_multiturn(tiny_tokenizer, CONVERSATION)
    assert len(turns) == 2
    decode = tiny_tokenizer.decode
    assert decode(turns[0][0]) == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert decode(turns[0][1]) == "I am Lumen.<|im_end|>\n"
    assert decode(turns[1][1]) == "Forge made me.<|im_end|>\n"


def test_default_template_emits_eos_as_a_token(tiny_tokenizer):
    template = get_template("default")
    (prompt, response), = template.encode_multiturn(tiny_tokenizer, CONVERSATION[:2], "Be kind.")
    assert tiny_tokenizer.decode(prompt) == "System: Be kind.\nHuman: Who are you?\nAssistant: "
    assert tiny_tokenizer.eos_token_id in response
    assert tiny_tokenizer.decode(response) == f"I am Lumen.{tiny_tokenizer.eos_token}\n"


def test_empty_template_is_plain_text(tiny_tokenizer):
    (prompt, response), = get_template("empty").encode_multiturn(tiny_tokenizer, CONVERSATION[:2])
    assert tiny_tokenizer.decode(prompt + response) == "Who are you?I am Lumen."


def test_fix_tokenizer_replaces_eos_and_sets_pad(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    template = get_template("chatml")
    template.fix_tokenizer(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    assert template.stop_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
