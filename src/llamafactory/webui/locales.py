"""Every string the web UI shows, in English and Chinese: component labels (LABELS) and messages (MESSAGES).

A component named `name` on tab `tab` takes LABELS[f"{tab}.{name}"] if present, else LABELS[name]. Each entry maps
a language to the component properties to set: `label` and `info` for inputs, `value` for buttons and markdown.
"""

from typing import Any

LANGS = {"en": "English", "zh": "中文"}


def _l(en: str, zh: str, en_info: str = "", zh_info: str = "") -> dict[str, dict[str, str]]:
    if en_info:
        return {"en": {"label": en, "info": en_info}, "zh": {"label": zh, "info": zh_info}}
    return {"en": {"label": en}, "zh": {"label": zh}}


def _v(en: str, zh: str) -> dict[str, dict[str, str]]:
    return {"en": {"value": en}, "zh": {"value": zh}}


LABELS: dict[str, dict[str, dict[str, str]]] = {
    # tabs and sections
    "tab_train": _l("Train", "训练"),
    "tab_eval": _l("Evaluate & Predict", "评估与预测"),
    "tab_chat": _l("Chat", "对话"),
    "tab_export": _l("Export", "导出"),
    "title": _v("## llamafactory web UI\nEvery run started here is an ordinary `lmf train` (or `lmf export`) "
                "run on a YAML file written into its output folder.",
                "## llamafactory 网页界面\n这里启动的每个任务都是一次普通的 `lmf train`（或 `lmf export`），"
                "其 YAML 文件写在输出目录中。"),
    # top bar
    "lang": _l("Language", "语言"),
    "model_name": _l("Model name", "模型名称", "Registered models fill in the path and template",
                     "已登记的模型会自动填写路径和模板"),
    "model_name_or_path": _l("Model path", "模型路径", "Hub id, local folder or .gguf file",
                             "Hub 名称、本地目录或 .gguf 文件"),
    "finetuning_type": _l("Finetuning method", "微调方法"),
    "checkpoint_path": _l("Checkpoint / adapter", "检查点 / 适配器",
                          "Runs under saves/<model>/<method>/; LoRA adapters can be stacked",
                          "saves/<模型>/<方法>/ 下的运行；LoRA 适配器可叠加"),
    "refresh": _v("Refresh", "刷新"),
    "advanced": _l("Advanced model options", "高级模型设置"),
    "quantization_bit": _l("Quantization bits (QLoRA)", "量化位数 (QLoRA)"),
    "quantization_method": _l("Quantization method", "量化方法"),
    "template": _l("Chat template", "对话模板"),
    "rope_scaling": _l("RoPE scaling", "RoPE 插值"),
    "booster": _l("Booster", "加速方式", "Attention kernel or liger kernels", "注意力实现或 liger 算子"),
    # train tab
    "stage": _l("Stage", "训练阶段"),
    "dataset_dir": _l("Data folder", "数据目录", "Holds dataset_info.json", "包含 dataset_info.json"),
    "dataset": _l("Dataset", "数据集"),
    "preview_data": _v("Preview rows", "预览数据"),
    "preview_info": _v("", ""),
    "learning_rate": _l("Learning rate", "学习率"),
    "num_train_epochs": _l("Epochs", "训练轮数"),
    "max_grad_norm": _l("Max gradient norm", "最大梯度范数"),
    "max_samples": _l("Max samples per dataset", "每个数据集最大样本数", "Empty: all", "留空：全部"),
    "precision": _l("Precision", "计算精度", "Only what this machine can run", "仅列出本机可用的精度"),
    "cutoff_len": _l("Cutoff length", "截断长度"),
    "per_device_train_batch_size": _l("Batch size", "批大小"),
    "gradient_accumulation_steps": _l("Gradient accumulation", "梯度累积"),
    "val_size": _l("Validation size", "验证集比例", "Share (<1) or count", "比例 (<1) 或条数"),
    "lr_scheduler_type": _l("LR scheduler", "学习率调度器"),
    "extra_tab": _l("Extra arguments", "更多参数"),
    "logging_steps": _l("Logging steps", "日志间隔"),
    "save_steps": _l("Save steps", "保存间隔"),
    "warmup_steps": _l("Warmup steps", "预热步数"),
    "max_steps": _l("Max steps", "最大步数", "-1: use epochs", "-1：按轮数"),
    "optim": _l("Optimizer", "优化器"),
    "neftune_noise_alpha": _l("NEFTune alpha", "NEFTune 噪声系数"),
    "weight_decay": _l("Weight decay", "权重衰减"),
    "seed": _l("Seed", "随机种子"),
    "save_total_limit": _l("Keep at most N checkpoints", "最多保留检查点数"),
    "report_to": _l("Report to", "日志上报"),
    "packing": _l("Packing", "序列打包"),
    "neat_packing": _l("Neat packing", "无污染打包"),
    "train_on_prompt": _l("Train on prompt", "训练提示词"),
    "mask_history": _l("Train on last turn only", "仅训练最后一轮"),
    "resize_vocab": _l("Resize vocabulary", "调整词表大小"),
    "disable_gradient_checkpointing": _l("No gradient checkpointing", "关闭梯度检查点"),
    "compute_accuracy": _l("Compute accuracy", "计算准确率"),
    "plot_loss": _l("Save loss plot", "保存损失曲线"),
    "extra_args": _l("More keys (JSON)", "其他参数 (JSON)", 'Any config key, e.g. {"lora_dropout": 0.05}',
                     '任意配置项，例如 {"lora_dropout": 0.05}'),
    "freeze_tab": _l("Freeze tuning", "部分参数微调"),
    "freeze_trainable_layers": _l("Trainable layers", "可训练层数", "Last n (>0) or first n (<0)",
                                  "最后 n 层 (>0) 或最前 n 层 (<0)"),
    "freeze_trainable_modules": _l("Trainable modules", "可训练模块"),
    "freeze_extra_modules": _l("Extra modules", "额外模块"),
    "use_llama_pro": _l("LLaMA Pro", "LLaMA Pro"),
    "lora_tab": _l("LoRA / OFT", "LoRA / OFT"),
    "lora_rank": _l("LoRA rank", "LoRA 秩"),
    "lora_alpha": _l("LoRA alpha", "LoRA 缩放系数", "Empty: 2 x rank", "留空：2 倍秩"),
    "lora_dropout": _l("LoRA dropout", "LoRA 随机丢弃"),
    "loraplus_lr_ratio": _l("LoRA+ ratio", "LoRA+ 学习率比例"),
    "create_new_adapter": _l("New adapter on top", "新建适配器"),
    "use_rslora": _l("rsLoRA", "rsLoRA"),
    "use_dora": _l("DoRA", "DoRA"),
    "pissa_init": _l("PiSSA init", "PiSSA 初始化"),
    "pissa_convert": _l("Convert PiSSA", "转换 PiSSA"),
    "lora_target": _l("LoRA modules", "LoRA 作用模块", "all: every linear layer", "all：全部线性层"),
    "additional_target": _l("Extra trained modules", "额外训练模块"),
    "oft_block_size": _l("OFT block size", "OFT 块大小"),
    "oft_rank": _l("OFT rank", "OFT 秩"),
    "oft_target": _l("OFT modules", "OFT 作用模块"),
    "rlhf_tab": _l("RLHF", "RLHF 参数"),
    "pref_beta": _l("Beta", "Beta 参数"),
    "pref_ftx": _l("SFT loss weight", "SFT 损失权重"),
    "pref_loss": _l("Preference loss", "偏好损失"),
    "reward_model": _l("Reward model", "奖励模型", "ppo/grpo: a reward adapter or model path",
                       "ppo/grpo：奖励模型或适配器路径"),
    "ppo_score_norm": _l("Normalize scores", "归一化分数"),
    "ppo_whiten_rewards": _l("Whiten rewards", "白化奖励"),
    "reward_funcs": _l("Rule rewards (grpo)", "规则奖励 (grpo)", "e.g. exact_match,length:200",
                       "例如 exact_match,length:200"),
    "num_generations": _l("Answers per prompt (grpo)", "每题采样数 (grpo)"),
    "galore_tab": _l("GaLore", "GaLore"),
    "use_galore": _l("Use GaLore", "使用 GaLore"),
    "galore_rank": _l("GaLore rank", "GaLore 秩"),
    "galore_update_interval": _l("Update interval", "更新间隔"),
    "galore_scale": _l("GaLore scale", "GaLore 系数"),
    "galore_target": _l("GaLore modules", "GaLore 作用模块"),
    "apollo_tab": _l("APOLLO", "APOLLO"),
    "use_apollo": _l("Use APOLLO", "使用 APOLLO"),
    "apollo_rank": _l("APOLLO rank", "APOLLO 秩"),
    "apollo_update_interval": _l("Update interval", "更新间隔"),
    "apollo_scale": _l("APOLLO scale", "APOLLO 系数"),
    "apollo_target": _l("APOLLO modules", "APOLLO 作用模块"),
    "badam_tab": _l("BAdam", "BAdam"),
    "use_badam": _l("Use BAdam", "使用 BAdam"),
    "badam_mode": _l("BAdam mode", "BAdam 模式"),
    "badam_switch_mode": _l("Block order", "块切换顺序"),
    "badam_switch_interval": _l("Switch interval", "切换间隔"),
    "mm_tab": _l("Multimodal", "多模态"),
    "mm_note": _v("For vision and audio models (templates llava, qwen2_vl, gemma3, qwen2_audio ...): what trains, and "
                  "the size images and video frames are scaled to. Text-only models ignore these.",
                  "用于视觉与音频模型（模板 llava、qwen2_vl、gemma3、qwen2_audio 等）："
                  "哪些部分参与训练，以及图像和视频帧缩放到的大小。纯文本模型会忽略这些设置。"),
    "freeze_vision_tower": _l("Freeze vision tower", "冻结视觉编码器"),
    "freeze_multi_modal_projector": _l("Freeze projector", "冻结多模态投影层"),
    "freeze_language_model": _l("Freeze language model", "冻结语言模型"),
    "image_max_pixels": _l("Image max pixels", "图像最大像素"),
    "image_min_pixels": _l("Image min pixels", "图像最小像素"),
    "video_max_pixels": _l("Video max pixels", "视频最大像素"),
    "video_min_pixels": _l("Video min pixels", "视频最小像素"),
    "preview_cmd": _v("Preview command", "预览命令"),
    "save_args": _v("Save arguments", "保存参数"),
    "load_args": _v("Load arguments", "载入参数"),
    "start": _v("Start", "开始"),
    "stop": _v("Stop", "停止"),
    "output_dir": _l("Output folder", "输出目录"),
    "config_path": _l("Arguments file", "参数文件", "Empty: <output folder>/training_args.yaml",
                      "留空：<输出目录>/training_args.yaml"),
    "overwrite": _l("Overwrite the folder", "覆盖输出目录", "The earlier run's files move to previous_<time>/ in it",
                    "之前任务的文件会移到其中的 previous_<时间>/"),
    "resume": _l("Resume from its last checkpoint", "从最后的检查点继续"),
    "progress": _l("Progress", "进度"),
    "status": _v("", ""),
    "command": _l("Command", "命令"),
    "log": _l("Log", "日志"),
    "loss_plot": _l("Loss", "损失"),
    # eval tab
    "per_device_eval_batch_size": _l("Batch size", "批大小"),
    "predict": _l("Generate answers (predict)", "生成答案（预测）", "Off: losses and perplexity only",
                  "关闭：仅计算损失和困惑度"),
    "max_new_tokens": _l("Max new tokens", "最大生成长度"),
    "top_p": _l("Top-p", "Top-p 采样"),
    "temperature": _l("Temperature (0 = greedy)", "温度（0 为贪心）"),
    "results": _l("Results", "结果"),
    # chat tab
    "infer_dtype": _l("Inference dtype", "推理精度"),
    "load_model": _v("Load model", "加载模型"),
    "unload_model": _v("Unload model", "卸载模型"),
    "chat_info": _v("", ""),
    "chatbot": _l("Chat", "对话"),
    "system": _l("System prompt", "系统提示词", "Empty: the template's default", "留空：使用模板默认"),
    "tools": _l("Tools (JSON list of function schemas)", "工具（函数定义的 JSON 列表）"),
    "query": _l("Message", "消息"),
    "submit": _v("Send", "发送"),
    "clear": _v("Clear history", "清空历史"),
    # export tab
    "export_size": _l("Shard size (GB)", "分片大小 (GB)"),
    "export_format": _l("Format", "格式"),
    "export_gguf_type": _l("GGUF type", "GGUF 类型"),
    "export_quantization_bit": _l("GPTQ bits", "GPTQ 量化位数", "Needs a CUDA GPU", "需要 CUDA GPU"),
    "export_quantization_dataset": _l("GPTQ calibration data", "GPTQ 校准数据"),
    "export_legacy_format": _l(".bin instead of safetensors", "使用 .bin 格式"),
    "export_device": _l("Export device", "导出设备"),
    "export_dir": _l("Export folder", "导出目录"),
    "export_hub_model_id": _l("Push to hub repo", "推送到 Hub 仓库"),
    "export": _v("Export", "开始导出"),
}

