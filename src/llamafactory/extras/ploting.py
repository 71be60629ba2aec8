"""Loss curves as PNG files, drawn from the trainer's log history."""

import json
import math
import os
from typing import Any

from .logging import get_logger

logger = get_logger(__name__)


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average; heavier smoothing for longer curves so the trend stays visible."""
    if not values:
        return []
    if weight is None:
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        out.append(last)
    return out


def plot_loss(output_dir: str, keys: tuple[str, ...] = ("loss", "eval_loss")) -> list[str]:
    """Write `training_<key>.png` for each key present in trainer_state.json; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state_path = os.path.join(output_dir, "trainer_state.json")
    with open(state_path, encoding="utf-8") as f:
        history: list[dict[str, Any]] = json.load(f).get("log_history", [])
    written = []
    for key in keys:
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if not points:
            continue
        steps, values = zip(*points)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        if len(values) > 1:
            ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        ax.set_title(f"{key} of {os.path.basename(os.path.abspath(output_dir))}")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
        name = "training_loss.png" if key == "loss" else f"training_{key.replace('/', '_')}.png"
        path = os.path.join(output_dir, name)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
        logger.info("Loss plot saved at %s", path)
    return written
