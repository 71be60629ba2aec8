"""Which model to load and how: path, adapters, tokenizer, attention, dtype, quantization, export, engines."""

from dataclasses import dataclass, field

from .fields import arg


@dataclass
class ModelArguments:
    model_name_or_path: str | None = arg(None, "Hub id, local HF folder or .gguf file of the base model.")
    adapter_name_or_path: str | None = arg(
        None, "Comma-separated adapter paths; earlier ones are merged, the last is trained or used.")
    adapter_folder: str | None = arg(None, "Folder holding extra adapter weights.", planned=True)
    cache_dir: str | None = arg(None, "Where downloaded models and datasets are cached.")
    use_fast_tokenizer: bool = arg(True, "Use the fast (Rust) tokenizer.")
    resize_vocab: bool = arg(False, "Resize the embeddings to the tokenizer's vocabulary.")
    split_special_tokens: bool = arg(False, "Split special tokens in text during tokenization.")
    add_tokens: str | None = arg(None, "Comma-separated non-special tokens to add.")
    add_special_tokens: str | None = arg(None, "Comma-separated special tokens to add.")
    model_revision: str = arg("main", "Model version (branch, tag or commit) on the hub.")
    low_cpu_mem_usage: bool = arg(True, "Load weights without a second full copy in memory.")
    rope_scaling: str | None = arg(
        None, "RoPE scaling: linear, dynamic, yarn or llama3.", choices=("linear", "dynamic", "yarn", "llama3"))
    flash_attn: str = arg("auto", "Attention kernel.", choices=("auto", "disabled", "sdpa", "fa2"))
    shift_attn: bool = arg(False, "Shift short attention (S^2-Attn).", planned=True)
    mixture_of_depths: str | None = arg(None, "Convert or load a mixture-of-depths model.", planned=True)
    use_unsloth: bool = arg(False, "Use unsloth's optimized LoRA kernels.", planned=True)
    use_unsloth_gc: bool = arg(False, "Use unsloth's gradient checkpointing.", planned=True)
    enable_liger_kernel: bool = arg(False, "Use liger kernels.")
    moe_aux_loss_coef: float | None = arg(None, "Coefficient of the MoE router auxiliary loss.")
    disable_gradient_checkpointing: bool = arg(False, "Turn off gradient checkpointing (on by default).")
    use_reentrant_gc: bool = arg(True, "Use reentrant gradient checkpointing.")
    upcast_layernorm: bool = arg(False, "Keep layer norms in fp32.")
    upcast_lmhead_output: bool = arg(False, "Compute the LM head output in fp32.")
    train_from_scratch: bool = arg(False, "Initialize weights randomly instead of loading them.")
    infer_backend: str = arg("huggingface", "Inference engine.", choices=("huggingface", "vllm", "sglang"))
    offload_folder: str = arg("offload", "Folder for offloaded weights.", planned=True)
    use_cache: bool = arg(True, "Use the KV cache in generation.")
    infer_dtype: str = arg("auto", "Dtype for inference and export. auto: bf16 on GPUs that have it (else "
                           "fp16); on a CPU, bf16 for generation where the CPU has bf16 instructions, fp32 otherwise.",
                           choices=("auto", "float16", "bfloat16", "float32"))
    hf_hub_token: str | None = arg(None, "Token for the Hugging Face hub.")
    ms_hub_token: str | None = arg(None, "Token for ModelScope.")
    om_hub_token: str | None = arg(None, "Token for Modelers.", planned=True)
    print_param_status: bool = arg(False, "Print each parameter's dtype, device and trainability.")
    trust_remote_code: bool = arg(False, "Allow model code from the hub to run.")
    # quantization
    quantization_method: str = arg("bnb", "Quantization backend.", choices=("bnb", "bitsandbytes", "hqq", "eetq"))
    quantization_bit: int | None = arg(None, "Quantize the base model on the fly to 4 or 8 bits.")
    quantization_type: str = arg("nf4", "4-bit data type.", choices=("fp4", "nf4"))
    double_quantization: bool = arg(True, "Double quantization in 4-bit.")
    quantization_device_map: str | None = arg(None, "Device map for quantized models.", planned=True)
    # export
    export_dir: str | None = arg(None, "Where `lmf export` writes the model.")
    export_size: float = arg(5, "Shard size of exported weight files, in GB (fractions allowed).")
    export_device: str = arg("cpu", "Device used to merge and export (auto: a GPU when there is one).",
                             choices=("cpu", "auto"))
    export_quantization_bit: int | None = arg(None, "GPTQ bits for export (needs a GPU and gptqmodel/optimum).")
    export_quantization_dataset: str | None = arg(None, "Calibration data for GPTQ (a json/jsonl/txt file).")
    export_quantization_nsamples: int = arg(128, "Calibration samples.")
    export_quantization_maxlen: int = arg(1024, "Calibration sequence length.")
    export_legacy_format: bool = arg(False, "Write .bin instead of safetensors.")
    export_hub_model_id: str | None = arg(None, "Hub repository to push the export to.")
    export_format: str = arg("safetensors", "Exported format: a Hugging Face folder or one llama.cpp GGUF file.",
                             choices=("safetensors", "gguf"))
    export_gguf_type: str = arg("f16", "GGUF weight type of 2-D tensors (norms stay f32).",
                                choices=("f16", "bf16", "q8_0"))
    # vLLM and SGLang engines
    vllm_maxlen: int = arg(4096, "vLLM maximum sequence length.", planned=True)
    vllm_gpu_util: float = arg(0.7, "vLLM GPU memory share.", planned=True)
    vllm_enforce_eager: bool = arg(False, "Disable CUDA graphs in vLLM.", planned=True)
    vllm_max_lora_rank: int = arg(32, "Largest LoRA rank vLLM serves.", planned=True)
    vllm_config: dict | str | None = arg(None, "Extra vLLM engine settings.", planned=True)
    sglang_maxlen: int = arg(4096, "SGLang maximum sequence length.", planned=True)
    sglang_mem_fraction: float = arg(0.7, "SGLang GPU memory share.", planned=True)
    sglang_tp_size: int = arg(-1, "SGLang tensor parallel size.", planned=True)
    sglang_config: dict | str | None = arg(None, "Extra SGLang engine settings.", planned=True)
    sglang_lora_backend: str = arg("triton", "SGLang LoRA backend.", planned=True)
    # multimodal processors (copied onto the processor by model.loader.load_processor; read by data/mm_plugin)
    image_max_pixels: int = arg(768 * 768, "Largest image area in pixels (larger images are scaled down).")
    image_min_pixels: int = arg(32 * 32, "Smallest image area in pixels (smaller images are scaled up).")
    image_do_pan_and_scan: bool = arg(False, "Gemma3: also feed crops of large, elongated images (pan and scan).")
    crop_to_patches: bool = arg(False, "InternVL crop to patches.", planned=True)
    video_max_pixels: int = arg(256 * 256, "Largest video frame area in pixels.")
    video_min_pixels: int = arg(16 * 16, "Smallest video frame area in pixels.")
    video_fps: float = arg(2.0, "Frames sampled per second of video.")
    video_maxlen: int = arg(128, "Most frames sampled from a video.")
    use_audio_in_video: bool = arg(False, "Use a video's audio track.", planned=True)
    audio_sampling_rate: int = arg(16000, "Sampling rate audio is resampled to, in Hz.")
    # Set by the parser, not by users: the longest sequence a run feeds the model (cutoff_len).
    model_max_length: int | None = field(default=None, init=False)
