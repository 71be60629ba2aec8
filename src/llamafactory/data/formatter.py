"""Slots: template text with `{{content}}` for the message and `{{bos_token}}` / `{{eos_token}}` for the
tokenizer's own special tokens, which are emitted as ids so they never depend on how text is split."""

import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

SPECIAL = re.compile(r"(\{\{bos_token\}\}|\{\{eos_token\}\})")
_prefetch = threading.local()  # (tokenizer, {text: ids}) while a batch is being tokenized in this thread


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


def slot_texts(slot: str, content: str) -> list[str]:
    """The texts `encode_slot` hands to the tokenizer for this slot and content, in order."""
    texts = []
    for piece in SPECIAL.split(slot):
        if piece and piece not in ("{{bos_token}}", "{{eos_token}}"):
            text = piece.replace("{{content}}", content)
            if text:
                texts.append(text)
    return texts


def _backend(tokenizer: Any) -> Any:
    """A fast tokenizer's Rust tokenizer when calling it directly gives transformers' ids, else None."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode") and \
            getattr(backend, "encode_special_tokens", False) == bool(getattr(tokenizer, "split_special_tokens", False)):
        return backend
    return None


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """`tokenizer.encode(text, add_special_tokens=False)`. A fast tokenizer's Rust backend is called directly: the
    ids are the same (transformers hands the text to it unchanged), without transformers' per-call Python, which
    is most of the time of tokenizing a dataset one message at a time. Inside `prefetched`, texts encoded ahead
    in one parallel batch are looked up instead."""
    cached = getattr(_prefetch, "value", None)
    if cached is not None and cached[0] is tokenizer:
        ids = cached[1].get(text)
        if ids is not None:
            return list(ids)
    backend = _backend(tokenizer)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer.encode(text, add_special_tokens=False)


@contextmanager
def prefetched(tokenizer: Any, texts: Iterable[str]) -> Iterator[None]:
    """Encode `texts` in one call of the Rust backend (threads across the CPU cores, each distinct text once),
    so that `encode_text` in this block finds their ids ready. A text not listed is encoded as usual, so a
    wrong guess of what will be encoded costs time, never correctness."""
    backend = _backend(tokenizer)
    unique = list(dict.fromkeys(texts)) if backend is not None else []
    if not unique:
        yield
        return
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets, which only ids never need.
    encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
    encodings = encode(unique, add_special_tokens=False)
    previous = getattr(_prefetch, "value", None)
    _prefetch.value = (tokenizer, {text: enc.ids for text, enc in zip(unique, encodings)})
    try:
        yield
    finally:
        _prefetch.value = previous


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
