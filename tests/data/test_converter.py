import pytest

from llamafactory.data.converter import convert_alpaca, convert_openai, convert_sharegpt
from llamafactory.data.parser import get_dataset_list
from llamafactory.extras.errors import ConfigError
from tests.conftest import write_dataset


def attr_for(tmp_path, entry=None):
    folder = write_dataset(str(tmp_path), [{"instruction": "q", "input": "", "output": "a"}], entry=entry)
    return get_dataset_list("identity", folder)[0]


def test_alpaca_instruction_input_history_system(tmp_path):
    attr = attr_for(tmp_path, {"columns": {"prompt": "instruction", "query": "input", "response": "output",
                                           "history": "history", "system": "system"}})
    row = {"instruction": "Translate", "input": "hola", "output": "hello", "system": "Be brief.",
           "history": [["hi", "hello!"]]}
    out = convert_alpaca(row, attr, 0)
    assert out["_prompt"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "Translate\nhola"},
    ]
    assert out["_response"] == [{"role": "assistant", "content": "hello"}]
    assert out["_system"] == "Be brief." and out["_tools"] == ""


def test_missing_column_names_dataset_row_and_column(tmp_path):
    attr = attr_for(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset `identity` .* row 4: column `output` \(the `response` column\) "
                                          r"is missing"):
        convert_alpaca({"instruction": "q", "input": ""}, attr, 4)


def test_bad_history_is_named(tmp_path):
    attr = attr_for(tmp_path, {"columns": {"prompt": "instruction", "response": "output", "history": "history"}})
    with pytest.raises(ConfigError, match="row 2: each `history` item must be a \\[query, response\\] pair"):
        convert_alpaca({"instruction": "q", "input": "", "output": "a", "history": [["only one"]]}, attr, 2)


def test_dataset_info_errors(tmp_path):
    folder = write_dataset(str(tmp_path), [], entry={"colums": {}})
    with pytest.raises(ConfigError, match="dataset `identity`: unknown key `colums`"):
        get_dataset_list("identity", folder)
    with pytest.raises(ConfigError, match="dataset `other` is not defined in .*; defined: identity"):
        get_dataset_list("other", folder)
    with pytest.raises(ConfigError, match="dataset_info.json` not found"):
        get_dataset_list("x", str(tmp_path / "nowhere"))
    folder = write_dataset(str(tmp_path / "b"), [], entry={"formatting": "sharegpt2"})
    with pytest.raises(ConfigError, match="`formatting` must be one of alpaca, sharegpt, openai"):
        get_dataset_list("identity", folder)


def test_listed_columns_replace_the_defaults(tmp_path):
    attr = attr_for(tmp_path, {"columns": {"prompt": "text"}})
    assert attr.columns == {"prompt": "text"}
    out = convert_alpaca({"text": "plain text"}, attr, 0)
    assert out["_prompt"] == [{"role": "user", "content": "plain text"}] and out["_response"] == []


@pytest.mark.parametrize("key", ["images", "videos", "audios"])
def test_media_columns_are_accepted(tmp_path, key):
    attr = attr_for(tmp_path, {"columns": {"prompt": "instruction", key: "media"}})
    assert attr.column(key) == "media" and attr.may_have_media  # tests/data/test_mm_pipeline.py covers the rest


def sharegpt_attr(tmp_path, **entry):
    base = {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system", "tools": "tools"}}
    return attr_for(tmp_path, {**base, **entry})


def test_sharegpt_system_tools_function_calls_and_observations(tmp_path):
    attr = sharegpt_attr(tmp_path)
    row = {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp": 18}'},
        {"from": "gpt", "value": "It is 18 degrees."},
    ], "system": "Be brief.", "tools": '[{"name": "get_weather", "parameters": {}}]'}
    out = convert_sharegpt(row, attr, 0)
    assert [m["role"] for m in out["_prompt"]] == ["user", "function", "observation"]
    assert out["_response"] == [{"role": "assistant", "content": "It is 18 degrees."}]
    assert out["_system"] == "Be brief." and out["_drop"] == ""
    assert out["_tools"] == '[{"name": "get_weather", "parameters": {}}]'


def test_sharegpt_system_turn_custom_tags_and_kto(tmp_path):
    attr = sharegpt_attr(tmp_path, columns={"messages": "messages", "kto_tag": "label"},
                         tags={"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant"})
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"}], "label": False}
    out = convert_sharegpt(row, attr, 0)
    assert out["_system"] == "S" and out["_kto_tag"] is False and out["_drop"] == ""
    assert out["_prompt"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("messages,reason", [
    ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}], "wrong role order"),
    ([{"from": "human", "value": "q"}], "odd number of turns"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}], "empty response"),
    ([{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}], "unknown role `robot`"),
    ([{"from": "human", "value": "q"}, {"from": "system", "value": "s"}], "system message after the first turn"),
])
def test_sharegpt_rows_that_break_the_format_get_a_reason(tmp_path, messages, reason):
    out = convert_sharegpt({"conversations": messages, "system": None, "tools": None}, sharegpt_attr(tmp_path), 3)
    assert out["_drop"] == reason


def test_sharegpt_ranking(tmp_path):
    attr = sharegpt_attr(tmp_path, ranking=True,
                         columns={"messages": "conversations", "chosen": "chosen", "rejected": "rejected"})
    row = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"},
           "rejected": {"from": "gpt", "value": "bad"}}
    out = convert_sharegpt(row, attr, 0)
    assert [m["content"] for m in out["_response"]] == ["good", "bad"] and out["_drop"] == ""
    row["rejected"] = {"from": "gpt", "value": ""}
    assert convert_sharegpt(row, attr, 0)["_drop"] == "empty chosen or rejected response"


def test_alpaca_ranking_and_kto(tmp_path):
    attr = attr_for(tmp_path, {"ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen",
                                                            "rejected": "rejected"}})
    out = convert_alpaca({"instruction": "q", "chosen": "good", "rejected": "bad"}, attr, 0)
    assert [m["content"] for m in out["_response"]] == ["good", "bad"]


def test_openai_tool_calls_become_function_turns(tmp_path):
    attr = attr_for(tmp_path / "o", {"formatting": "openai", "columns": {"messages": "messages", "tools": "tools"}})
    row = {"messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "Convert 3 km"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "convert", "arguments": '{"value": 3, "unit": "km"}'}}]},
        {"role": "tool", "content": "1.86 miles"},
        {"role": "assistant", "content": "3 km is 1.86 miles."},
    ], "tools": [{"type": "function", "function": {"name": "convert", "parameters": {}}}]}
    out = convert_openai(row, attr, 0)
    assert out["_drop"] == "" and out["_system"] == "S"
    assert out["_prompt"][0] == {"role": "user", "content": "Convert 3 km"}
    assert out["_prompt"][1] == {"role": "function",
                                 "content": '{"name": "convert", "arguments": {"value": 3, "unit": "km"}}'}
    assert out["_prompt"][2] == {"role": "observation", "content": "1.86 miles"}
    assert out["_tools"] == '[{"name": "convert", "parameters": {}}]'
