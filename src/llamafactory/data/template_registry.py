"""The registered chat templates: one short data entry per model family.

Slot text is each family's own prompt format (a fact about the model, so training matches what the
model saw); see template.py for what each field means. Names follow LlamaFactory's, so `template:`
values in existing configs keep working.
"""

from .template import Template, register

# Shared shapes ---------------------------------------------------------------------------------------
CHATML = dict(
    user="<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
    assistant="{{content}}<|im_end|>\n",
    system="<|im_start|>system\n{{content}}<|im_end|>\n",
    observation="<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
    stop_words=("<|im_end|>",),
    replace_eos=True,
)
QWEN = dict(
    CHATML,
    observation="<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    tool_format="qwen",
)
LLAMA3 = dict(
    prefix="{{bos_token}}",
    user="<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    assistant="{{content}}<|eot_id|>",
    system="<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",
    observation="<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    stop_words=("<|eot_id|>", "<|eom_id|>"),
    replace_eos=True,
    tool_format="llama3",
)
GEMMA = dict(
    prefix="{{bos_token}}",
    user="<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
    assistant="{{content}}<end_of_turn>\n",
    system="{{content}}\n\n",
    observation="<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
    system_in_user=True,
    stop_words=("<end_of_turn>",),
    replace_eos=True,
)
DEEPSEEK3 = dict(
    prefix="{{bos_token}}",
    user="<｜User｜>{{content}}<｜Assistant｜>",
    assistant="{{content}}{{eos_token}}",
    system="{{content}}",
)
GLM4 = dict(
    prefix="[gMASK]<sop>",
    user="<|user|>\n{{content}}<|assistant|>",
    assistant="\n{{content}}",
    system="<|system|>\n{{content}}",
    function="{{content}}",
    observation="<|observation|>\n{{content}}<|assistant|>",
    stop_words=("<|user|>", "<|observation|>"),
    efficient_eos=True,
    tool_format="glm4",
)

# Generic -------------------------------------------------------------------------------------------
register(Template(name="empty", user="{{content}}", assistant="{{content}}"))
# Plain-text few-shot prompts for base models (LlamaFactory's `template: fewshot` in its eval configs): the
# question, then the answer, each example closed by a blank line; no system prompt, no role markers.
register(Template(name="fewshot", user="{{content}}", assistant="{{content}}\n\n", efficient_eos=True))
register(Template(
    name="default",
    user="Human: {{content}}\nAssistant: ",
    assistant="{{content}}{{eos_token}}\n",
    system="System: {{content}}\n",
))
register(Template(
    name="alpaca",
    user="### Instruction:\n{{content}}\n\n### Response:\n",
    assistant="{{content}}{{eos_token}}\n\n",
    default_system="Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n",
))
register(Template(
    name="vicuna",
    prefix="{{bos_token}}",
    user="USER: {{content}} ASSISTANT:",
    assistant="{{content}}{{eos_token}}",
    system="{{content}} ",
    default_system="A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.",
))
register(Template(name="chatml", **CHATML))

# Qwen ----------------------------------------------------------------------------------------------
register(Template(name="qwen", default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                  **QWEN))
register(Template(name="qwen3", reasoning=True, **QWEN))
register(Template(name="qwen3_nothink", **QWEN))

