"""The main job: ask the default model who it is, fine-tune it on the identity data, ask again.

Run through `make demo`. Every step is the real CLI (`lmf chat`, `lmf train`), so this is also what a
user would type by hand.
"""

import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, AUTHOR = "Lumen", "the llamafactory team"
WORK = os.path.join(ROOT, "saves", "demo")
DATA_DIR = os.path.join(WORK, "data")
OUTPUT_DIR = os.path.join(WORK, "smollm2-135m-lora-sft")
TRAIN_CFG = os.path.join(ROOT, "examples", "train_lora", "smollm2_lora_sft.yaml")
CHAT_CFG = os.path.join(ROOT, "examples", "inference", "smollm2_lora_sft.yaml")
QUESTION = "Who are you?"
LMF = os.path.join(os.path.dirname(sys.executable), "lmf")


def prepare_data() -> None:
    """Fill the {{name}}/{{author}} placeholders into a copy of the identity data."""
    os.makedirs(DATA_DIR, exist_ok=True)
    with open(os.path.join(ROOT, "data", "identity.json"), encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:
        row["output"] = row["output"].replace("{{name}}", NAME).replace("{{author}}", AUTHOR)
    with open(os.path.join(DATA_DIR, "identity.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=2)
    with open(os.path.join(DATA_DIR, "dataset_info.json"), "w", encoding="utf-8") as f:
        json.dump({"identity": {"file_name": "identity.json"}}, f, indent=2)


def ask(adapter: str | None) -> str:
    overrides = [f"adapter_name_or_path={adapter or 'null'}", "do_sample=false", "max_new_tokens=64"]
    proc = subprocess.run([LMF, "chat", CHAT_CFG, *overrides], input=f"{QUESTION}\nexit\n", text=True,
                          capture_output=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        sys.exit(f"lmf chat failed with exit code {proc.returncode}")
    match = re.search(r"Assistant: (.*?)\n\s*\nUser:", proc.stdout, re.S)
    return (match.group(1) if match else proc.stdout).strip()


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main() -> int:
    prepare_data()
    banner(f"1/3 Asking the base model: {QUESTION!r}")
    before = ask(None)
    print(before)

    banner("2/3 Fine-tuning SmolLM2-135M-Instruct with LoRA on the identity data (lmf train)")
    start = time.time()
    subprocess.run([LMF, "train", TRAIN_CFG, f"dataset_dir={DATA_DIR}", f"output_dir={OUTPUT_DIR}",
                    "overwrite_output_dir=true"], cwd=ROOT, check=True)
    minutes = (time.time() - start) / 60

    banner(f"3/3 Asking the fine-tuned model: {QUESTION!r}")
    after = ask(OUTPUT_DIR)
    print(after)

    learned = NAME.lower() in after.lower()
    width = 60
    banner("Before and after")
    print(f"{'base model':<{width}} | fine-tuned (LoRA)")
    print(f"{'-' * width}-+-{'-' * width}")
    left, right = _wrap(before, width), _wrap(after, width)
    for i in range(max(len(left), len(right))):
        print(f"{(left[i] if i < len(left) else ''):<{width}} | {right[i] if i < len(right) else ''}")
    print(f"\nTraining (load, tokenize, train, save) took {minutes:.1f} min. Outputs: {OUTPUT_DIR}")
    print(f"Loss curve: {os.path.join(OUTPUT_DIR, 'training_loss.png')}")
    print(f"The fine-tuned model {'now calls itself' if learned else 'did NOT learn to call itself'} {NAME}.")
    return 0 if learned else 1


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(" ".join(text.split()), width) or [""]


if __name__ == "__main__":
    sys.exit(main())
