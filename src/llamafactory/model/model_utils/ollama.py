"""An Ollama Modelfile for an exported model: the chat template in Go-template syntax, the default system
prompt and the stop words, so `ollama create NAME -f Modelfile` formats prompts the way training did.

The Go template is written on one line per slot with no `{{-` trim markers: trimming would also eat the
newlines that belong to the slot text (e.g. the "\\n" after `<|im_end|>`).
"""

import re
from typing import Any

from ...extras.errors import UserError

_SPECIAL = re.compile(r"(\{\{bos_token\}\}|\{\{eos_token\}\}|\{\{content\}\})")


def slot_to_go(slot: str, content: str, eos_token: str) -> str:
    """A template slot (`{{content}}`, `{{bos_token}}`, `{{eos_token}}`) as Go-template text.

    `{{bos_token}}` is left out: Ollama's tokenizer adds BOS itself when the model's tokenizer does
    (`add_bos_token`), and writing it here too would double it.
    """
    out = []
    for piece in _SPECIAL.split(slot):
        if piece == "{{content}}":
            out.append(content)
        elif piece == "{{eos_token}}":
            out.append(eos_token.replace("{{", '{{ "{{" }}'))
        elif piece and piece != "{{bos_token}}":
            out.append(piece.replace("{{", '{{ "{{" }}'))
    return "".join(out)


def go_template(template: Any, eos_token: str) -> str:
    """Our template's plain-conversation format (system, user, assistant, tool turns) for Ollama."""
    def go(slot: str, content: str) -> str:
        return slot_to_go(slot, content, eos_token)

    user = go(template.user, "{{ .Content }}")
    parts = [go(template.prefix, "")]
    if template.system_in_user:
        first_user = go(template.user, go(template.system, "{{ $.System }}") + "{{ .Content }}")
        user = f"{{{{ if and $first $.System }}}}{first_user}{{{{ else }}}}{user}{{{{ end }}}}"
        parts.append("{{ $first := true }}")
    else:
        parts.append(f"{{{{ if .System }}}}{go(template.system, '{{ .System }}')}{{{{ end }}}}")
    parts += [
        "{{ range .Messages }}",
        f'{{{{ if eq .Role "user" }}}}{user}',
        "{{ $first = false }}" if template.system_in_user else "",
        f'{{{{ else if eq .Role "assistant" }}}}{go(template.assistant, "{{ .Content }}")}',
        f'{{{{ else if eq .Role "tool" }}}}{go(template.observation or template.user, "{{ .Content }}")}',
        "{{ end }}{{ end }}",
    ]
    return "".join(parts)


def _quote(value: str, what: str) -> str:
    if '"""' in value:
        raise UserError(f"cannot write the Ollama Modelfile: the {what} contains \"\"\"")
    return f'"""{value}"""'


def render_modelfile(source: str, template: Any, stop_words: list[str], eos_token: str | None) -> str:
    """The Modelfile text. `template` is a registered Template, or None to leave the format to Ollama."""
    lines = [f"FROM {source}", ""]
    if template is not None:
        lines.append(f"TEMPLATE {_quote(go_template(template, eos_token or ''), 'chat template')}")
        lines.append("")
        if template.default_system:
            lines.append(f"SYSTEM {_quote(template.default_system, 'default system prompt')}")
            lines.append("")
    else:
        lines.append("# No registered `template` was set: Ollama uses the chat template stored with the model.")
        lines.append("")
    seen = []
    for word in [*stop_words, *([eos_token] if eos_token else [])]:
        if word and word not in seen:
            seen.append(word)
    for word in seen:
        if '"' in word or "\n" in word:
            raise UserError(f"cannot write the Ollama Modelfile: stop word {word!r} holds a quote or a newline")
        lines.append(f'PARAMETER stop "{word}"')
    return "\n".join(lines) + "\n"
