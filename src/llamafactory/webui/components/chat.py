"""Chat tab: load the top bar's model (with the chosen adapters) in this process and chat with it, streaming.

The model is a ChatModel, the same one `lmf chat`, `lmf api` and `lmf webchat` use, and each turn goes through
webchat's `respond`, so tool calls and their results are handled exactly as there.
"""

import gc
from collections.abc import Iterator
from typing import Any

from ..args import UIError, chat_config, page_defaults
from ..locales import message
from .context import Context


def create_chat(ctx: Context) -> None:
    gr, m = ctx.gr, ctx.manager
    d = page_defaults()
    with gr.Row():
        m.make("chat", "infer_dtype", gr.Dropdown, choices=["auto", "float16", "bfloat16", "float32"],
               value=d["infer_dtype"], scale=1)
        m.make("chat", "load_model", gr.Button, state=False, variant="primary", scale=1)
        m.make("chat", "unload_model", gr.Button, state=False, scale=1)
    m.make("chat", "chat_info", gr.Markdown, state=False, value="")
    m.make("chat", "chatbot", gr.Chatbot, state=False, height=420)
    m.add("chat", "conversation", gr.State([]), state=False)
    with gr.Row():
        m.make("chat", "system", gr.Textbox, state=False, value="", scale=2)
        m.make("chat", "tools", gr.Textbox, state=False, value="", lines=2, scale=2)
    with gr.Row():
        m.make("chat", "query", gr.Textbox, state=False, value="", scale=5)
        m.make("chat", "submit", gr.Button, state=False, variant="primary", scale=1)
        m.make("chat", "clear", gr.Button, state=False, scale=1)
    with gr.Row():
        m.make("chat", "max_new_tokens", gr.Slider, state=False, minimum=1, maximum=4096, step=1,
               value=d["max_new_tokens"])
        m.make("chat", "top_p", gr.Slider, state=False, minimum=0.01, maximum=1.0, step=0.01, value=d["top_p"])
        m.make("chat", "temperature", gr.Slider, state=False, minimum=0.0, maximum=1.5, step=0.01,
               value=d["temperature"])


def _release(ctx: Context) -> None:
    ctx.chat.model = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def wire_chat(ctx: Context) -> None:
    m = ctx.manager
    lang = m["top.lang"]
    inputs = m.inputs("top", "chat")

    def on_load(lang_value: str, *values: Any) -> Iterator[str]:
        state = m.state(("top", "chat"), values)
        try:
            cfg = chat_config(state)
        except UIError as err:
            yield f"⚠️ {err.text(lang_value)}"
            return
        yield message("info_loading", lang_value)
        from ...chat.chat_model import ChatModel

        with ctx.chat.lock:
            _release(ctx)
            try:
                model = ChatModel(cfg)
            except Exception as err:  # noqa: BLE001 - any loading failure is shown on the page
                yield message("info_chat_failed", lang_value, error=" ".join(str(err).split())[:500])
                return
            if model.is_reward_model:
                yield f"⚠️ {message('err_reward_model', lang_value)}"
                return
            ctx.chat.model = model
        adapters = f" + `{cfg['adapter_name_or_path']}`" if cfg.get("adapter_name_or_path") else ""
        yield message("info_chat_loaded", lang_value, model=cfg["model_name_or_path"], adapters=adapters)

    def on_unload(lang_value: str) -> tuple[str, list, list]:
        with ctx.chat.lock:
            _release(ctx)
        return message("info_chat_unloaded", lang_value), [], []

    def on_submit(lang_value: str, query: str, shown: list, conversation: list, system: str, tools: str,
                  max_new_tokens: int, top_p: float, temperature: float) -> Iterator[Any]:
        model = ctx.chat.model
        if model is None:
            note = {"role": "assistant", "content": f"⚠️ {message('err_no_chat_model', lang_value)}"}
            yield [*(shown or []), note], conversation, query
            return
        from ...chat.webchat import respond

        try:
            yield from respond(model, query, shown or [], conversation or [], system, tools, max_new_tokens, top_p,
                               temperature)
        except Exception as err:  # noqa: BLE001 - e.g. the conversation outgrew the context
            reason = getattr(err, "message", None) or str(err)
            turn = [{"role": "user", "content": query}, {"role": "assistant", "content": f"⚠️ {reason}"}]
            yield [*(shown or []), *turn], conversation, ""

    chat_inputs = [lang, m["chat.query"], m["chat.chatbot"], m["chat.conversation"], m["chat.system"],
                   m["chat.tools"], m["chat.max_new_tokens"], m["chat.top_p"], m["chat.temperature"]]
    chat_outputs = [m["chat.chatbot"], m["chat.conversation"], m["chat.query"]]
    m["chat.load_model"].click(on_load, [lang, *inputs], [m["chat.chat_info"]])
    m["chat.unload_model"].click(on_unload, [lang], [m["chat.chat_info"], m["chat.chatbot"], m["chat.conversation"]])
    m["chat.query"].submit(on_submit, chat_inputs, chat_outputs)
    m["chat.submit"].click(on_submit, chat_inputs, chat_outputs)
    m["chat.clear"].click(lambda: ([], []), None, [m["chat.chatbot"], m["chat.conversation"]])
