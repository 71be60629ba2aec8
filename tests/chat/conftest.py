import pytest

from tests.chat.helpers import build_reward_model


@pytest.fixture(scope="session")
def chat_model(tiny_model_dir):
    from llamafactory.chat.chat_model import ChatModel

    return ChatModel(["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--do_sample", "false",
                      "--max_new_tokens", "12"])


@pytest.fixture(scope="session")
def reward_dir(tiny_model_dir, tmp_path_factory):
    return build_reward_model(tiny_model_dir, str(tmp_path_factory.mktemp("rm-lora")))


@pytest.fixture(scope="session")
def reward_model(tiny_model_dir, reward_dir):
    from llamafactory.chat.chat_model import ChatModel

    return ChatModel({"model_name_or_path": tiny_model_dir, "adapter_name_or_path": reward_dir, "stage": "rm",
                      "finetuning_type": "lora", "template": "chatml"})
