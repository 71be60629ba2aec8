"""Where PPO's scores come from: a reward model in full, the rm adapter on the policy's own base, or an HTTP API.

Every source has `score(sequences, attention_mask) -> Tensor[rows]`: `sequences` are left-padded prompts
followed by right-padded answers, `attention_mask` marks the real tokens (the answer's stop token included).
Model sources score at the last real token, as stage rm trains them to.
"""

import copy
import json
import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Any

import torch

from ...extras.errors import ConfigError, UserError
from ...extras.logging import get_logger
from ...model.model_utils.valuehead import decoder_of, hidden_size, last_token_index, read_value_head
from .trainer import position_ids

logger = get_logger(__name__)

API_TIMEOUT = 120.0  # seconds for one scoring request
REWARD_ADAPTER = "reward"


def _at_last_token(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return values.gather(1, last_token_index(attention_mask).unsqueeze(1)).squeeze(1)


class ModelReward:
    """`reward_model_type: full`: a separate reward model (ValueHeadModel) with its own weights in memory."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @torch.no_grad()
    def score(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        values = self.model.values(sequences, attention_mask, position_ids=position_ids(attention_mask))
        return _at_last_token(values, attention_mask)


class AdapterReward:
    """`reward_model_type: lora`: the rm adapter loaded beside the policy's adapter on the same PeftModel.

    The base weights are shared, so scoring costs no second copy of the model; the reward adapter is active
    only inside `score`, with its own value head, and the policy's adapter (and which weights train) is
    restored afterwards.
    """

    def __init__(self, policy: Any, folder: str) -> None:
        lm = policy.pretrained_model
        if not hasattr(lm, "peft_config"):
            raise ConfigError("`reward_model_type: lora` loads the reward adapter on the policy's LoRA model: set "
                              "`finetuning_type: lora`, or use `reward_model_type: full`")
        if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
            raise UserError(f"reward_model `{folder}` is not an adapter folder (no adapter_config.json): with "
                            "`reward_model_type: lora` it must be the output of a LoRA `stage: rm` run; use "
                            "`reward_model_type: full` for a full reward model")
        state = read_value_head(folder)
        if state is None:
            raise UserError(f"reward_model `{folder}` has no value_head.safetensors: a reward adapter is the output "
                            "of `stage: rm`")
        self.policy = policy
        self.head = torch.nn.Linear(hidden_size(lm), 1)
        self.head.load_state_dict(state)
        self.head.requires_grad_(False)
        lm.load_adapter(folder, adapter_name=REWARD_ADAPTER, is_trainable=False)
        logger.info("Reward adapter loaded from %s beside the policy's adapter.", folder)

    @contextmanager
    def _active(self) -> Any:
        """The reward adapter switched in; the policy's adapter and every requires_grad flag put back after."""
        lm = self.policy.pretrained_model
        before = lm.active_adapter
        trainable = {id(p) for p in lm.parameters() if p.requires_grad}
        lm.set_adapter(REWARD_ADAPTER, inference_mode=True)
        try:
            yield lm
        finally:
            lm.set_adapter(before)
            for param in lm.parameters():
                param.requires_grad_(id(param) in trainable)

    @torch.no_grad()
    def score(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with self._active() as lm:
            hidden = decoder_of(lm)(input_ids=sequences, attention_mask=attention_mask,
                                    position_ids=position_ids(attention_mask), use_cache=False).last_hidden_state
        self.head.to(hidden.device)  # the trainer moves the policy after this source was built
        values = self.head(hidden.float()).squeeze(-1)
        return _at_last_token(values, attention_mask)


class ApiReward:
    """`reward_model_type: api`: POST {"model": "llamafactory", "messages": [text, ...]} to the URL, one text
    (prompt and answer, special tokens kept) per row; the reply must be {"scores": [number, ...]}."""

    def __init__(self, url: str, tokenizer: Any, timeout: float = API_TIMEOUT) -> None:
        self.url, self.tokenizer, self.timeout = url, tokenizer, timeout

    def texts(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(sequences.cpu(), attention_mask.cpu())]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=False)

    def score(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        texts = self.texts(sequences, attention_mask)
        scores = self.request(texts)
        return torch.tensor(scores, dtype=torch.float32, device=sequences.device)

    def request(self, texts: list[str]) -> list[float]:
        body = json.dumps({"model": "llamafactory", "messages": texts}).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", errors="replace") if err.fp else ""
            raise UserError(f"reward API {self.url} answered HTTP {err.code}: {_short(detail or err.reason)}") from err
        except (urllib.error.URLError, OSError) as err:  # refused, unknown host, timeout
            reason = getattr(err, "reason", err)
            raise UserError(f"reward API {self.url} cannot be reached: {_short(str(reason))}") from err
        try:
            scores = json.loads(raw)["scores"]
            scores = [float(s) for s in scores]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"reward API {self.url} must answer {{\"scores\": [number, ...]}}, got: {_short(raw)}"
                            ) from err
        if len(scores) != len(texts):
            raise UserError(f"reward API {self.url} returned {len(scores)} scores for {len(texts)} texts")
        return scores


def _short(text: Any, limit: int = 200) -> str:
    """One line, not too long, for an error message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def load_reward(policy: Any, tokenizer: Any, template: Any, model_args: Any, finetuning_args: Any, dtype: Any) -> Any:
    """The reward source that `reward_model_type` names."""
    kind, target = finetuning_args.reward_model_type, finetuning_args.reward_model
    if kind == "api":
        logger.info("Scoring answers with the reward API at %s.", target)
        return ApiReward(target, tokenizer)
    if kind == "lora":
        return AdapterReward(policy, target)
    from ...model.loader import load_model, load_tokenizer

    reward_args = copy.copy(model_args)
    reward_args.model_name_or_path = target
    reward_args.adapter_name_or_path = finetuning_args.reward_model_adapters
    reward_args.quantization_bit = finetuning_args.reward_model_quantization_bit
    reward_tokenizer = load_tokenizer(reward_args)
    template.fix_tokenizer(reward_tokenizer)
    if reward_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"reward_model `{target}` has another vocabulary than `model_name_or_path`: PPO scores the "
                          "policy's token ids directly, so train the reward model from the same base model")
    load_args = copy.copy(finetuning_args)
    load_args.finetuning_type = "lora"  # so reward_model_adapters, if any, are merged into it
    model = load_model(tokenizer, reward_args, load_args, False, dtype, add_valuehead=True)
    logger.info("Reward model loaded from %s%s.", target,
                f" with adapters {finetuning_args.reward_model_adapters}" if finetuning_args.reward_model_adapters
                else "")
    return ModelReward(model)