# Llama and Mistral ---------------------------------------------------------------------------------
register(Template(
    name="llama2",
    user="{{bos_token}}[INST] {{content}} [/INST]",
    assistant=" {{content}} {{eos_token}}",
    system="<<SYS>>\n{{content}}\n<</SYS>>\n\n",
    system_in_user=True,
))
register(Template(name="llama3", **LLAMA3))
register(Template(
    name="llama4",
    prefix="{{bos_token}}",
    user="<|header_start|>user<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n",
    assistant="{{content}}<|eot|>",
    system="<|header_start|>system<|header_end|>\n\n{{content}}<|eot|>",
    observation="<|header_start|>ipython<|header_end|>\n\n{{content}}<|eot|>"
    "<|header_start|>assistant<|header_end|>\n\n",
    stop_words=("<|eot|>", "<|eom|>"),
    replace_eos=True,
    tool_format="llama3",
))
register(Template(
    name="mistral",
    prefix="{{bos_token}}",
    user="[INST] {{content}}[/INST]",
    assistant="{{content}}{{eos_token}}",
    system="{{content}}\n\n",
    system_in_user=True,
    function="{{content}}{{eos_token}}",
    observation="[TOOL_RESULTS] {{content}}[/TOOL_RESULTS]",
    tool_format="mistral",
))
register(Template(
    name="ministral",
    prefix="{{bos_token}}",
    user="[INST]{{content}}[/INST]",
    assistant="{{content}}{{eos_token}}",
    system="{{content}}\n\n",
    system_in_user=True,
    function="{{content}}{{eos_token}}",
    observation="[TOOL_RESULTS]{{content}}[/TOOL_RESULTS]",
    tool_format="mistral",
))

# Gemma ---------------------------------------------------------------------------------------------
register(Template(name="gemma", **GEMMA))
register(Template(name="gemma2", **GEMMA))
register(Template(name="gemma3", mm_plugin="gemma3", **GEMMA))

# Phi -----------------------------------------------------------------------------------------------
register(Template(
    name="phi",
    user="<|user|>\n{{content}}<|end|>\n<|assistant|>\n",
    assistant="{{content}}<|end|>\n",
    system="<|system|>\n{{content}}<|end|>\n",
    stop_words=("<|end|>",),
    replace_eos=True,
))
register(Template(
    name="phi4",
    user="<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>",
    assistant="{{content}}<|im_end|>",
    system="<|im_start|>system<|im_sep|>{{content}}<|im_end|>",
    stop_words=("<|im_end|>",),
    replace_eos=True,
))

# DeepSeek ------------------------------------------------------------------------------------------
register(Template(
    name="deepseek",
    prefix="{{bos_token}}",
    user="User: {{content}}\n\nAssistant:",
    assistant=" {{content}}{{eos_token}}",
    system="{{content}}\n\n",
))
register(Template(name="deepseek3", **DEEPSEEK3))
register(Template(name="deepseekr1", reasoning=True, **DEEPSEEK3))

# GLM -----------------------------------------------------------------------------------------------
register(Template(name="glm4", **GLM4))
register(Template(
    name="chatglm3",
    prefix="[gMASK]sop",
    user="<|user|>\n {{content}}<|assistant|>",
    assistant="\n {{content}}",
    system="<|system|>\n {{content}}",
    function="{{content}}",
    observation="<|observation|>\n {{content}}<|assistant|>",
    stop_words=("<|user|>", "<|observation|>"),
    efficient_eos=True,
    tool_format="glm4",
))

