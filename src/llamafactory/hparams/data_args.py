"""Which data to train on and how it becomes token sequences."""

from dataclasses import dataclass

from .fields import arg


@dataclass
class DataArguments:
    template: str | None = arg(None, "Chat template used to build prompts (see `data/template.py`).")
    dataset: str | None = arg(None, "Comma-separated dataset names from dataset_info.json.")
    eval_dataset: str | None = arg(None, "Comma-separated evaluation dataset names.")
    dataset_dir: str = arg("data", "Folder with dataset_info.json and the data files.")
    media_dir: str | None = arg(None, "Folder that relative image/video/audio paths are resolved against "
                                "(null: dataset_dir).")
    media_allow_urls: bool = arg(False, "Allow http(s) URLs as media paths (downloaded once into the cache); "
                                 "off by default so a dataset cannot make training fetch from the network.")
    cutoff_len: int = arg(2048, "Longest tokenized example; longer ones are truncated.")
    train_on_prompt: bool = arg(False, "Compute the loss on prompt tokens too.")
    mask_history: bool = arg(False, "Train on the last turn only.")
    streaming: bool = arg(False, "Stream the dataset instead of loading it.")
    buffer_size: int = arg(16384, "Shuffle buffer for streaming.")
    mix_strategy: str = arg("concat", "How several datasets are mixed.",
                            choices=("concat", "interleave_under", "interleave_over", "interleave_once"))
    interleave_probs: str | None = arg(None, "Comma-separated sampling probabilities.")
    overwrite_cache: bool = arg(False, "Re-tokenize even when a cached result exists.")
    preprocessing_batch_size: int = arg(1000, "Examples per preprocessing batch.")
    preprocessing_num_workers: int | None = arg(None, "Processes used for preprocessing.")
    max_samples: int | None = arg(None, "Keep at most this many examples of each dataset.")
    eval_num_beams: int | None = arg(None, "Beams used in evaluation generation.", planned=True)
    ignore_pad_token_for_loss: bool = arg(True, "Exclude padding from the loss.", planned=True)
    val_size: float = arg(0.0, "Held-out share (<1) or count (>=1) of the training data.")
    eval_on_each_dataset: bool = arg(False, "Evaluate each eval dataset separately.")
    packing: bool | None = arg(None, "Pack several sft examples into each cutoff_len row.")
    neat_packing: bool = arg(False, "Pack without attention across examples (implies packing).")
    padding_free: bool | None = arg(None, "sft training: put each batch's examples back to back in one row instead "
                                    "of padding them, attention kept inside each example (null: on when the "
                                    "attention kernel supports it: sdpa or flash-attention).")
    tool_format: str | None = arg(None, "Override the template's tool format.",
                                  choices=("default", "qwen", "llama3", "mistral", "glm4"))
    default_system: str | None = arg(None, "Replace the template's default system prompt.")
    enable_thinking: bool | None = arg(True, "Thinking templates: empty thought in the answer (true), in the "
                                       "prompt (false), or data left as is (null).")
    preserve_thinking: bool = arg(False, "Keep thought blocks of earlier turns (reasoning templates drop them).")
    tokenized_path: str | None = arg(None, "Save the tokenized dataset here on the first run, load it on later "
                                           "ones (`lmf data tokenize` saves it without training).")
    data_shared_file_system: bool = arg(False, "Data folder shared between nodes.", planned=True)
