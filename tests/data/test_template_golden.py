"""Golden renderings of every registered template: prompt and trained text per turn, for a single turn, a
multi-turn conversation with a system prompt, a tool call with its result, and a reasoning exchange.

The file was reviewed against each family's own chat template; a change to any rendering fails here.
After an intended change: LMF_UPDATE_GOLDEN=1 pytest tests/data/test_template_golden.py
"""

import json
import os

import pytest

from llamafactory.data.template import TEMPLATES, _registry

_registry()
GOLDEN = os.path.join(os.path.dirname(__file__), "golden_templates.json")
TOOLS = json.dumps([{"name": "get_weather", "description": "Weather of a city",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
CASES = {
    "single": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], None, None),
    "multi_system": ([{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Lumen."},
                      {"role": "user", "content": "Who made you?"}, {"role": "assistant", "content": "Forge."}],
                     "Be brief.", None),
    "tools": ([{"role": "user", "content": "Weather in Paris?"},
               {"role": "function", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
               {"role": "observation", "content": '{"temp": 18}'},
               {"role": "assistant", "content": "It is 18 degrees."}], None, TOOLS),
    "reasoning": ([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n2"},
                   {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], None, None),
}


def render_all(tok) -> dict:
    out = {}
    for name in sorted(TEMPLATES):
        template = TEMPLATES[name]
        out[name] = {case: [[tok.decode(p), tok.decode(r)] for p, r in
                            template.encode_multiturn(tok, messages, system, tools)]
                     for case, (messages, system, tools) in CASES.items()}
    return out


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.bos_token = "<|im_start|>"
    return tokenizer


def test_every_template_renders_its_golden_text(tok):
    rendered = render_all(tok)
    if os.getenv("LMF_UPDATE_GOLDEN") == "1":
        with open(GOLDEN, "w", encoding="utf-8") as f:
            json.dump(rendered, f, ensure_ascii=False, indent=1)
    with open(GOLDEN, encoding="utf-8") as f:
        golden = json.load(f)
    assert sorted(golden) == sorted(rendered), "templates added or removed: regenerate the golden file"
    for name in golden:
        assert rendered[name] == golden[name], f"template `{name}` renders differently from its golden text"
