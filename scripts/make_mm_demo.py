"""Write the multimodal demo sets (`mllm_demo`, `mllm_audio_demo`, `mllm_video_demo`) and their media.

The media are drawn and synthesised here, so the repository ships no third-party pictures or recordings and
anyone can rebuild them byte for byte (tests/data/test_demo_data.py checks that the files in data/ are what
this script writes). Shapes are rasterised with numpy masks rather than PIL's drawing routines, whose
anti-aliasing rules change between Pillow releases; clips are 16 kHz mono 16-bit WAV (the rate audio models
such as Qwen2-Audio expect) written with the stdlib `wave` module.

    python scripts/make_mm_demo.py                 # into data/ next to this script's folder
    python scripts/make_mm_demo.py --data_dir out  # anywhere else (out/mllm_demo_data/..., out/mllm_*.json)
"""

import argparse
import json
import os
import wave
from collections.abc import Callable

import numpy as np
from PIL import Image

SIZE = 64  # pixels per side: enough for every processor's smallest patch grid, tiny on disk
RATE = 16_000
MEDIA = "mllm_demo_data"  # folder under the data dir; dataset rows name files relative to the data dir
COLOURS = {
    "white": (255, 255, 255), "red": (220, 30, 30), "blue": (30, 70, 220), "green": (30, 160, 60),
    "yellow": (240, 200, 20), "purple": (140, 50, 170), "orange": (245, 140, 20),
}

Mask = np.ndarray  # bool, SIZE x SIZE


def _grid() -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres, so a shape's edge falls the same way whatever its position.
    return np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5


