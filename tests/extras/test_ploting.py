import json

from llamafactory.extras.ploting import plot_loss, smooth


def test_smooth_keeps_length_and_follows_the_trend():
    values = [5.0, 4.0, 3.0, 2.0, 1.0]
    out = smooth(values)
    assert len(out) == 5 and out[0] == 5.0 and out[-1] < out[0]


def test_plot_loss_writes_one_png_per_logged_key(tmp_path):
    history = [{"step": s, "loss": 3.0 / s} for s in range(1, 6)] + [{"step": 5, "eval_loss": 1.0}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    written = plot_loss(str(tmp_path), keys=("loss", "eval_loss", "missing"))
    assert [p.split("/")[-1] for p in written] == ["training_loss.png", "training_eval_loss.png"]
    assert (tmp_path / "training_loss.png").read_bytes()[:4] == b"\x89PNG"
