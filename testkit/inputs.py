"""Realistic question/context pairs for benchmarks and load tests, generated with a fixed seed.

SQuAD-sized: a ~110-word paragraph and a ~10-word question, about 140 tokens together (SQuAD v1.1 dev
averages ~120 words of context). Long: one context of 140,000 characters (~27,000 tokens, ~115 windows).
"""

from __future__ import annotations

import random

SUBJECTS = [
    "The river",
    "The cathedral",
    "The university",
    "The railway",
    "The harbour",
    "The observatory",
    "The museum",
    "The bridge",
    "The library",
    "The stadium",
    "The parliament",
    "The orchestra",
]
VERBS = ["founded", "rebuilt", "expanded", "renamed", "opened", "restored", "visited"]
NAMES = [
    "Ada Lovelace",
    "Nikola Tesla",
    "Marie Curie",
    "Ana-María Núñez",
    "Zoë Brandt",
    "Léon Foucault",
    "Hiroshi Tanaka",
    "Grace Hopper",
    "Alan Turing",
    "Chiara Ricci",
    "Olumide Adeyemi",
    "Søren Kierkegaard",
]
PLACES = ["Geneva", "Kyoto", "Lagos", "Montréal", "Porto", "Tromsø", "Valparaíso", "Edinburgh", "Kraków", "Hanoi"]
FILLER = (
    "during a period of rapid growth, when merchants, scholars and engineers from across the region "
    "arrived with new ideas about trade, science and the arts"
).split()
QUESTIONS = [
    "Who was {subject} of {place} {verb} by?",
    "When was {subject} of {place} {verb}?",
    "In which year was {subject} of {place} {verb}?",
    "Which city's {noun} was {verb} by {name}?",
]


def squad_sized_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        facts, sentences = [], []
        while sum(len(s.split()) for s in sentences) < 95:
            fact = (rng.choice(SUBJECTS), rng.choice(PLACES), rng.choice(VERBS), rng.choice(NAMES))
            tail = " ".join(rng.sample(FILLER, rng.randint(4, 9)))
            sentences.append(f"{fact[0]} of {fact[1]} was {fact[2]} by {fact[3]} in {rng.randint(1500, 2020)}, {tail}.")
            facts.append(fact)
        subject, place, verb, name = rng.choice(facts)
        question = rng.choice(QUESTIONS).format(
            subject=subject.lower(), noun=subject.split()[1], place=place, verb=verb, name=name
        )
        pairs.append((question, " ".join(sentences)))
    return pairs


def questions_about_one_context(n: int, per_context: int = 5, seed: int = 0) -> list[tuple[list[str], str]]:
    """``n`` requests of ``per_context`` SQuAD-sized questions about one context each (the pipeline's "many
    questions, one context" call)."""
    pairs = squad_sized_pairs(n * per_context, seed)
    return [
        ([q for q, _ in pairs[i * per_context : (i + 1) * per_context]], pairs[i * per_context][1]) for i in range(n)
    ]


def long_document(n_chars: int = 140_000) -> str:
    """A context of ``n_chars`` characters (~27,000 tokens, ~115 windows) of distinct sentences."""
    sentences, i = [], 0
    while sum(map(len, sentences)) + len(sentences) < n_chars:
        sentences.append(
            f"In {1000 + i} the harbour of Port {chr(65 + i % 26)}{i} shipped {i * 7 % 1000} tonnes "
            f"of grain to the merchant Ana-María Núñez №{i}."
        )
        i += 1
    return " ".join(sentences)[:n_chars]
