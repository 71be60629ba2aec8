"""Shared by the chat and API tests: scripted answers, a slowed model, and a tiny reward model built locally."""

import os

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL_TEXT = 'Action: get_weather\nAction Input: {"city": "Paris"}'


def script_answer(engine, text: str, monkeypatch) -> None:
    """Make the model "answer" `text`, then the template's stop word, then junk that must never be shown."""
    import torch

    answer = engine.tokenizer.encode(text, add_special_tokens=False) + [engine.stop_ids[0]]
    answer += engine.tokenizer.encode(" junk", add_special_tokens=False)

    def generate(input_ids, streamer=None, num_return_sequences=1, **kwargs):
        rows = input_ids.repeat(num_return_sequences, 1)
        out = torch.cat([rows, torch.tensor([answer] * num_return_sequences)], dim=1)
        if streamer is not None:
            streamer.put(input_ids.cpu())
            for token in answer:
                streamer.put(torch.tensor([token]))
            streamer.end()
        return out

    monkeypatch.setattr(engine.model, "generate", generate)


class SlowSteps:
    """A forward hook that makes every decoding step take `delay` seconds and counts the steps."""

    def __init__(self, model, delay: float = 0.02) -> None:
        import time

        self.steps = 0

        def hook(module, args, kwargs):
            self.steps += 1
            time.sleep(delay)

        self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)

    def remove(self) -> None:
        self.handle.remove()


def build_reward_model(model_dir: str, out: str) -> str:
    """A LoRA adapter plus value_head.safetensors: what `stage: rm` with finetuning_type lora saves."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llamafactory.model.model_utils.valuehead import save_value_head

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(out)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    save_value_head(head, out)
    assert os.path.isfile(os.path.join(out, "value_head.safetensors"))
    return out
