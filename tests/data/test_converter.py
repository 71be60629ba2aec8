import pytest

from llamafactory.data.converter import convert_alpaca
from llamafactory.data.parser import get_dataset_list
from llamafactory.extras.errors import ConfigError, NotBuiltError
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
    folder = write_dataset(str(tmp_path / "b"), [], entry={"formatting": "sharegpt"})
    with pytest.raises(NotBuiltError, match="`formatting: sharegpt` is not supported yet"):
        get_dataset_list("identity", folder)


def test_listed_columns_replace_the_defaults(tmp_path):
    attr = attr_for(tmp_path, {"columns": {"prompt": "text"}})
    assert attr.columns == {"prompt": "text"}
    out = convert_alpaca({"text": "plain text"}, attr, 0)
    assert out["_prompt"] == [{"role": "user", "content": "plain text"}] and out["_response"] == []


@pytest.mark.parametrize("entry,what", [
    ({"columns": {"prompt": "instruction", "images": "images"}}, "`images` column"),
    ({"columns": {"prompt": "instruction", "tools": "tools"}}, "`tools` column"),
    ({"ranking": True}, "`ranking`"),
])
def test_unbuilt_dataset_features_are_refused_not_ignored(tmp_path, entry, what):
    folder = write_dataset(str(tmp_path), [], entry=entry)
    with pytest.raises(NotBuiltError, match=f"{what} is not supported yet"):
        get_dataset_list("identity", folder)
