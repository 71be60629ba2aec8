"""trl's GRPOTrainer plus two things it lacks here: generation from our template's exact prompt ids, and
the optimizers / scheduler defaults every stage shares (TrainerMixin)."""

from typing import Any

from trl import GRPOTrainer

from ..trainer_utils import TrainerMixin

REF_ADAPTER = "ref"  # the name trl gives its copy of the starting adapter


class CustomGRPOTrainer(TrainerMixin, GRPOTrainer):
    """Rows carry `input_ids` (our template's rendering of the prompt) and `prompt` (the same ids as text, for
    rewards and logs). trl would re-tokenize the text, which can add special tokens or merge tokens differently
    at the template's seams; here the rows' ids go to `generate` untouched."""

    def __init__(self, finetuning_args: Any, **kwargs: Any) -> None:
        self.finetuning_args = finetuning_args
        self._batch_prompt_ids: list[list[int]] | None = None
        super().__init__(**kwargs)

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # trl's sampler repeats each prompt num_generations times, which a plain sequential sampler would break;
        # `disable_shuffling` reaches it as `shuffle_dataset: false` instead.
        return GRPOTrainer._get_train_sampler(self, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        """Save the trained adapter only. With `grpo_beta` > 0 trl adds a frozen copy of the starting adapter,
        named "ref", as the KL reference; peft would save it too, as a `ref/` folder beside the real one."""
        configs = getattr(self.model, "peft_config", None)
        ref = configs.pop(REF_ADAPTER, None) if isinstance(configs, dict) else None
        try:
            super()._save(output_dir, state_dict)
        finally:
            if ref is not None:
                configs[REF_ADAPTER] = ref

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._batch_prompt_ids = [list(row["input_ids"]) for row in inputs]
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._batch_prompt_ids = None

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
        ids = self._batch_prompt_ids
        if ids is None or len(ids) != len(prompts):
            raise RuntimeError("grpo: the prompts to generate from do not match the batch's prompt ids; the "
                               "installed trl calls `_tokenize_prompts` differently than trl 1.16 did")
        return ids, None, {}
