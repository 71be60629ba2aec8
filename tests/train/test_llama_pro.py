"""LLaMA Pro: the expanded model first computes exactly what the original did; freeze tuning with
use_llama_pro trains only the new blocks."""

import os
import subprocess
import sys

from llamafactory.model.adapter import init_adapter
from tests.train.test_methods import ft_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_expand_keeps_outputs_and_only_new_blocks_train(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    out = str(tmp_path / "pro")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "llama_pro.py"), "--model_name_or_path",
                    tiny_model_dir, "--output_dir", out, "--num_expand", "2"], check=True, capture_output=True)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    expanded = AutoModelForCausalLM.from_pretrained(out)
    assert expanded.config.num_hidden_layers == 4
    ids = torch.tensor([[1, 5, 9, 33, 40]])
    torch.testing.assert_close(expanded(input_ids=ids).logits, original(input_ids=ids).logits)

    model = init_adapter(expanded, None, ft_args(finetuning_type="freeze", use_llama_pro=True,
                                                 freeze_trainable_layers=2), True)
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n, p in model.named_parameters()
              if p.requires_grad and ".layers." in n}
    assert layers == {1, 3}  # the copies inserted after each group of one original layer