MESSAGES: dict[str, dict[str, str]] = {
    "err_no_model": {"en": "Choose a model or type its path first.", "zh": "请先选择模型或填写模型路径。"},
    "err_no_dataset": {"en": "Choose at least one dataset.", "zh": "请至少选择一个数据集。"},
    "err_no_output_dir": {"en": "Set an output folder.", "zh": "请填写输出目录。"},
    "err_no_export_dir": {"en": "Set an export folder.", "zh": "请填写导出目录。"},
    "err_one_checkpoint": {"en": "{type} tuning saves whole models: choose one checkpoint, not several.",
                           "zh": "{type} 方法保存的是完整模型：只能选择一个检查点。"},
    "err_required": {"en": "`{key}` needs a value.", "zh": "`{key}` 不能为空。"},
    "err_number": {"en": "`{key}` must be a number, got `{value}`.", "zh": "`{key}` 必须是数字，当前为 `{value}`。"},
    "err_value": {"en": "`{key}` cannot be `{value}`.", "zh": "`{key}` 的值 `{value}` 无效。"},
    "err_extra_args": {"en": "More keys must be a JSON object: {reason}.",
                       "zh": "其他参数必须是 JSON 对象：{reason}。"},
    "err_load_args": {"en": "Cannot read the arguments file: {reason}.", "zh": "无法读取参数文件：{reason}。"},
    "err_no_file": {"en": "No arguments file at `{path}`.", "zh": "`{path}` 处没有参数文件。"},
    "err_busy": {"en": "A run is in progress: stop it or wait for it to end.",
                 "zh": "已有任务在运行：请先停止或等待结束。"},
    "err_output_dir_not_empty": {
        "en": "Output folder `{path}` already holds files: choose a new folder, or tick overwrite or resume.",
        "zh": "输出目录 `{path}` 已有文件：请换一个目录，或勾选覆盖或继续训练。"},
    "err_overwrite_and_resume": {"en": "Tick overwrite or resume, not both.", "zh": "覆盖与继续训练只能选一个。"},
    "err_no_checkpoint": {"en": "`{path}` holds no checkpoint-* folder to resume from.",
                          "zh": "`{path}` 中没有可继续训练的 checkpoint-* 目录。"},
    "err_not_a_folder": {"en": "`{path}` is a file, not a folder.", "zh": "`{path}` 是文件而不是目录。"},
    "err_no_chat_model": {"en": "Load a model first.", "zh": "请先加载模型。"},
    "err_reward_model": {"en": "This is a reward model (stage rm): it scores texts and cannot chat.",
                         "zh": "这是奖励模型（rm 阶段）：只能打分，不能对话。"},
    "info_saved": {"en": "Arguments saved to `{path}`.", "zh": "参数已保存到 `{path}`。"},
    "info_loaded": {"en": "Arguments loaded from `{path}`.", "zh": "已从 `{path}` 载入参数。"},
    "info_loaded_extra": {"en": "Arguments loaded from `{path}`; kept as more keys: {keys}.",
                          "zh": "已从 `{path}` 载入参数；以下键放入其他参数：{keys}。"},
    "info_running": {"en": "Running `lmf {command} {path}`", "zh": "正在运行 `lmf {command} {path}`"},
    "info_finished": {"en": "Finished: results in `{path}`.", "zh": "已完成：结果位于 `{path}`。"},
    "info_points": {"en": "{count} loss points", "zh": "{count} 个损失点"},
    "info_failed": {"en": "Failed (exit status {code}): {error}", "zh": "失败（退出码 {code}）：{error}"},
    "info_stopping": {"en": "Stopping: the run ends as with Ctrl-C; saved checkpoints stay.",
                      "zh": "正在停止：任务像 Ctrl-C 一样结束，已保存的检查点会保留。"},
    "info_stopped": {"en": "Stopped. Checkpoints kept in `{path}`: {checkpoints} (to continue, enter this folder as "
                           "the output folder and tick resume).",
                     "zh": "已停止。`{path}` 中保留的检查点：{checkpoints}（如需继续，把该目录填为输出目录"
                           "并勾选继续训练）。"},
    "info_stopped_run": {"en": "Stopped.", "zh": "已停止。"},
    "info_nothing_running": {"en": "Nothing is running.", "zh": "当前没有运行的任务。"},
    "info_other_running": {"en": "This tab has no run in progress: the run in progress (`{path}`) was started from the "
                                 "{tab} tab and is stopped there.",
                           "zh": "本页没有正在运行的任务：正在运行的任务（`{path}`）是从「{tab}」页启动的，"
                                 "请在该页停止。"},
    "info_set_aside": {"en": "The earlier run's files were moved to `{path}`.",
                       "zh": "之前任务的文件已移到 `{path}`。"},
    "info_rows": {"en": "{total} rows in `{path}`; the first {shown}:",
                  "zh": "`{path}` 共 {total} 行；前 {shown} 行："},
    "info_loading": {"en": "Loading the model...", "zh": "正在加载模型……"},
    "info_chat_loaded": {"en": "Loaded `{model}`{adapters}. Chat below.",
                         "zh": "已加载 `{model}`{adapters}，可以开始对话。"},
    "info_chat_unloaded": {"en": "Model unloaded.", "zh": "模型已卸载。"},
    "info_chat_failed": {"en": "Loading failed: {error}", "zh": "加载失败：{error}"},
    "none": {"en": "none", "zh": "无"},
    "progress_idle": {"en": "Not started", "zh": "未开始"},
    "progress_starting": {"en": "Starting...", "zh": "正在启动……"},
    "progress_step": {"en": "{percent:.0f}% · step {current}/{total} · {elapsed} elapsed, {remaining} left",
                      "zh": "{percent:.0f}% · 第 {current}/{total} 步 · 已用 {elapsed}，剩余 {remaining}"},
    "progress_done": {"en": "100% · done", "zh": "100% · 完成"},
    "progress_failed": {"en": "Failed", "zh": "失败"},
    "progress_stopped": {"en": "Stopped", "zh": "已停止"},
    "progress_running": {"en": "Running...", "zh": "运行中……"},
}


def message(key: str, lang: str, /, **params: Any) -> str:
    texts = MESSAGES[key]
    return texts.get(lang, texts["en"]).format(**params)


def label(tab: str, name: str, lang: str) -> dict[str, str]:
    """The properties to set on component `name` of `tab` in `lang` ({} when it shows no text)."""
    entry = LABELS.get(f"{tab}.{name}") or LABELS.get(name)
    if entry is None:
        return {}
    return dict(entry.get(lang, entry["en"]))
