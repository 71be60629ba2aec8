"""Slots: template text with `{{content}}` for the message and `{{bos_token}}` / `{{eos_token}}` for the
tokenizer's own special tokens, which are emitted as ids so they never depend on how text is split."""

import json
import re
from typing import Any

SPECIAL = re.compile(r"(\{\{bos_token\}\}|\{\{eos_token\}\})")


def encode_slot(tokenizer: Any, slot: str, content: str) -> list[int]:
    ids: list[int] = []
    for piece in SPECIAL.split(slot):
        if not piece:
            continue
        if piece == "{{bos_token}}":
            if tokenizer.bos_token_id is not None:
                ids.append(tokenizer.bos_token_id)
        elif piece == "{{eos_token}}":
            ids.append(tokenizer.eos_token_id)
        else:
            text = piece.replace("{{content}}", content)
            if text:
                ids.extend(encode_text(tokenizer, text))
    return ids


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """`tokenizer.encode(text, add_special_tokens=False)`. A fast tokenizer's Rust backend is called directly: the
    ids are the same (transformers hands the text to it unchanged), without transformers' per-call Python, which
    is most of the time of tokenizing a dataset one message at a time."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode") and \
            getattr(backend, "encode_special_tokens", False) == bool(getattr(tokenizer, "split_special_tokens", False)):
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer.encode(text, add_special_tokens=False)


def slot_expr(slot: str, content: str) -> str:
    """The Jinja expression for `slot`, with the Jinja expression `content` in place of {{content}}."""
    parts: list[str] = []
    for piece in SPECIAL.split(slot):
        if piece == "{{bos_token}}":
            parts.append("bos_token")
        elif piece == "{{eos_token}}":
            parts.append("eos_token")
        elif piece:
            chunks = piece.split("{{content}}")
            for i, chunk in enumerate(chunks):
                if i:
                    parts.append(content)
                if chunk:
                    parts.append(json.dumps(chunk, ensure_ascii=False))
    return " + ".join(parts) if parts else "''"


def slot_to_jinja(slot: str, content: str) -> str:
    """A Jinja statement that outputs `slot` rendered with the Jinja expression `content`."""
    return "{{- " + slot_expr(slot, content) + " }}" if slot else ""
