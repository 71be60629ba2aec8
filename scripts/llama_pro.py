"""Expand a model with LLaMA Pro blocks: after every group of layers, a copy of the group's last layer whose
output projections are zeroed, so the expanded model computes exactly what the original did until the new
blocks are trained (`finetuning_type: freeze` with `use_llama_pro: true`).

    python scripts/llama_pro.py --model_name_or_path path/to/model --output_dir path/to/expanded --num_expand 8
"""

import argparse
import copy
import os
import sys

ZEROED = ("o_proj", "down_proj", "dense_4h_to_h", "out_proj", "c_proj")  # the projections back into the stream


def expand(model: object, num_expand: int) -> object:
    import torch

    layers = model.model.layers
    total = len(layers)
    if num_expand <= 0 or total % num_expand:
        sys.exit(f"--num_expand must divide the {total} layers evenly")
    group = total // num_expand
    expanded = []
    for i, layer in enumerate(layers):
        expanded.append(layer)
        if (i + 1) % group == 0:
            block = copy.deepcopy(layer)
            for name, module in block.named_modules():
                if name.split(".")[-1] in ZEROED and isinstance(module, torch.nn.Linear):
                    torch.nn.init.zeros_(module.weight)
                    if module.bias is not None:
                        torch.nn.init.zeros_(module.bias)
            expanded.append(block)
    for index, layer in enumerate(expanded):  # caches address layers by index
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    model.model.layers = torch.nn.ModuleList(expanded)
    model.config.num_hidden_layers = len(expanded)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[0]] * len(expanded)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_expand", type=int, required=True)
    args = parser.parse_args()
    if os.path.exists(args.output_dir) and os.listdir(args.output_dir):
        sys.exit(f"{args.output_dir} already holds files; choose a new folder")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    before = model.config.num_hidden_layers
    expand(model, args.num_expand)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"Expanded {before} -> {model.config.num_hidden_layers} layers; saved to {args.output_dir}. Train it with "
          f"finetuning_type: freeze, use_llama_pro: true, freeze_trainable_layers: {args.num_expand}.")


if __name__ == "__main__":
    main()
