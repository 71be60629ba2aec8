"""What to train: the stage, the fine-tuning method and each method's settings."""

from dataclasses import dataclass

from .fields import arg

STAGES = ("pt", "sft", "rm", "ppo", "dpo", "kto", "grpo")
FINETUNING_TYPES = ("lora", "freeze", "full", "oft")


@dataclass
class FinetuningArguments:
    stage: str = arg("sft", "Training stage.", choices=STAGES)
    finetuning_type: str = arg("lora", "Fine-tuning method.", choices=FINETUNING_TYPES)
    pure_bf16: bool = arg(False, "Train in pure bf16 (trainable weights not upcast to fp32).")
    use_llama_pro: bool = arg(False, "Freeze tuning of LLaMA Pro blocks (see scripts/llama_pro.py).")
    use_adam_mini: bool = arg(False, "Use the Adam-mini optimizer.")
    use_muon: bool = arg(False, "Use the Muon optimizer.")
    freeze_vision_tower: bool = arg(True, "Multimodal models: keep the vision (or audio) tower frozen; false "
                                    "trains it (in full, or with LoRA under `lora_target: all`).")
    freeze_multi_modal_projector: bool = arg(True, "Multimodal models: keep the projector frozen; false trains it "
                                             "in full (with LoRA: saved with the adapter).")
    freeze_language_model: bool = arg(False, "Multimodal models: keep the language model frozen (an error on a "
                                      "text-only model).")
    compute_accuracy: bool = arg(False, "Report token accuracy in evaluation.")
    disable_shuffling: bool = arg(False, "Keep the training data in order.")
    early_stopping_steps: int | None = arg(None, "Stop when the eval metric stalls this many times.",
                                           planned=True)
    plot_loss: bool = arg(False, "Save training_loss.png (and eval_loss.png) after training.")
    include_effective_tokens_per_second: bool = arg(False, "Report effective tokens per second.",
                                                    planned=True)
    # freeze
    freeze_trainable_layers: int = arg(2, "Last n (positive) or first n (negative) layers to train.")
    freeze_trainable_modules: str = arg("all", "Comma-separated modules trained inside those layers.")
    freeze_extra_modules: str | None = arg(None, "Comma-separated modules outside the layers to train.")
    # lora
    additional_target: str | None = arg(None, "Comma-separated modules trained fully beside LoRA.")
    lora_alpha: int | None = arg(None, "LoRA scale numerator (default: 2 x lora_rank).")
    lora_dropout: float = arg(0.0, "Dropout on the LoRA input.")
    lora_rank: int = arg(8, "LoRA rank.")
    lora_target: str = arg("all", "Comma-separated module names, or `all` for every linear layer but the head.")
    loraplus_lr_ratio: float | None = arg(None, "LoRA+ learning-rate ratio of B to A.")
    loraplus_lr_embedding: float = arg(1e-6, "LoRA+ learning rate of embeddings.")
    use_rslora: bool = arg(False, "Rank-stabilized LoRA scaling.")
    use_dora: bool = arg(False, "Weight-decomposed LoRA (DoRA).")
    pissa_init: bool = arg(False, "Initialize LoRA with PiSSA.")
    pissa_iter: int = arg(16, "Fast SVD iterations for PiSSA.")
    pissa_convert: bool = arg(False, "Also save the PiSSA adapter as plain LoRA for the original base "
                               "(in output_dir/pissa_converted).")
    create_new_adapter: bool = arg(False, "Start a new adapter on top of the loaded ones.")
    # oft
    oft_rank: int = arg(0, "OFT rank (0 when oft_block_size is set).")
    oft_block_size: int = arg(32, "OFT block size.")
    oft_target: str = arg("all", "Modules OFT is applied to.")
    module_dropout: float = arg(0.0, "OFT module dropout.")
    # preference and RL stages
    pref_beta: float = arg(0.1, "Beta of the preference loss.")
    pref_ftx: float = arg(0.0, "Weight of the SFT loss in DPO.")
    pref_bco_weight: float = arg(0.0, "Weight of the BCO loss in DPO.", planned=True)
    pref_loss: str = arg("sigmoid", "Preference loss.",
                         choices=("sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"))
    dpo_label_smoothing: float = arg(0.0, "Robust DPO label smoothing.")
    kto_chosen_weight: float = arg(1.0, "KTO weight of desirable examples.")
    kto_rejected_weight: float = arg(1.0, "KTO weight of undesirable examples.")
    simpo_gamma: float = arg(0.5, "SimPO target reward margin.")
    ppo_buffer_size: int = arg(1, "Mini-batches per PPO optimisation step.")
    ppo_epochs: int = arg(4, "PPO epochs per step.")
    ppo_score_norm: bool = arg(False, "Normalize PPO scores.")
    ppo_target: float = arg(6.0, "Target KL for adaptive control.")
    ppo_whiten_rewards: bool = arg(False, "Whiten PPO rewards.")
    ref_model: str | None = arg(None, "Reference model path.")
    ref_model_adapters: str | None = arg(None, "Reference model adapters.")
    ref_model_quantization_bit: int | None = arg(None, "Reference model quantization.")
    reward_model: str | None = arg(None, "Reward model path or URL.")
    reward_model_adapters: str | None = arg(None, "Reward model adapters.")
    reward_model_quantization_bit: int | None = arg(None, "Reward model quantization.")
    reward_model_type: str = arg("lora", "Reward model type.", choices=("lora", "full", "api"))
    ld_alpha: float | None = arg(None, "LD-DPO: weight of answer tokens beyond the shorter answer's length.")
    precompute_ref_logps: bool = arg(False, "dpo/kto: compute the reference log-probabilities once, before "
                                     "training, and cache them on disk (keyed by reference model, adapters and "
                                     "data), so later runs on the same data skip the reference model.")
    ref_logps_cache_dir: str | None = arg(None, "Where precomputed reference log-probabilities are cached "
                                         "(default: ~/.cache/llamafactory/ref_logps).")
    # grpo (beyond LlamaFactory)
    reward_funcs: list[str] | None = arg(None, "grpo rule rewards: `exact_match`, `regex:PATTERN`, "
                                         "`format:PATTERN` (whole answer must match), `length:N` (closer to N "
                                         "characters is better) or a Python function as `module.path:function`.")
    reward_weights: list[float] | None = arg(None, "grpo: one weight per reward (reward_funcs, then "
                                             "reward_model); default 1 each.")
    num_generations: int = arg(4, "grpo: answers sampled per prompt (the group).")
    max_completion_length: int = arg(128, "grpo: most new tokens per sampled answer.")
    grpo_beta: float = arg(0.04, "grpo: weight of the KL penalty towards the reference model (0: no reference).")
    # memory-saving optimizers
    use_galore: bool = arg(False, "Use the GaLore optimizer.")
    galore_layerwise: bool = arg(False, "Layer-wise GaLore updates.")
    galore_target: str = arg("all", "Modules GaLore applies to.")
    galore_rank: int = arg(16, "GaLore rank.")
    galore_update_interval: int = arg(200, "Steps between GaLore projections.")
    galore_scale: float = arg(2.0, "GaLore scale.")
    galore_proj_type: str = arg("std", "GaLore projection type.")
    use_apollo: bool = arg(False, "Use the APOLLO optimizer.")
    apollo_layerwise: bool = arg(False, "Layer-wise APOLLO updates.")
    apollo_target: str = arg("all", "Modules APOLLO applies to.")
    apollo_rank: int = arg(16, "APOLLO rank.")
    apollo_update_interval: int = arg(200, "Steps between APOLLO projections.")
    apollo_scale: float = arg(32.0, "APOLLO scale.")
    apollo_proj: str = arg("random", "APOLLO projection.")
    apollo_proj_type: str = arg("std", "APOLLO projection type.")
    apollo_scale_type: str = arg("channel", "APOLLO scale type.")
    use_badam: bool = arg(False, "Use the BAdam optimizer.")
    badam_mode: str = arg("layer", "BAdam mode (layer-wise blocks).", choices=("layer",))
    badam_start_block: int | None = arg(None, "BAdam first block.")
    badam_switch_mode: str = arg("ascending", "BAdam block switch order.")
    badam_switch_interval: int = arg(50, "Steps between BAdam block switches.")
    badam_update_ratio: float = arg(0.05, "BAdam ratio mode update share.", planned=True)
    badam_mask_mode: str = arg("adjacent", "BAdam ratio mode mask.", planned=True)
    badam_verbose: int = arg(0, "BAdam verbosity.")
    # experiment tracking
    use_swanlab: bool = arg(False, "Log to SwanLab.", planned=True)
    swanlab_project: str = arg("llamafactory", "SwanLab project.", planned=True)
    swanlab_workspace: str | None = arg(None, "SwanLab workspace.", planned=True)
    swanlab_run_name: str | None = arg(None, "SwanLab run name.", planned=True)
    swanlab_mode: str = arg("cloud", "SwanLab mode.", planned=True)
    swanlab_api_key: str | None = arg(None, "SwanLab API key.", planned=True)
    swanlab_logdir: str | None = arg(None, "SwanLab log folder.", planned=True)

    def lora_alpha_or_default(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else self.lora_rank * 2
