"""A PiSSA adapter converted at the end of training behaves, on the untouched base model, exactly like the
trained PiSSA model (whose base holds only the residual weights)."""

from types import SimpleNamespace

from llamafactory.model.adapter import init_adapter
from llamafactory.train.callbacks import PissaConvertCallback
from tests.train.test_methods import ft_args


def test_converted_adapter_matches_the_trained_pissa_model(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = init_adapter(base, SimpleNamespace(adapter_name_or_path=None),
                         ft_args(finetuning_type="lora", pissa_init=True, pissa_iter=4), True)
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    state = SimpleNamespace(is_world_process_zero=True)
    callback = PissaConvertCallback()
    callback.on_train_begin(args, state, None, model=model)
    with torch.no_grad():  # "training": move every adapter weight
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(0.05 * torch.randn_like(param))
    ids = torch.tensor([[1, 5, 9, 33, 40, 2]])
    trained = model(input_ids=ids).logits
    callback.on_train_end(args, state, None, model=model)

    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    converted = PeftModel.from_pretrained(original, str(tmp_path / "pissa_converted"))
    assert converted.peft_config["default"].r == 16  # twice the rank, as the conversion needs
    torch.testing.assert_close(converted(input_ids=ids).logits, trained, rtol=1e-4, atol=1e-4)
