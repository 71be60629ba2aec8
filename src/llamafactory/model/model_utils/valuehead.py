"""A scalar head on a causal LM's last hidden state: the reward model (rm) and the PPO critic.

The head is saved on its own as `value_head.safetensors` (keys `v_head.summary.weight` and
`v_head.summary.bias`, the names LlamaFactory's reward models use) beside the adapter or full weights, so a
reward model is "the saved model + one small file" and either side can load the other's.
"""

import os
from typing import Any

import torch

VALUE_HEAD_FILE = "value_head.safetensors"
WEIGHT_KEY, BIAS_KEY = "v_head.summary.weight", "v_head.summary.bias"


def hidden_size(model: Any) -> int:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def decoder_of(model: Any) -> Any:
    """The transformer body without the LM head: scoring needs hidden states, not vocabulary-wide logits.
    LoRA layers live inside the body's modules, so they still apply."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


class ValueHeadModel(torch.nn.Module):
    """`pretrained_model` (plain or peft) plus `v_head`, a Linear(hidden, 1) kept in fp32."""

    def __init__(self, pretrained_model: Any) -> None:
        super().__init__()
        self.pretrained_model = pretrained_model
        self.v_head = torch.nn.Linear(hidden_size(pretrained_model), 1)
        self.v_head.to(next(pretrained_model.parameters()).device)
        self.config = pretrained_model.config

    def values(self, input_ids: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
        """One value per position, from the body alone (no LM head)."""
        out = decoder_of(self.pretrained_model)(input_ids=input_ids, attention_mask=attention_mask,
                                                use_cache=False, **kwargs)
        return self.v_head(out.last_hidden_state.float()).squeeze(-1)

    def forward(self, input_ids: Any, attention_mask: Any = None, score_only: bool = False,
                **kwargs: Any) -> Any:
        """Logits and values from one pass (PPO's policy and critic share the body); with `score_only`, the
        value at each row's last real token from the body alone (reward models). Going through forward()
        keeps DDP's gradient synchronisation when the model is wrapped."""
        if score_only:
            values = self.values(input_ids, attention_mask, **kwargs)
            return values.gather(1, last_token_index(attention_mask).unsqueeze(1)).squeeze(1)
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                    output_hidden_states=True, **kwargs)
        return out.logits, self.v_head(out.hidden_states[-1].float()).squeeze(-1)

    def score(self, input_ids: Any, attention_mask: Any) -> Any:
        """The value at each row's last real token (rows padded on the right or on the left)."""
        return self(input_ids, attention_mask, score_only=True)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.pretrained_model.gradient_checkpointing_enable(**kwargs)

    def save_value_head(self, folder: str) -> None:
        save_value_head(self.v_head, folder)

    def load_value_head(self, folder: str) -> bool:
        state = read_value_head(folder)
        if state is None:
            return False
        self.v_head.load_state_dict(state)
        return True


def last_token_index(attention_mask: Any) -> Any:
    """Index of the last 1 in each row of the mask, wherever the padding is."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def save_value_head(v_head: Any, folder: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {WEIGHT_KEY: v_head.weight.detach().float().cpu().contiguous(),
             BIAS_KEY: v_head.bias.detach().float().cpu().contiguous()}
    save_file(state, os.path.join(folder, VALUE_HEAD_FILE), metadata={"format": "pt"})


def read_value_head(folder: str) -> dict[str, Any] | None:
    """{weight, bias} from folder/value_head.safetensors, or None when the folder has no head."""
    path = os.path.join(folder, VALUE_HEAD_FILE)
    if not os.path.isfile(path):
        return None
    from safetensors.torch import load_file

    state = load_file(path)
    return {"weight": state[WEIGHT_KEY], "bias": state[BIAS_KEY]}
