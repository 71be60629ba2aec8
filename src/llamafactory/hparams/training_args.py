"""Training arguments: transformers' Seq2SeqTrainingArguments plus the keys LlamaFactory configs add.

transformers 5 dropped some keys that LlamaFactory configs still carry (`warmup_ratio`,
`overwrite_output_dir`, `evaluation_strategy`, `no_cuda`); they are declared here and mapped onto their
current equivalents, so existing YAML files run unchanged.
"""

from dataclasses import dataclass

from transformers import Seq2SeqTrainingArguments

from .fields import arg


@dataclass
class TrainingArguments(Seq2SeqTrainingArguments):
    overwrite_output_dir: bool = arg(False, "Allow writing into an output_dir that already holds results.")
    warmup_ratio: float | None = arg(None, "Share of the steps used for warmup (transformers 4 name).")
    evaluation_strategy: str | None = arg(None, "Old name of `eval_strategy`.")
    no_cuda: bool = arg(False, "Old name of `use_cpu`.")
    force_cpu_bf16: bool = arg(False, "Keep `bf16: true` on a CPU without bf16 instructions (AVX512-BF16/AMX), "
                               "which otherwise trains in fp32: emulated bf16 is many times slower there.")
    ray_run_name: str | None = arg(None, "Ray Train run name.", planned=True)
    ray_storage_path: str = arg("./saves", "Ray Train storage path.", planned=True)
    ray_storage_filesystem: str | None = arg(None, "Ray Train storage filesystem.", planned=True)
    ray_num_workers: int = arg(1, "Ray Train workers.", planned=True)
    resources_per_worker: dict | str = arg("{'GPU': 1}", "Ray Train resources per worker.", planned=True)
    placement_strategy: str = arg("PACK", "Ray Train placement strategy.", planned=True)
    ray_init_kwargs: dict | str | None = arg(None, "Arguments for ray.init.", planned=True)

    def __post_init__(self) -> None:
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps:
                raise ValueError("set either `warmup_ratio` or `warmup_steps`, not both")
            self.warmup_steps = self.warmup_ratio  # transformers 5 reads a float below 1 as a ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.no_cuda:
            self.use_cpu = True
        super().__post_init__()
