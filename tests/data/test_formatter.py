"""Slots are encoded through the fast tokenizer's backend: the ids must be the tokenizer's own."""


def test_slot_text_encodes_as_the_tokenizer_does(tiny_tokenizer):
    from llamafactory.data.formatter import encode_text

    for text in ["<|im_start|>user\nWho are you?<|im_end|>\n", " leading space", "Ünïcode 文字 and  double  spaces",
                 "<|endoftext|>"]:
        assert encode_text(tiny_tokenizer, text) == tiny_tokenizer.encode(text, add_special_tokens=False)
