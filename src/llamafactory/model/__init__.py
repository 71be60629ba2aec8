"""Model: resolve the path, load tokenizer and weights, patch them, attach the fine-tuning method."""
