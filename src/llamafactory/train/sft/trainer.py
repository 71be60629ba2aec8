"""Seq2SeqTrainer plus the LlamaFactory options transformers lacks."""

from typing import Any

from transformers import Seq2SeqTrainer


class CustomSeq2SeqTrainer(Seq2SeqTrainer):
    def __init__(self, finetuning_args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finetuning_args = finetuning_args

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        if self.optimizer is None and self.finetuning_args.loraplus_lr_ratio is not None:
            from ..trainer_utils import create_loraplus_optimizer

            self.optimizer = create_loraplus_optimizer(self.model, self.args, self.finetuning_args)
        return super().create_optimizer(*args, **kwargs)

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # disable_shuffling: keep the data in file order (curricula, ordered corpora).
        if self.finetuning_args.disable_shuffling:
            from torch.utils.data import SequentialSampler

            return SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)
