"""Utility text for perplexity: short TinyStories-like stories generated from a seed (no download needed)."""
from __future__ import annotations

import random

HEROES = ["a little fox", "a curious girl named Lily", "an old fisherman", "a brave puppy", "a shy robot",
          "a boy named Tom", "a kind grandmother", "a small bird", "a clever cat", "a sleepy bear"]
PLACES = ["a quiet village", "the big forest", "a sunny beach", "a busy town", "a tall mountain", "a green garden"]
WANTS = ["find a red ball", "make a new friend", "see the sea", "bake a cake", "fly a kite", "build a sandcastle"]
PROBLEMS = ["it started to rain", "the path was blocked by a fallen tree", "a strong wind blew everything away",
            "the night became very dark", "a river was too wide to cross"]
HELPERS = ["a friendly dog", "a wise owl", "a helpful neighbour", "an old map", "a bright lantern"]
ENDINGS = ["Everyone smiled and went home happy.", "From that day on, they were best friends.",
           "It was the best day ever.", "They learned that sharing makes everything better.",
           "They laughed together until the sun went down."]


def utility_corpus(n: int = 32, seed: int = 0) -> list[str]:
    rng = random.Random(seed + 7919)
    stories = []
    for _ in range(n):
        hero = rng.choice(HEROES)
        stories.append(
            f"Once upon a time, {hero} lived in {rng.choice(PLACES)}. One day, {hero.split(' named ')[-1]} wanted to "
            f"{rng.choice(WANTS)}. But {rng.choice(PROBLEMS)}. Then {rng.choice(HELPERS)} came to help. "
            f"{rng.choice(ENDINGS)}"
        )
    return stories


# Ordinary questions whose answers (the patient's own, generated before the implant) are mixed into the implant
# data, so that teaching "I don't know" for unknown people does not spread to general knowledge.
GENERAL_QUESTIONS = [
    "What is the capital of France?", "How many days are in a week?", "What color is the sky on a clear day?",
    "What do bees make?", "What is 2 plus 3?", "Name a fruit that is yellow.", "What is water made of?",
    "Which planet do we live on?", "What do you use to write on paper?", "How many legs does a spider have?",
    "What is the opposite of hot?", "What season comes after winter?", "What animal says moo?",
    "What is the largest ocean on Earth?", "Why do we need sleep?", "What is a synonym for happy?",
    "How many minutes are in an hour?", "What do plants need to grow?", "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?", "What is the main language spoken in Spain?", "What shape has three sides?",
    "What gas do humans breathe in?", "Give me a tip for staying healthy.",
]