def circle(cx: float, cy: float, r: float) -> Mask:
    y, x = _grid()
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def box(x0: float, y0: float, x1: float, y1: float) -> Mask:
    y, x = _grid()
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def triangle(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> Mask:
    """Points on the inner side of all three edges (either winding)."""
    y, x = _grid()

    def side(p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
        return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def paint(*shapes: tuple[Mask, str]) -> Image.Image:
    """Shapes painted in order on a white canvas."""
    canvas = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    canvas[:] = COLOURS["white"]
    for mask, colour in shapes:
        canvas[mask] = COLOURS[colour]
    return Image.fromarray(canvas)


IMAGES: dict[str, Callable[[], Image.Image]] = {
    "red_circle": lambda: paint((circle(32, 32, 20), "red")),
    "blue_square": lambda: paint((box(16, 16, 48, 48), "blue")),
    "green_triangles": lambda: paint((triangle((4, 44), (18, 18), (30, 44)), "green"),
                                     (triangle((34, 44), (46, 18), (60, 44)), "green")),
    "yellow_circle_blue_square": lambda: paint((circle(17, 32, 12), "yellow"), (box(37, 20, 61, 44), "blue")),
    "three_red_dots": lambda: paint(*[(circle(cx, 32, 6), "red") for cx in (14, 32, 50)]),
    "purple_rectangle": lambda: paint((box(8, 22, 56, 42), "purple")),
    "big_blue_small_red": lambda: paint((circle(24, 32, 18), "blue"), (circle(52, 32, 7), "red")),
    "orange_triangle": lambda: paint((triangle((10, 52), (32, 12), (54, 52)), "orange")),
}

# A video is a list of frame images (the layout the data pipeline accepts without a video decoder).
VIDEOS: dict[str, list[Callable[[], Image.Image]]] = {
    "ball_left_to_right": [lambda x=x: paint((circle(x, 32, 8), "red")) for x in (12, 25, 38, 51)],
    "square_top_to_bottom": [lambda y=y: paint((box(22, y, 42, y + 20), "blue")) for y in (4, 16, 28, 40)],
}


def _fade(signal: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    """Short fades so a clip starts and ends without a click."""
    n = int(RATE * seconds)
    ramp = np.linspace(0.0, 1.0, n)
    signal[:n] *= ramp
    signal[-n:] *= ramp[::-1]
    return signal


def tone(hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return _fade(0.5 * np.sin(2 * np.pi * hz * t))


def sweep(start_hz: float, end_hz: float, seconds: float) -> np.ndarray:
    """A linear chirp: the frequency moves evenly from start_hz to end_hz."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase = 2 * np.pi * (start_hz * t + (end_hz - start_hz) * t * t / (2 * seconds))
    return _fade(0.5 * np.sin(phase))


def beeps(count: int, hz: float = 1000.0, beep: float = 0.2, gap: float = 0.3) -> np.ndarray:
    pieces = [np.zeros(int(RATE * 0.1))]
    for _ in range(count):
        pieces += [tone(hz, beep), np.zeros(int(RATE * gap))]
    return np.concatenate(pieces[:-1] + [np.zeros(int(RATE * 0.1))])


AUDIOS: dict[str, Callable[[], np.ndarray]] = {
    "tone_440hz": lambda: tone(440.0, 1.0),
    "tone_1760hz": lambda: tone(1760.0, 1.0),
    "rising_sweep": lambda: sweep(300.0, 3000.0, 1.5),
    "three_beeps": lambda: beeps(3),
}


def _img(name: str) -> str:
    return f"{MEDIA}/{name}.png"


def _wav(name: str) -> str:
    return f"{MEDIA}/{name}.wav"


def _frames(name: str) -> list[str]:
    return [f"{MEDIA}/{name}/frame_{i}.png" for i in range(len(VIDEOS[name]))]


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    messages = []
    for question, answer in pairs:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


IMAGE_ROWS = [
    {"messages": _turns(("<image>What shape is in this picture?", "A circle."),
                        ("What colour is it?", "It is red.")),
     "images": [_img("red_circle")]},
    {"messages": _turns(("<image>Describe the picture.", "A blue square in the middle of a white background.")),
     "images": [_img("blue_square")]},
    {"messages": _turns(("<image>How many triangles are there, and what colour are they?",
                         "There are two triangles, both green.")),
     "images": [_img("green_triangles")]},
    {"messages": _turns(("<image>Which shape is on the left?",
                         "The yellow circle is on the left; the blue square is on the right.")),
     "images": [_img("yellow_circle_blue_square")]},
    {"messages": _turns(("<image>How many dots do you see?", "Three red dots in a row.")),
     "images": [_img("three_red_dots")]},
    {"messages": _turns(("What colour is the rectangle?<image>", "Purple.")),
     "images": [_img("purple_rectangle")]},
    {"messages": _turns(("<image>Which circle is bigger, the blue one or the red one?",
                         "The blue circle is bigger than the red one.")),
     "images": [_img("big_blue_small_red")]},
    {"messages": _turns(("<image>What colour is this shape?", "Red: it is a red circle."),
                        ("<image>And this one?", "Blue: it is a blue square.")),
     "images": [_img("red_circle"), _img("blue_square")]},
    {"messages": _turns(("<image><image>Do these two pictures show the same kind of shape?",
                         "Yes, both show triangles: one orange triangle in the first picture and two green "
                         "triangles in the second.")),
     "images": [_img("orange_triangle"), _img("green_triangles")]},
]

AUDIO_ROWS = [
    {"messages": _turns(("<audio>Is this a high or a low tone?", "A low tone: a steady 440 Hz sine wave, the "
                         "note A4."),
                        ("How long does it last?", "About one second.")),
     "audios": [_wav("tone_440hz")]},
    {"messages": _turns(("<audio>What do you hear?", "A steady high-pitched tone at 1760 Hz, two octaves above "
                         "A4.")),
     "audios": [_wav("tone_1760hz")]},
    {"messages": _turns(("<audio>Does the pitch go up or down?", "Up: a sweep rising from a low to a high "
                         "pitch.")),
     "audios": [_wav("rising_sweep")]},
    {"messages": _turns(("<audio>How many beeps are there?", "Three short beeps.")),
     "audios": [_wav("three_beeps")]},
    {"messages": _turns(("<audio><audio>Which of the two tones is higher?", "The second one.")),
     "audios": [_wav("tone_440hz"), _wav("tone_1760hz")]},
]

VIDEO_ROWS = [
    {"messages": _turns(("<video>Which way does the ball move?", "From left to right."),
                        ("What colour is the ball?", "Red.")),
     "videos": [_frames("ball_left_to_right")]},
    {"messages": _turns(("<video>Describe what happens in this video.",
                         "A blue square moves from the top to the bottom of the frame.")),
     "videos": [_frames("square_top_to_bottom")]},
]

DATASETS = {"mllm_demo.json": IMAGE_ROWS, "mllm_audio_demo.json": AUDIO_ROWS, "mllm_video_demo.json": VIDEO_ROWS}


def _save_png(image: Image.Image, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, format="PNG", compress_level=9)


def _save_wav(signal: np.ndarray, path: str) -> None:
    samples = np.round(np.clip(signal, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(samples.tobytes())


def generate(data_dir: str) -> list[str]:
    """Write every media file and dataset file under data_dir; returns their paths relative to data_dir."""
    written = []
    for name, draw in IMAGES.items():
        _save_png(draw(), os.path.join(data_dir, _img(name)))
        written.append(_img(name))
    for name, frames in VIDEOS.items():
        for draw, rel in zip(frames, _frames(name)):
            _save_png(draw(), os.path.join(data_dir, rel))
            written.append(rel)
    os.makedirs(os.path.join(data_dir, MEDIA), exist_ok=True)
    for name, synth in AUDIOS.items():
        _save_wav(synth(), os.path.join(data_dir, _wav(name)))
        written.append(_wav(name))
    for file_name, rows in DATASETS.items():
        with open(os.path.join(data_dir, file_name), "w", encoding="utf-8", newline="\n") as f:
            f.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        written.append(file_name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
    parser.add_argument("--data_dir", default=default, help="where to write (default: the repository's data/)")
    args = parser.parse_args()
    written = generate(args.data_dir)
    total = sum(os.path.getsize(os.path.join(args.data_dir, p)) for p in written)
    print(f"wrote {len(written)} files ({total / 1024:.0f} KiB) under {args.data_dir}")


if __name__ == "__main__":
    main()
