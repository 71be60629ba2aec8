"""Score a generated_predictions.jsonl: BLEU-4 and ROUGE-1/2/L (x100), the numbers `lmf train` reports.

    lmf train examples/train_lora/smollm2_lora_predict.yaml          # writes output_dir/generated_predictions.jsonl
    python scripts/eval_bleu_rouge.py saves/smollm2-135m/lora/predict/generated_predictions.jsonl

Prints the scores and writes them beside the file as <name>_scores.json (never over an existing file unless
--overwrite; --output chooses another path). The scoring lives in src/llamafactory/eval/metrics.py.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from llamafactory.eval.metrics import default_output, score_predictions, write_scores  # noqa: E402
from llamafactory.extras.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filename", help="a generated_predictions.jsonl (lines with `predict` and `label`)")
    parser.add_argument("--output", help="where to write the scores (default: <name>_scores.json beside the file)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing scores file")
    args = parser.parse_args(argv)
    try:
        output = args.output or default_output(args.filename)
        if os.path.exists(output) and not args.overwrite:  # checked before scoring, which can take a while
            raise UserError(f"`{output}` already exists; pass --overwrite to replace it, or --output to write "
                            "elsewhere")
        scores = score_predictions(args.filename)
        write_scores(scores, output, overwrite=args.overwrite)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(scores, indent=2))
    print(f"Scores written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
