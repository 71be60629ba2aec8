"""Score multiple-choice questions by the logits of the answer letters where the assistant reply begins.

The prompt is the chat template's rendering of the few-shot conversation (tasks.build_messages), ending with
the assistant header of the last turn. The model's next-token logits there are compared over one token per
option letter: the first token the template writes for an assistant answer that is just that letter ("A",
not " A", for ChatML-style templates, the same token the few-shot answers show). The highest wins; a tie goes
to the earlier letter. Prompts are batched with left padding and explicit position ids, so a question gets
the same logits alone or in any batch.
"""

from dataclasses import dataclass
from typing import Any

from ..extras.errors import ConfigError
from ..extras.logging import get_logger
from .tasks import LETTERS, Question, Subject, build_messages

logger = get_logger(__name__)


def answer_token_ids(tokenizer: Any, template: Any, num_options: int) -> list[int]:
    """One token id per option letter: the first token of an assistant answer consisting of that letter."""
    ids = []
    for letter in LETTERS[:num_options]:
        conversation = [{"role": "user", "content": "?"}, {"role": "assistant", "content": letter}]
        response = template.encode_multiturn(tokenizer, conversation)[-1][1]
        first = response[0] if response else None
        if first is None or tokenizer.decode([first]).strip() != letter:
            shown = tokenizer.convert_ids_to_tokens(response[:3]) if response else []
            raise ConfigError(f"template `{template.name}` writes the answer {letter!r} as tokens {shown}, not as one "
                              "token of its own, so answers cannot be scored by a letter's logit")
        ids.append(first)
    if len(set(ids)) != len(ids):
        raise ConfigError("two answer letters share a token in this tokenizer; they cannot be told apart")
    return ids


@dataclass
class SubjectScores:
    predictions: list[int]  # chosen option per question
    correct: list[bool]
    fewer_shots: int = 0  # questions whose prompt dropped few-shot examples to fit cutoff_len
    truncated: int = 0  # questions cut from the left even without examples


class ChoiceScorer:
    def __init__(self, model: Any, tokenizer: Any, template: Any, num_options: int, batch_size: int,
                 max_length: int) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.batch_size, self.max_length = batch_size, max_length
        self.letter_ids = answer_token_ids(tokenizer, template, num_options)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._keep_last_only = True  # ask the model for the last position's logits only, when it accepts that

    # ------------------------------------------------------------------------------------ prompts
    def encode(self, subject: Subject, question: Question, lang: str) -> tuple[list[int], int, bool]:
        """Prompt ids, how many few-shot examples were dropped to fit max_length, and whether it was cut."""
        shots = list(subject.shots)
        dropped = 0
        while True:
            ids = self.template.encode_prompt(self.tokenizer, build_messages(subject, question, lang, shots))
            if len(ids) <= self.max_length or not shots:
                break
            shots, dropped = shots[1:], dropped + 1  # the earliest example goes first
        if len(ids) > self.max_length:
            return ids[-self.max_length:], dropped, True
        return ids, dropped, False

    # ------------------------------------------------------------------------------------ scoring
    def letter_logits(self, prompts: list[list[int]]) -> Any:
        """Float tensor [len(prompts), num_options]: each letter's logit at the end of each prompt."""
        import torch

        device = _device(self.model)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt):] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                  "position_ids": position_ids.to(device), "use_cache": False}
        with torch.inference_mode():
            if self._keep_last_only:
                try:
                    logits = self.model(**inputs, logits_to_keep=1).logits
                except TypeError:  # a model class without `logits_to_keep`
                    self._keep_last_only = False
            if not self._keep_last_only:
                logits = self.model(**inputs).logits
        return logits[:, -1, self.letter_ids].float().cpu()

    def score(self, subject: Subject, lang: str, progress: Any = None) -> SubjectScores:
        encoded = [self.encode(subject, q, lang) for q in subject.questions]
        # Longest first: batches of similar lengths waste little on padding, and memory peaks at the start.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        predictions = [0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            logits = self.letter_logits([encoded[i][0] for i in rows])
            for row, i in enumerate(rows):
                options = len(subject.questions[i].options)
                predictions[i] = int(logits[row, :options].argmax())
            if progress is not None:
                progress.update(len(rows))
        correct = [p == q.answer for p, q in zip(predictions, subject.questions)]
        return SubjectScores(predictions, correct, sum(1 for e in encoded if e[1]), sum(1 for e in encoded if e[2]))


def _device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is not None:
        return device
    import torch

    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
