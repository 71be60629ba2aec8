"""Data: dataset_info.json -> loader -> converter (aligned schema) -> template -> processor -> collator.

Needs a tokenizer, never a model.
"""
