"""Chat templates: each is a small data entry; one engine renders any of them into token ids.

A slot is text with `{{content}}` where the message goes and `{{bos_token}}` / `{{eos_token}}` where the
tokenizer's own special tokens go (emitted as ids, so they never depend on how text is split).
"""

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..extras.errors import ConfigError
from ..extras.logging import get_logger

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = get_logger(__name__)

_SPECIAL = re.compile(r"(\{\{bos_token\}\}|\{\{eos_token\}\})")

# Message roles in the aligned schema (see converter.py).
USER, ASSISTANT, SYSTEM, OBSERVATION, FUNCTION = "user", "assistant", "system", "observation", "function"


@dataclass(frozen=True)
class Template:
    name: str
    user: str
    assistant: str
    system: str = "{{content}}"
    observation: str | None = None  # tool results; rendered like a user turn when None
    function: str | None = None  # tool calls; rendered like an assistant turn when None
    prefix: str = ""  # once, before everything (e.g. "{{bos_token}}")
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    replace_eos: bool = False  # make stop_words[0] the tokenizer's eos token
    aliases: tuple[str, ...] = field(default=())

    # ------------------------------------------------------------------------------------ rendering
    def _encode_slot(self, tokenizer: "PreTrainedTokenizerBase", slot: str, content: str) -> list[int]:
        ids: list[int] = []
        for piece in _SPECIAL.split(slot):
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
                    ids.extend(tokenizer.encode(text, add_special_tokens=False))
        return ids

    def _encode_messages(self, tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]],
                         system: str | None) -> list[list[int]]:
        system = self.default_system if system is None else system
        encoded = []
        for i, message in enumerate(messages):
            role, content = message["role"], message["content"]
            slots = []
            if i == 0:
                slots.append((self.prefix, ""))
                if system:
                    slots.append((self.system, system))
            if role == USER:
                slots.append((self.user, content))
            elif role == ASSISTANT:
                slots.append((self.assistant, content))
            elif role == OBSERVATION:
                slots.append((self.observation or self.user, content))
            elif role == FUNCTION:
                slots.append((self.function or self.assistant, content))
            else:
                raise ValueError(f"unknown message role `{role}`")
            ids: list[int] = []
            for slot, text in slots:
                ids.extend(self._encode_slot(tokenizer, slot, text))
            encoded.append(ids)
        return encoded

    def encode_multiturn(self, tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]],
                         system: str | None = None) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) for each turn; messages alternate user-side / assistant-side."""
        encoded = self._encode_messages(tokenizer, messages, system)
        return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded) - 1, 2)]

    def encode_prompt(self, tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]],
                      system: str | None = None) -> list[int]:
        """Ids of a conversation that ends with a user turn, ready for the model to answer."""
        return [i for ids in self._encode_messages(tokenizer, messages, system) for i in ids]

    # ------------------------------------------------------------------------------------ tokenizer
    def stop_token_ids(self, tokenizer: "PreTrainedTokenizerBase") -> list[int]:
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for word in self.stop_words:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
                ids.append(token_id)
        return ids

    def fix_tokenizer(self, tokenizer: "PreTrainedTokenizerBase") -> None:
        """Make eos the template's stop word when asked, and give the tokenizer a pad token."""
        if self.replace_eos and self.stop_words:
            word = self.stop_words[0]
            if word not in tokenizer.get_vocab():
                raise ConfigError(f"template `{self.name}` needs the token `{word}`, which this tokenizer lacks; "
                                  "choose the template that matches the model")
            if tokenizer.eos_token != word:
                logger.info("Template %s: eos token set to %s.", self.name, word)
                tokenizer.eos_token = word
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer has no eos token and template `{self.name}` defines no stop word")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
            logger.info("Tokenizer has no pad token; using %s.", tokenizer.eos_token)


TEMPLATES: dict[str, Template] = {}


def register(template: Template) -> None:
    for name in (template.name, *template.aliases):
        TEMPLATES[name] = template


def get_template(name: str | None, tokenizer: "PreTrainedTokenizerBase | None" = None) -> Template:
    if name is None:
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            raise ConfigError("`template` is not set, but this model has a chat template: set `template` to the "
                              f"matching one ({', '.join(sorted(TEMPLATES))}) so training and chat format alike")
        logger.warning("`template` is not set and the model has no chat template; using `empty` (plain text).")
        name = "empty"
    if name not in TEMPLATES:
        raise ConfigError(f"unknown template `{name}`; available: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def get_template_and_fix_tokenizer(tokenizer: "PreTrainedTokenizerBase", data_args: Any) -> Template:
    template = get_template(data_args.template, tokenizer)
    if data_args.default_system is not None:
        template = replace(template, default_system=data_args.default_system)
    template.fix_tokenizer(tokenizer)
    return template


# ------------------------------------------------------------------------------------------- registry
_CHATML = dict(
    user="<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
    assistant="{{content}}<|im_end|>\n",
    system="<|im_start|>system\n{{content}}<|im_end|>\n",
    observation="<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
    stop_words=("<|im_end|>",),
    replace_eos=True,
)

register(Template(name="empty", user="{{content}}", assistant="{{content}}"))
register(Template(
    name="default",
    user="Human: {{content}}\nAssistant: ",
    assistant="{{content}}{{eos_token}}\n",
    system="System: {{content}}\n",
))
register(Template(name="chatml", **_CHATML))
register(Template(
    name="smollm2",
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    **_CHATML,
))
