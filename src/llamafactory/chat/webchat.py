"""`lmf webchat cfg.yaml`: a Gradio chat page over the same ChatModel as `lmf chat` and `lmf api`.

Gradio is an optional extra (`pip install "llamafactory[webui]"`): its releases pin pillow below the version this
project pins, so it is not installed by default. The conversation is kept in template roles in a State, apart
from what the page shows, so tool calls and their results are encoded exactly as in `lmf chat`.
"""

import json
import os
from collections.abc import Iterator
from typing import Any

from ..extras.envs import media_placeholders
from ..extras.errors import ConfigError, UserError

Messages = list[dict[str, str]]


def _import_gradio() -> Any:
    try:
        import gradio
    except ImportError as err:
        raise UserError("`lmf webchat` needs gradio: `pip install \"llamafactory[webui]\"` (gradio pins pillow<13, "
                        "so it is an optional extra)") from err
    return gradio


def _tools(text: str) -> list[dict[str, Any]] | None:
    if not text.strip():
        return None
    try:
        tools = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"tools must be a JSON list of function schemas: {err.msg}") from err
    return tools if isinstance(tools, list) else [tools]


def respond(chat_model: Any, query: str, shown: list[dict[str, str]], conversation: Messages, system: str,
            tools_text: str, max_new_tokens: int, top_p: float, temperature: float, image: Any = None
            ) -> Iterator[tuple[list[dict[str, str]], Messages, str]]:
    """One turn: stream the answer into the page; a tool call waits for its result as the next message.

    An `image` (multimodal models) goes with this message: the message gets the `<image>` placeholder and keeps
    the image, so later turns send every image of the conversation again, in order."""
    query = query.strip()
    if not query:
        yield shown, conversation, ""
        return
    try:
        tools = _tools(tools_text)
    except ValueError as err:
        yield shown + [{"role": "assistant", "content": f"⚠️ {err}"}], conversation, query
        return
    awaiting_result = bool(conversation) and conversation[-1]["role"] == "function"
    message: dict[str, Any] = {"role": "observation" if awaiting_result else "user", "content": query}
    if image is not None:
        message.update(content=media_placeholders()["images"] + query, images=[image])
    conversation = conversation + [message]
    shown = shown + [{"role": "user", "content": ("🖼️ " if image is not None else "") + query},
                     {"role": "assistant", "content": ""}]
    images = [picture for m in conversation for picture in m.get("images", [])]
    answer = ""
    overrides = {"max_new_tokens": int(max_new_tokens), "top_p": float(top_p), "temperature": float(temperature),
                 "do_sample": float(temperature) > 0}
    if images:
        overrides["images"] = images
    for piece in chat_model.stream_chat(conversation, system or None, tools, **overrides):
        answer += piece
        shown[-1] = {"role": "assistant", "content": answer}
        yield shown, conversation, ""
    calls = chat_model.parse_tool_calls(answer) if tools else []
    if calls:
        text = "\n".join(f"Tool call: {c['name']}({json.dumps(c['arguments'], ensure_ascii=False)})" for c in calls)
        shown[-1] = {"role": "assistant", "content": text + "\n\n(send the tool's result as the next message)"}
        conversation = conversation + [{"role": "function", "content": json.dumps(calls, ensure_ascii=False)}]
    else:
        conversation = conversation + [{"role": "assistant", "content": answer}]
    yield shown, conversation, ""


def build_demo(chat_model: Any) -> Any:
    gr = _import_gradio()
    default_system = getattr(chat_model.engine.template, "default_system", "")
    g = chat_model.engine.generating_args
    with gr.Blocks(title="llamafactory chat") as demo:
        chatbot = gr.Chatbot(height=480, label="Chat")
        conversation = gr.State([])
        engine = chat_model.engine  # a text-only model under a multimodal template (gemma3 1B) has no processor
        takes_images = "images" in engine.plugin.kinds and engine.processor is not None
        with gr.Row():
            image = gr.Image(type="pil", label="Image (sent with the next message)", scale=1,
                             visible=takes_images)
            query = gr.Textbox(placeholder="Type a message and press Enter", scale=4, show_label=False)
            clear = gr.Button("Clear history", scale=1)
        with gr.Accordion("Settings", open=False):
            system = gr.Textbox(value=default_system, label="System prompt")
            tools = gr.Textbox(label="Tools (JSON list of function schemas)", lines=3)
            max_new_tokens = gr.Slider(1, 4096, value=g.max_new_tokens, step=1, label="Max new tokens")
            top_p = gr.Slider(0.01, 1.0, value=g.top_p, step=0.01, label="Top-p")
            temperature = gr.Slider(0.0, 1.5, value=g.temperature if g.do_sample else 0.0, step=0.01,
                                    label="Temperature (0 = greedy)")

        def on_submit(*args: Any) -> Iterator[Any]:
            for shown, state, text in respond(chat_model, *args):
                yield shown, state, text, None  # the image went with this message; clear the picker

        query.submit(on_submit, [query, chatbot, conversation, system, tools, max_new_tokens, top_p, temperature,
                                 image], [chatbot, conversation, query, image])
        clear.click(lambda: ([], []), None, [chatbot, conversation])
    return demo


def launch_settings() -> dict[str, Any]:
    """GRADIO_SERVER_NAME / GRADIO_SERVER_PORT / GRADIO_SHARE, read here so a bad value is a one-line error."""
    raw_port = os.getenv("GRADIO_SERVER_PORT", "7860")
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise ConfigError(f"GRADIO_SERVER_PORT must be a port number, got `{raw_port}`")
    share = os.getenv("GRADIO_SHARE", "0").strip().lower() in ("1", "true", "yes", "on")
    return {"server_name": os.getenv("GRADIO_SERVER_NAME", "0.0.0.0"), "server_port": int(raw_port), "share": share}


def run_webchat(argv: list[str]) -> None:
    _import_gradio()  # fail before loading the model
    settings = launch_settings()
    from .chat_model import ChatModel

    chat_model = ChatModel(argv)
    if chat_model.is_reward_model:
        raise UserError("this config loads a reward model (`stage: rm`): it scores texts and cannot chat")
    build_demo(chat_model).queue().launch(**settings)
