from llamafactory.chat.chat_model import ChatModel

MESSAGES = [{"role": "user", "content": "Who are you?"}]


def test_stream_and_non_stream_agree_and_respect_overrides(tiny_model_dir):
    chat_model = ChatModel(["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--do_sample", "false",
                            "--max_new_tokens", "12"])
    (response,) = chat_model.chat(MESSAGES)
    streamed = "".join(chat_model.stream_chat(MESSAGES))
    assert streamed == response.response_text
    assert response.finish_reason in ("stop", "length") and 0 < response.response_length <= 12
    prompt = chat_model.engine.template.encode_prompt(chat_model.engine.tokenizer, MESSAGES)
    assert response.prompt_length == len(prompt)
    (short,) = chat_model.chat(MESSAGES, max_new_tokens=3)
    assert short.response_length <= 3 and response.response_text.startswith(short.response_text.strip()[:1])