# Other chat families -------------------------------------------------------------------------------
register(Template(name="yi", **dict(CHATML, system="{{content}}")))  # Yi-1.5 emits the system text bare
register(Template(name="intern2", prefix="{{bos_token}}", **CHATML))
register(Template(name="smollm", **CHATML))
register(Template(name="smollm2", default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                  **CHATML))
register(Template(
    name="zephyr",
    user="<|user|>\n{{content}}{{eos_token}}\n<|assistant|>\n",
    assistant="{{content}}{{eos_token}}\n",
    system="<|system|>\n{{content}}{{eos_token}}\n",
))
register(Template(
    name="openchat",
    prefix="{{bos_token}}",
    user="GPT4 Correct User: {{content}}<|end_of_turn|>GPT4 Correct Assistant:",
    assistant="{{content}}<|end_of_turn|>",
    system="GPT4 Correct System: {{content}}<|end_of_turn|>",
    stop_words=("<|end_of_turn|>",),
    replace_eos=True,
))
register(Template(
    name="solar",
    user="### User:\n{{content}}\n\n### Assistant:\n",
    assistant="{{content}}",
    system="### System:\n{{content}}\n\n",
    efficient_eos=True,
))
register(Template(
    name="falcon",
    user="User: {{content}}\nFalcon:",
    assistant="{{content}}\n",
    efficient_eos=True,
))
register(Template(
    name="cohere",
    prefix="{{bos_token}}",
    user="<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"
    "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
    assistant="{{content}}<|END_OF_TURN_TOKEN|>",
    system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>",
    stop_words=("<|END_OF_TURN_TOKEN|>",),
))
register(Template(
    name="granite3",
    user="<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>",
    assistant="{{content}}<|end_of_text|>\n",
    system="<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n",
    observation="<|start_of_role|>tool<|end_of_role|>{{content}}<|end_of_text|>\n"
    "<|start_of_role|>assistant<|end_of_role|>",
))
register(Template(
    name="olmo",
    prefix="{{bos_token}}",
    user="<|user|>\n{{content}}\n<|assistant|>\n",
    assistant="{{content}}{{eos_token}}\n",
    system="<|system|>\n{{content}}\n",
))
register(Template(name="starchat", **CHATML))  # starchat2 speaks ChatML
register(Template(
    name="gpt_oss",
    user="<|start|>user<|message|>{{content}}<|end|><|start|>assistant",
    assistant="<|channel|>final<|message|>{{content}}<|return|>",
    system="<|start|>developer<|message|># Instructions\n\n{{content}}<|end|>",
    stop_words=("<|return|>", "<|call|>"),
    # Harmony keeps reasoning in a separate analysis message, which data must spell out itself.
))
register(Template(
    name="seed_oss",
    user="<seed:bos>user\n{{content}}<seed:eos><seed:bos>assistant\n",
    assistant="{{content}}<seed:eos>",
    system="<seed:bos>system\n{{content}}<seed:eos>",
    stop_words=("<seed:eos>",),
    replace_eos=True,
    reasoning=True,
    thought_words=("<seed:think>", "</seed:think>\n"),
))
register(Template(
    name="baichuan2",
    user="<reserved_106>{{content}}<reserved_107>",
    assistant="{{content}}{{eos_token}}",
))
register(Template(
    name="xverse",
    user="Human: {{content}}\n\nAssistant: ",
    assistant="{{content}}{{eos_token}}",
    system="{{content}}\n\n",
))
register(Template(
    name="cpm4",
    prefix="{{bos_token}}",
    **CHATML,
))

# Multimodal -----------------------------------------------------------------------------------------
# Each names the plugin (data/mm_plugin.py) that turns <image>/<video>/<audio> placeholders into its model's
# tokens. Plain conversations render as the model's own chat template does (tests/data/test_mm_templates.py).
# LLaVA-1.5 / LLaVA-NeXT (vicuna): as llava-hf's chat template, except that an answer ends with </s> (as LLaVA
# was trained) where that template writes a space, so a fine-tuned model learns to stop.
LLAVA = dict(
    user="USER: {{content}} ASSISTANT:",
    assistant=" {{content}}{{eos_token}}",
    system="{{content}} ",
)
register(Template(name="llava", mm_plugin="llava", **LLAVA))
register(Template(name="llava_next", mm_plugin="llava_next", **LLAVA))
register(Template(name="qwen2_vl", default_system="You are a helpful assistant.", mm_plugin="qwen2_vl", **QWEN))
register(Template(name="qwen3_vl", reasoning=True, mm_plugin="qwen3_vl", **QWEN))  # the Thinking models
register(Template(name="qwen3_vl_nothink", mm_plugin="qwen3_vl", **QWEN))  # the Instruct models
register(Template(name="qwen2_audio", default_system="You are a helpful assistant.", mm_plugin="qwen2_audio",
                  **CHATML))
# Llama 3.2 Vision: the llama3 format. Its chat template allows no system prompt with images and, for text-only
# chats, writes a system turn with knowledge and today's dates, which this template leaves out.
register(Template(name="mllama", mm_plugin="mllama", **LLAMA3))
# PaliGemma has no chat format: a prompt ends with a newline, the answer with eos (the processor's prefix and
# suffix); the plugin puts the image tokens before <bos>.
register(Template(
    name="paligemma",
    prefix="{{bos_token}}",
    user="{{content}}\n",
    assistant="{{content}}{{eos_token}}",
    system="{{content}}\n",
    system_in_user=True,
    mm_plugin="paligemma",
))
