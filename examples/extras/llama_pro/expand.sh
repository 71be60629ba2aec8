#!/usr/bin/env bash
# Make a LLaMA Pro copy of the default model with 6 new blocks (30 -> 36 layers), then train only those.
python scripts/llama_pro.py --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --output_dir saves/smollm2-135m-pro --num_expand 6
