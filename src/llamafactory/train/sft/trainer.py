"""Seq2SeqTrainer plus the LlamaFactory options transformers lacks."""

from typing import Any

from transformers import Seq2SeqTrainer


class CustomSeq2SeqTrainer(Seq2SeqTrainer):
    def __init__(self, finetuning_args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finetuning_args = finetuning_args

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # disable_shuffling: keep the data in file order (curricula, ordered corpora).
        if self.finetuning_args.disable_shuffling:
            from torch.utils.data import SequentialSampler

            return SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)
