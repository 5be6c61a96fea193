"""The bundled demo dataset: short conversations over a handful of small skills.

Written by this project, generated deterministically from a seed so anyone can rebuild the
shipped files (``python -m sftwizard.core.demo_data``). The skills are chosen so that a model
of a few million parameters learns them in a minute on two CPU cores: every answer follows
from the question, answers are short, and every assistant turn ends with end-of-turn, so the
model also learns to stop.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ASSETS = Path(__file__).parent / "assets" / "demo"
TRAIN_FILE = ASSETS / "train.jsonl"
EVAL_FILE = ASSETS / "eval.jsonl"

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo",
    "Canada": "Ottawa", "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo",
    "Chile": "Santiago", "Greece": "Athens", "Poland": "Warsaw", "Ireland": "Dublin", "Cuba": "Havana",
    "Portugal": "Lisbon", "Austria": "Vienna", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Mexico": "Mexico City", "Argentina": "Buenos Aires",
    "India": "New Delhi", "China": "Beijing", "Russia": "Moscow", "Turkey": "Ankara", "Iran": "Tehran",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "day": "night", "happy": "sad",
    "open": "closed", "light": "dark", "early": "late", "full": "empty", "old": "young", "hard": "soft",
    "wet": "dry", "loud": "quiet", "left": "right", "strong": "weak", "rich": "poor", "high": "low",
    "thick": "thin", "clean": "dirty", "long": "short", "near": "far", "first": "last", "win": "lose",
}
WORDS = [
    "apple", "river", "stone", "cloud", "tiger", "paper", "music", "green", "house", "light", "table",
    "water", "bread", "chair", "dream", "earth", "flame", "grape", "honey", "juice", "lemon", "mouse",
    "night", "ocean", "piano", "queen", "robot", "sugar", "train", "voice", "whale", "zebra", "pencil",
    "garden", "window", "silver", "rocket", "forest", "candle", "planet",
]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jade", "Kofi", "Lena",
         "Mia", "Nico", "Omar", "Pia", "Quinn", "Ravi", "Sara", "Tom", "Uma", "Vera", "Wes", "Yara", "Zoe"]
SYSTEMS = [None, None, None, "You are a helpful assistant.", "You are a concise assistant. Answer briefly."]


def _addition(rng: random.Random) -> list[dict]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    q = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}."]).format(a=a, b=b)
    return [{"role": "user", "content": q}, {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]


def _capital(rng: random.Random) -> list[dict]:
    country = rng.choice(sorted(CAPITALS))
    q = rng.choice(["What is the capital of {c}?", "Name the capital city of {c}."]).format(c=country)
    return [{"role": "user", "content": q},
            {"role": "assistant", "content": f"The capital of {country} is {CAPITALS[country]}."}]


def _opposite(rng: random.Random) -> list[dict]:
    word = rng.choice(sorted(OPPOSITES))
    q = rng.choice(["What is the opposite of {w}?", "Give the opposite of '{w}'."]).format(w=word)
    return [{"role": "user", "content": q},
            {"role": "assistant", "content": f"The opposite of {word} is {OPPOSITES[word]}."}]


def _upper(rng: random.Random) -> list[dict]:
    words = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
    q = rng.choice(["Write '{w}' in capital letters.", "Uppercase this: {w}"]).format(w=words)
    return [{"role": "user", "content": q}, {"role": "assistant", "content": words.upper()}]


def _count(rng: random.Random) -> list[dict]:
    start = rng.randint(1, 20)
    end = start + rng.randint(2, 6)
    q = f"Count from {start} to {end}."
    return [{"role": "user", "content": q},
            {"role": "assistant", "content": ", ".join(str(i) for i in range(start, end + 1)) + "."}]


def _greeting(rng: random.Random) -> list[dict]:
    q = rng.choice(["Hello!", "Hi there.", "Good morning!", "Hey!"])
    a = rng.choice(["Hello! How can I help you today?", "Hi! What can I do for you?"])
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _name_memory(rng: random.Random) -> list[dict]:
    name = rng.choice(NAMES)
    return [
        {"role": "user", "content": f"My name is {name}."},
        {"role": "assistant", "content": f"Nice to meet you, {name}!"},
        {"role": "user", "content": "What is my name?"},
        {"role": "assistant", "content": f"Your name is {name}."},
    ]


def _follow_up_math(rng: random.Random) -> list[dict]:
    a, b, c = rng.randint(0, 50), rng.randint(0, 50), rng.randint(1, 9)
    return [
        {"role": "user", "content": f"What is {a} + {b}?"},
        {"role": "assistant", "content": f"{a} + {b} = {a + b}."},
        {"role": "user", "content": f"And plus {c}?"},
        {"role": "assistant", "content": f"{a + b} + {c} = {a + b + c}."},
    ]


SKILLS = [_addition, _capital, _opposite, _upper, _count, _greeting, _name_memory, _follow_up_math]


def make_conversation(rng: random.Random) -> dict:
    skill = rng.choice(SKILLS)
    messages = skill(rng)
    system = rng.choice(SYSTEMS)
    if system:
        messages = [{"role": "system", "content": system}] + messages
    return {"messages": messages}


def build_demo_dataset(seed: int = 1234, n_train: int = 1200, n_eval: int = 64) -> tuple[list[dict], list[dict]]:
    """Return (train, eval) conversations, every one distinct (no repeats inside train, and eval
    rows never repeat a training row)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    train: list[dict] = []
    evals: list[dict] = []
    while len(train) < n_train:
        conv = make_conversation(rng)
        key = json.dumps(conv, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        train.append(conv)
    while len(evals) < n_eval:
        conv = make_conversation(rng)
        key = json.dumps(conv, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        evals.append(conv)
    return train, evals


def write_demo_files(out_dir: Path = ASSETS) -> tuple[Path, Path]:
    train, evals = build_demo_dataset()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    for path, rows in zip(paths, (train, evals)):
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths


if __name__ == "__main__":
    for p in write_demo_files():
        print(p)
