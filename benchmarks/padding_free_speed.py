"""What padding-free batches and label-only vocabulary projection gain, on identical batches in one process.

    .venv/bin/python benchmarks/padding_free_speed.py [--method lora|full] [--threads 2] [--repeats 3]
                                                      [--batches 4] [--no-grad-ckpt]

Workload 1 of compare_llamafactory.py (SmolLM2-135M-Instruct, mixed-length alpaca rows, batch 4, cutoff 512,
bf16 autocast): the same batches go forward and backward as padded batches, as padding-free rows, and as
padding-free rows through the sft trainer's loss (LM head only where a label is, chunk by chunk for a frozen
head: train/linear_ce.py), the last also with sdpa's flash kernel for every example instead of the matmul
attention that short bf16 examples take on a CPU (varlen_attention.MATMUL_MAX_LEN), and, for LoRA, also with
peft's own LoRA linear forward instead of the fused one (model_utils/lora_linear.py). Variants alternate; the
minimum over repeats is reported (the least disturbed by other work on the machine), with each variant's
per-batch losses, which must agree (the kernels to bf16 rounding: the third decimal at most).
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora", choices=("lora", "full"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--no-grad-ckpt", action="store_true")
    args = parser.parse_args()

    import compare_llamafactory as bench
    import torch
    from transformers import Seq2SeqTrainingArguments

    from llamafactory.data.collator import build_collator
    from llamafactory.data.loader import get_dataset
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams.parser import get_train_args
    from llamafactory.model.loader import compute_dtype, load_model, load_tokenizer
    from llamafactory.model.model_utils import varlen_attention
    from llamafactory.model.model_utils.hub import resolve_model
    from llamafactory.model.model_utils.varlen_attention import enable_padding_free
    from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    bench.write_data(data, 96)
    bench.PRECISION[:] = ["bf16"]  # the YAML's bf16 key, as in workload 1
    cfg = bench.yaml_config(os.path.join(tmp, "cfg.yaml"), bench.default_model(), data, os.path.join(tmp, "out"),
                            args.method, 12)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(
        [cfg, f"disable_gradient_checkpointing={str(args.no_grad_ckpt).lower()}"])
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, "sft", tokenizer)["train_dataset"]
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = load_model(tokenizer, model_args, finetuning_args, True, dtype, source)
    enable_padding_free(model)  # padded batches carry no example boundaries, so they take the stock sdpa path
    trainer = CustomSeq2SeqTrainer(finetuning_args=finetuning_args, model=model, processing_class=tokenizer,
                                   args=Seq2SeqTrainingArguments(output_dir=os.path.join(tmp, "t"), use_cpu=True,
                                                                 report_to=[]))
    rows = [dataset[i] for i in range(4 * args.batches)]
    padded = [build_collator(tokenizer)(rows[i:i + 4]) for i in range(0, len(rows), 4)]
    free = [build_collator(tokenizer, padding_free=True)(rows[i:i + 4]) for i in range(0, len(rows), 4)]

    def model_loss(batch: dict) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        return loss.item()

    def trainer_loss(batch: dict) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        return loss.item()

    matmul_max = varlen_attention.MATMUL_MAX_LEN

    def flash_only(batch: dict) -> float:
        varlen_attention.MATMUL_MAX_LEN = 0
        try:
            return trainer_loss(batch)
        finally:
            varlen_attention.MATMUL_MAX_LEN = matmul_max

    fused = [m for m in model.modules() if type(m).__name__ == "FusedLoraLinear"]

    def peft_layer(batch: dict) -> float:
        fused_class = type(fused[0])
        for module in fused:  # the same parameters under peft's own forward
            module.__class__ = fused_class.__mro__[1]
        try:
            return trainer_loss(batch)
        finally:
            for module in fused:
                module.__class__ = fused_class

    variants = {"padded": (model_loss, padded), "padding-free": (model_loss, free),
                "padding-free + label-only head": (trainer_loss, free),
                "the same, flash attention only": (flash_only, free)}
    if fused:
        variants["the same, peft's LoRA layer"] = (peft_layer, free)
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {}
    model.train()
    for _ in range(args.repeats):
        for name, (step, batches) in variants.items():
            start = time.perf_counter()
            losses[name] = [step(batch) for batch in batches]
            times[name].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    real = sum(int(b["attention_mask"].sum()) for b in padded)
    computed = sum(b["input_ids"].numel() for b in padded)
    print(f"{args.method}, {args.threads} threads, gradient checkpointing {'off' if args.no_grad_ckpt else 'on'}, "
          f"{args.batches} batches of 4: {real} real tokens, padded batches compute {computed} positions")
    base = min(times["padded"])
    for name in variants:
        print(f"{name:32s} {min(times[name]):6.2f} s  {base / min(times[name]):.2f}x  "
              f"losses {[round(x, 4) for x in losses[name]]}")


if __name__ == "__main__":
    main()
