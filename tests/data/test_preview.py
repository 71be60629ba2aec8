"""Statistics read from Arrow columns must count what the rows hold, after any selection of rows."""

from llamafactory.data.preview import token_counts, trained_tokens


def test_token_counts_and_trained_tokens_follow_the_selected_rows():
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": [[1, 2, 3], [4], [5, 6]], "labels": [[-100, 2, 3], [-100], [5, 6]]})
    assert token_counts(data, "input_ids").tolist() == [3, 1, 2]
    assert trained_tokens(data, "labels") == 4
    picked = data.select([2, 1])
    assert token_counts(picked, "input_ids").tolist() == [2, 1]
    assert trained_tokens(picked, "labels") == 2

