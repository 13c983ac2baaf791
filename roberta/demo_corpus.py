"""A generated English-like corpus with learnable structure, for the quickstart and tests.

Sentences follow a small grammar with agreement (a plural subject takes a plural verb,
each verb prefers certain objects, adjectives fit their nouns), so a masked-LM that learns
reaches a perplexity far below the unigram baseline. Documents are separated by a blank line,
as fairseq's `--sample-break-mode complete_doc` expects.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SUBJECTS = {
    "the farmer": "sg", "the teacher": "sg", "a young girl": "sg", "my brother": "sg", "the old king": "sg",
    "the farmers": "pl", "the teachers": "pl", "two young girls": "pl", "my brothers": "pl", "the soldiers": "pl",
}
VERBS = {  # verb -> (singular form, plural form, objects it prefers)
    "read": ("reads", "read", ["a long letter", "the morning paper", "an old book", "the new poem"]),
    "eat": ("eats", "eat", ["fresh bread", "a red apple", "the warm soup", "some cheese"]),
    "ride": ("rides", "ride", ["a grey horse", "the old bicycle", "a small boat", "the evening train"]),
    "sing": ("sings", "sing", ["a sad song", "the national anthem", "an old ballad", "a lullaby"]),
    "build": ("builds", "build", ["a stone wall", "the wooden bridge", "a small house", "the garden fence"]),
}
PLACES = ["in the village", "near the river", "at the market", "after dinner", "before sunrise", "in winter"]
CONNECTIVES = ["and then", "because", "while", "although"]


def make_sentence(rng: random.Random) -> str:
    subject, number = rng.choice(list(SUBJECTS.items()))
    singular, plural, objects = VERBS[rng.choice(list(VERBS))]
    clause = f"{subject} {singular if number == 'sg' else plural} {rng.choice(objects)}"
    if rng.random() < 0.5:
        clause += f" {rng.choice(PLACES)}"
    if rng.random() < 0.3:
        rest = make_sentence(rng)
        return f"{clause[0].upper()}{clause[1:]} {rng.choice(CONNECTIVES)} {rest[0].lower()}{rest[1:]}"
    return f"{clause[0].upper()}{clause[1:]}."


def make_document(rng: random.Random, sentences_per_line: int = 3, lines: int = 4) -> list[str]:
    return [" ".join(make_sentence(rng) for _ in range(sentences_per_line)) for _ in range(lines)]


def write_corpus(path: str | Path, num_documents: int, seed: int) -> Path:
    """Write `num_documents` documents, one paragraph per line, blank line between documents."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(num_documents):
            handle.write("\n".join(make_document(rng)) + "\n\n")
    return path


NAMES = ["Anna", "Tom", "Lucy", "Peter", "Mary", "John", "Kate", "Sam", "Emma", "Jack", "Lily", "Ben"]
KEPT_THINGS = ["dog", "cat", "goat", "pony", "parrot", "rabbit", "lamp", "drum", "kite", "violin", "clock",
               "ladder", "basket", "hammer", "mirror", "candle", "teapot", "compass", "blanket", "lantern",
               "bucket", "whistle", "saddle", "trumpet", "barrel", "sofa", "piano", "globe", "radio", "wagon"]


def make_race_exam(rng: random.Random, questions: int = 3, fillers: int = 1) -> dict:
    """One RACE-format exam whose answers can only be found by reading the article.

    Each question asks what a person keeps; the article says it, among `fillers` sentences
    from the grammar, and the three wrong options never occur in the article.
    """
    names = rng.sample(NAMES, questions)
    kept = rng.sample(KEPT_THINGS, questions)
    facts = [f"{name} keeps a {thing} in the house." for name, thing in zip(names, kept)]
    sentences = facts + [make_sentence(rng) for _ in range(fillers)]
    rng.shuffle(sentences)
    exam: dict[str, Any] = {"article": " ".join(sentences), "questions": [], "options": [], "answers": []}
    for name, thing in zip(names, kept):
        wrong = rng.sample([other for other in KEPT_THINGS if other not in kept], 3)
        answer = rng.randrange(4)
        choices = wrong[:answer] + [thing] + wrong[answer:]
        exam["questions"].append(f"What does {name} keep in the house?")
        exam["options"].append([f"a {choice}" for choice in choices])
        exam["answers"].append("ABCD"[answer])
    return exam


# What a person does with a thing: (statement, question) templates.
ACTIVITIES = {
    "keep": ("{name} keeps a {thing} in the house.", "What does {name} keep in the house?"),
    "sell": ("{name} sells a {thing} at the market.", "What does {name} sell at the market?"),
}


def make_squad_paragraph(rng: random.Random, paragraph_id: str) -> dict:
    """One SQuAD 2.0 paragraph about a person who does one activity with a thing, and two
    questions: one about that activity (answered by the thing), one about the other activity,
    which the paragraph never mentions (no answer, as SQuAD 2.0's plausible unanswerables)."""
    name, thing = rng.choice(NAMES), rng.choice(KEPT_THINGS)
    done, not_done = rng.sample(sorted(ACTIVITIES), 2)
    fact = ACTIVITIES[done][0].format(name=name, thing=thing)
    sentences = [fact, make_sentence(rng)]
    rng.shuffle(sentences)
    context = " ".join(sentences)
    start = context.index(fact) + fact.index(thing)
    return {"context": context, "qas": [
        {"id": f"{paragraph_id}-a", "question": ACTIVITIES[done][1].format(name=name),
         "answers": [{"text": thing, "answer_start": start}], "is_impossible": False},
        {"id": f"{paragraph_id}-u", "question": ACTIVITIES[not_done][1].format(name=name),
         "answers": [], "is_impossible": True},
    ]}


def make_squad_dataset(num_paragraphs: int, seed: int) -> dict:
    """A generated SQuAD 2.0 file (official layout): half the questions have no answer."""
    rng = random.Random(seed)
    paragraphs = [make_squad_paragraph(rng, f"s{seed}p{index}") for index in range(num_paragraphs)]
    return {"version": "v2.0", "data": [{"title": "Households", "paragraphs": paragraphs}]}
