"""Chat templates: each is a small data entry (template_registry.py); one engine renders any of them.

The engine turns a conversation into (prompt ids, response ids) per turn, places the system prompt and
the tool descriptions, renders tool calls in the family's own format (tool_utils.py), applies the rules
of reasoning models (thought blocks), and can write itself out as a Jinja chat template so a saved
tokenizer formats text the way training did. A model without a registered template can still train: its
tokenizer's own chat template is used directly (TokenizerTemplate).
"""

import json
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..extras.errors import ConfigError
from ..extras.logging import get_logger
from .formatter import encode_slot, slot_expr, slot_texts, slot_to_jinja
from .tool_utils import get_tool_format, load_calls, load_tools

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = get_logger(__name__)

# Message roles in the aligned schema (see converter.py).
USER, ASSISTANT, SYSTEM, OBSERVATION, FUNCTION = "user", "assistant", "system", "observation", "function"
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Template:
    name: str
    user: str  # ends with the assistant header, so a prompt is ready for the answer
    assistant: str
    system: str = "{{content}}"
    function: str | None = None  # tool calls; rendered like an assistant turn when None
    observation: str | None = None  # tool results; rendered like a user turn when None
    prefix: str = ""  # once, before everything (e.g. "{{bos_token}}")
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    efficient_eos: bool = False  # assistant slots carry no eos; one eos closes the whole example
    replace_eos: bool = False  # make stop_words[0] the tokenizer's eos token
    system_in_user: bool = False  # no system turn: the system text opens the first user message
    tool_format: str = "default"
    reasoning: bool = False  # a thinking model: thought blocks follow the rules below
    thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")
    aliases: tuple[str, ...] = ()
    mm_plugin: str = "base"  # how media placeholders become the model's tokens (data/mm_plugin.py)
    # Set per run from DataArguments:
    enable_thinking: bool | None = field(default=True, compare=False)
    preserve_thinking: bool = field(default=False, compare=False)

    # ------------------------------------------------------------------------------------ rendering
    def _system_text(self, system: str | None, tools: str | None) -> str:
        system = self.default_system if system is None else system
        if tools:
            try:
                schemas = load_tools(tools)
            except (json.JSONDecodeError, TypeError, KeyError) as err:
                raise ValueError(f"tools are not a JSON list of function schemas: {err}") from err
            system += get_tool_format(self.tool_format).tools(schemas)
        return system

    def _function_text(self, content: str) -> str:
        try:
            return get_tool_format(self.tool_format).calls(load_calls(content))
        except (json.JSONDecodeError, ValueError, TypeError):
            return content  # already written in the model's own call format

    def _strip_thought(self, content: str) -> str:
        start, end = (w.strip() for w in self.thought_words)
        return re.sub(re.escape(start) + r".*?" + re.escape(end), "", content, flags=re.S).lstrip("\n")

    def _empty_thought(self) -> str:
        return self.thought_words[0] + self.thought_words[1]

    def _apply_reasoning(self, messages: Messages) -> tuple[Messages, str]:
        """Thought rules; returns the messages and any text that must close the prompt (untrained)."""
        if not self.reasoning:
            return messages, ""
        messages = [dict(m) for m in messages]
        last = len(messages) - 1 if messages and messages[-1]["role"] == ASSISTANT else None
        for i, message in enumerate(messages):
            if message["role"] == ASSISTANT and i != last and not self.preserve_thinking:
                message["content"] = self._strip_thought(message["content"])
        closing = ""
        if last is not None and self.thought_words[0].strip() not in messages[last]["content"]:
            if self.enable_thinking is True:  # the answer learns to open with an empty thought
                messages[last]["content"] = self._empty_thought() + messages[last]["content"]
            elif self.enable_thinking is False:  # the prompt carries the empty thought, as at inference
                closing = self._empty_thought()
        return messages, closing

    def _encode_messages(self, tokenizer: "PreTrainedTokenizerBase", messages: Messages, system: str | None,
                         tools: str | None) -> list[list[int]]:
        return [[t for slot, text in slots for t in encode_slot(tokenizer, slot, text)]
                for slots in self._message_slots(messages, system, tools)]

    def texts(self, messages: Messages, system: str | None = None, tools: str | None = None) -> list[str]:
        """The texts `encode_multiturn` will tokenize for this conversation (for batch tokenization ahead)."""
        messages, _ = self._apply_reasoning(messages)
        return [t for slots in self._message_slots(messages, system, tools) for slot, text in slots
                for t in slot_texts(slot, text)]

    def _message_slots(self, messages: Messages, system: str | None, tools: str | None
                       ) -> list[list[tuple[str, str]]]:
        """Per message, the (slot, content) pairs that render it."""
        system_text = self._system_text(system, tools)
        encoded = []
        for i, message in enumerate(messages):
            role, content = message["role"], message["content"]
            slots: list[tuple[str, str]] = []
            if i == 0:
                slots.append((self.prefix, ""))
                if system_text and not self.system_in_user:
                    slots.append((self.system, system_text))
            if role == USER:
                if i == 0 and system_text and self.system_in_user:
                    content = self.system.replace("{{content}}", system_text) + content
                slots.append((self.user, content))
            elif role == ASSISTANT:
                slots.append((self.assistant, content))
            elif role == OBSERVATION:
                slots.append((self.observation or self.user, content))
            elif role == FUNCTION:
                slots.append((self.function or self.assistant, self._function_text(content)))
            else:
                raise ValueError(f"unknown message role `{role}`")
            encoded.append(slots)
        return encoded

    def encode_multiturn(self, tokenizer: "PreTrainedTokenizerBase", messages: Messages, system: str | None = None,
                         tools: str | None = None) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) for each turn; messages alternate user-side / assistant-side."""
        messages, closing = self._apply_reasoning(messages)
        encoded = self._encode_messages(tokenizer, messages, system, tools)
        turns = [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded) - 1, 2)]
        if closing and turns:
            prompt, response = turns[-1]
            turns[-1] = (prompt + tokenizer.encode(closing, add_special_tokens=False), response)
        return turns

    def encode_prompt(self, tokenizer: "PreTrainedTokenizerBase", messages: Messages, system: str | None = None,
                      tools: str | None = None) -> list[int]:
        """Ids of a conversation that ends with a user-side turn, ready for the model to answer."""
        messages, _ = self._apply_reasoning(messages)
        ids = [t for piece in self._encode_messages(tokenizer, messages, system, tools) for t in piece]
        if self.reasoning and self.enable_thinking is False:
            ids += tokenizer.encode(self._empty_thought(), add_special_tokens=False)
        return ids

    def extract_tool_calls(self, text: str) -> list[dict[str, Any]] | str:
        """Calls found in a model's answer, or the answer itself when it holds none."""
        return get_tool_format(self.tool_format).parse(text)

    # ------------------------------------------------------------------------------------ tokenizer
    def stop_token_ids(self, tokenizer: "PreTrainedTokenizerBase") -> list[int]:
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for word in self.stop_words:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
                ids.append(token_id)
        return ids

    def fix_tokenizer(self, tokenizer: "PreTrainedTokenizerBase") -> None:
        """eos = the stop word when asked, stop words as special tokens, a pad token, and our chat template."""
        missing = [w for w in self.stop_words if w not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
            logger.warning("Template %s: added %s to the vocabulary; the model's embeddings must grow to match "
                           "(set `resize_vocab: true`).", self.name, ", ".join(missing))
        if self.replace_eos and self.stop_words and tokenizer.eos_token != self.stop_words[0]:
            logger.info("Template %s: eos token set to %s.", self.name, self.stop_words[0])
            tokenizer.eos_token = self.stop_words[0]
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer has no eos token and template `{self.name}` defines no stop word")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
            logger.info("Tokenizer has no pad token; using %s.", tokenizer.eos_token)
        tokenizer.chat_template = self.to_jinja()

    def to_jinja(self) -> str:
        """This template as a Jinja chat template (plain conversations; tools and thoughts are not rendered)."""
        system = "system_message"
        if self.system_in_user:
            user_first = slot_to_jinja(self.user, f"({slot_expr(self.system, system)}) + content")
        else:
            user_first = slot_to_jinja(self.user, "content")
        lines = [
            "{%- if messages and messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
            "{%- set loop_messages = messages[1:] %}{%- else %}"
            f"{{%- set system_message = {json.dumps(self.default_system, ensure_ascii=False)} %}}"
            "{%- set loop_messages = messages %}{%- endif %}",
            slot_to_jinja(self.prefix, "''"),
        ]
        if not self.system_in_user:
            lines.append(f"{{%- if system_message %}}{slot_to_jinja(self.system, system)}{{%- endif %}}")
        lines += [
            "{%- for message in loop_messages %}{%- set content = message['content'] %}",
            "{%- if message['role'] == 'user' %}{%- if loop.first and system_message %}" + user_first
            + "{%- else %}" + slot_to_jinja(self.user, "content") + "{%- endif %}",
            "{%- elif message['role'] == 'assistant' %}" + slot_to_jinja(self.assistant, "content"),
            "{%- elif message['role'] == 'tool' %}" + slot_to_jinja(self.observation or self.user, "content"),
            "{%- endif %}{%- endfor %}",
        ]
        return "".join(line for line in lines if line)


def batch_texts(template: Any, conversations: list[tuple[Messages, str | None, str | None]]) -> list[str]:
    """Every text the template will tokenize for these (messages, system, tools) conversations, for
    `formatter.prefetched`; empty where a row cannot be rendered (its error is raised, with the row, later)."""
    texts: list[str] = []
    for messages, system, tools in conversations:
        try:
            texts += template.texts(messages, system or None, tools or None)
        except Exception:  # noqa: BLE001 - the same error comes again, with its row, when the row is encoded
            continue
    return texts


class TokenizerTemplate:
    """The tokenizer's own Jinja chat template, for models without a registered template.

    Turn boundaries come from rendering growing prefixes of the conversation, so the answer tokens (and
    only those) are trained, whatever the template looks like. `enable_thinking` (unless None) is handed to
    the Jinja template, which reasoning models' templates read (Qwen3: false closes the prompt with an empty
    thought) and others ignore.
    """

    name = "tokenizer"
    efficient_eos = False
    reasoning = False
    mm_plugin = "base"

    def __init__(self, enable_thinking: bool | None = None) -> None:
        self.enable_thinking = enable_thinking

    def _render(self, tokenizer: "PreTrainedTokenizerBase", conversation: list[dict[str, Any]], generation: bool,
                tools: str | None) -> str:
        schemas = [{"type": "function", "function": t} for t in load_tools(tools)] if tools else None
        extra = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation,
                                             tools=schemas, **extra)

    def _pieces(self, tokenizer: "PreTrainedTokenizerBase", messages: Messages, system: str | None,
                tools: str | None) -> list[list[int]]:
        roles = {USER: "user", ASSISTANT: "assistant", OBSERVATION: "tool", FUNCTION: "assistant"}
        conversation: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        start = len(conversation)
        pieces, previous = [], ""
        for i, message in enumerate(messages):
            conversation.append({"role": roles[message["role"]], "content": message["content"]})
            is_prompt = message["role"] in (USER, OBSERVATION)
            text = self._render(tokenizer, conversation[: start + i + 1], is_prompt, tools)
            if not text.startswith(previous):
                raise ConfigError("this model's chat template renders earlier turns differently as a conversation "
                                  "grows, so answers cannot be located; set `template` to a registered one")
            pieces.append(tokenizer.encode(text[len(previous):], add_special_tokens=False))
            previous = text
        return pieces

    def texts(self, messages: Messages, system: str | None = None, tools: str | None = None) -> list[str]:
        return []  # the pieces depend on rendering growing prefixes; nothing to tokenize ahead

    def encode_multiturn(self, tokenizer: "PreTrainedTokenizerBase", messages: Messages, system: str | None = None,
                         tools: str | None = None) -> list[tuple[list[int], list[int]]]:
        pieces = self._pieces(tokenizer, messages, system, tools)
        return [(pieces[i], pieces[i + 1]) for i in range(0, len(pieces) - 1, 2)]

    def encode_prompt(self, tokenizer: "PreTrainedTokenizerBase", messages: Messages, system: str | None = None,
                      tools: str | None = None) -> list[int]:
        return [t for piece in self._pieces(tokenizer, messages, system, tools) for t in piece]

    def extract_tool_calls(self, text: str) -> str:
        return text

    def stop_token_ids(self, tokenizer: "PreTrainedTokenizerBase") -> list[int]:
        return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def fix_tokenizer(self, tokenizer: "PreTrainedTokenizerBase") -> None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token


TEMPLATES: dict[str, Template] = {}


def register(template: Template) -> None:
    for name in (template.name, *template.aliases):
        if name in TEMPLATES:
            raise ValueError(f"template `{name}` is registered twice")
        TEMPLATES[name] = template


def _registry() -> dict[str, Template]:
    from . import template_registry  # noqa: F401 - registers the entries on first use

    return TEMPLATES


def get_template(name: str | None, tokenizer: "PreTrainedTokenizerBase | None" = None) -> Any:
    templates = _registry()
    if name is None:
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            logger.info("`template` is not set; using the model's own chat template.")
            return TokenizerTemplate()
        logger.warning("`template` is not set and the model has no chat template (a base model?); using "
                       "`empty` (plain text). Set `template` to train a chat format.")
        name = "empty"
    if name not in templates:
        raise ConfigError(f"unknown template `{name}`; available: {', '.join(sorted(templates))}")
    return templates[name]


def get_template_and_fix_tokenizer(tokenizer: "PreTrainedTokenizerBase", data_args: Any) -> Any:
    template = get_template(data_args.template, tokenizer)
    if isinstance(template, Template):
        changes: dict[str, Any] = {"enable_thinking": data_args.enable_thinking,
                                   "preserve_thinking": getattr(data_args, "preserve_thinking", False)}
        if data_args.default_system is not None:
            changes["default_system"] = data_args.default_system
        if getattr(data_args, "tool_format", None):
            changes["tool_format"] = data_args.tool_format
        template = replace(template, **changes)
    else:
        template = TokenizerTemplate(enable_thinking=data_args.enable_thinking)
    template.fix_tokenizer(tokenizer)
    return template
