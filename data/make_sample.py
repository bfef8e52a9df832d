"""Regenerate data/ecf_sample.json: a small synthetic ECF-style sample written for emocause, in the
Subtask 1 format (each cause with its text span; the loader also derives the Subtask 2 pairs).

The scenes below are invented for this project (no line comes from the real ECF data). Each
utterance is (speaker slot, text, emotion, cause offsets relative to the utterance: 0 = itself,
-1 = the previous one, +1 = the next one). Run: python data/make_sample.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils.ecf.data import validate_conversations  # noqa: E402
from utils.io import write_json_atomic  # noqa: E402

SCENES = [
    [("A", "Guess what , I got the job at the museum !", "joy", [0]),
     ("B", "No way ! That is amazing , congratulations !", "joy", [-1]),
     ("A", "I start on Monday .", "neutral", []),
     ("C", "Wait , Monday ? You promised to help me move on Monday .", "anger", [-1, 0]),
     ("A", "Oh no , I completely forgot .", "sadness", [-1])],
    [("A", "Did you eat the last slice of my birthday cake ?", "anger", [0]),
     ("B", "It was just sitting there .", "neutral", []),
     ("A", "It had my name written on it !", "anger", [-2, 0]),
     ("B", "Okay , I am sorry , I will buy you another one .", "sadness", [-1])],
    [("A", "There is something moving under the sofa .", "fear", [0]),
     ("B", "Is it a mouse ?", "fear", [-1]),
     ("A", "It is huge and it has a tail .", "fear", [-2, 0]),
     ("C", "Ugh , that is disgusting , I am never sitting there again .", "disgust", [-1, -3]),
     ("B", "Relax , it is just the neighbour's cat .", "neutral", []),
     ("A", "Oh thank goodness .", "joy", [-1])],
    [("A", "My grandmother passed away last night .", "sadness", [0]),
     ("B", "I am so sorry . She was a wonderful woman .", "sadness", [-1]),
     ("A", "She taught me how to bake bread .", "sadness", [-2, 0]),
     ("B", "Do you want me to stay with you tonight ?", "neutral", []),
     ("A", "Yes , please . Thank you .", "joy", [-1])],
    [("A", "You are getting married ? Since when ?", "surprise", [+1, 0]),
     ("B", "He proposed on the train this morning !", "joy", [0]),
     ("A", "On the train ? In front of everyone ?", "surprise", [-1]),
     ("B", "Everyone clapped . It was so embarrassing and so sweet .", "joy", [-2, 0])],
    [("A", "Someone left old fish in the office fridge again .", "disgust", [0]),
     ("B", "The whole kitchen smells like a harbour .", "disgust", [-1, 0]),
     ("C", "That was me , I forgot it was there .", "neutral", []),
     ("A", "Seriously ? It has been there for two weeks !", "anger", [-1, -3])],
    [("A", "The test results came back .", "neutral", []),
     ("B", "And ? Do not keep me waiting !", "fear", [-1]),
     ("A", "I passed ! Every single exam !", "joy", [0]),
     ("B", "I knew you could do it !", "joy", [-1]),
     ("C", "Wow , even chemistry ?", "surprise", [-2])],
    [("A", "I think someone is following us .", "fear", [0]),
     ("B", "Where ? I do not see anybody .", "neutral", []),
     ("A", "The man in the grey coat , he has been behind us for ten blocks .", "fear", [-2, 0]),
     ("B", "That is my brother , he is coming to dinner .", "neutral", []),
     ("A", "Your brother ? Why did you not say so ?", "surprise", [-1]),
     ("A", "You scared me half to death .", "anger", [-1, -3])],
    [("A", "They cancelled the concert .", "sadness", [0]),
     ("B", "What ? We waited six months for those tickets !", "anger", [-1]),
     ("A", "The singer lost her voice .", "neutral", []),
     ("B", "Well , I hope she gets better soon .", "neutral", []),
     ("A", "At least we get a refund .", "joy", [0])],
    [("A", "Look what I found in the attic , my old diary !", "joy", [0]),
     ("B", "Read us something from it .", "neutral", []),
     ("A", "Dear diary , today Ben put a worm in my soup .", "disgust", [0]),
     ("C", "Ben , you did that ?", "surprise", [-1]),
     ("B", "I was seven ! I am still sorry .", "sadness", [-2])],
]

NON_ASCII = [
    [("A", "¡Me dieron la beca para estudiar en Lisboa !", "joy", [0]),
     ("B", "¡Qué maravilla ! Te lo mereces .", "joy", [-1]),
     ("A", "Pero tengo que irme en dos semanas .", "fear", [0]),
     ("B", "¿Dos semanas ? Es muy poco tiempo .", "surprise", [-1])],
    [("A", "আমার পরীক্ষার ফল বেরিয়েছে , আমি প্রথম হয়েছি !", "joy", [0]),
     ("B", "সত্যি ? অভিনন্দন !", "surprise", [-1]),
     ("C", "আমি জানতাম তুমি পারবে .", "joy", [-2])],
    [("A", "Der Zug fällt schon wieder aus .", "anger", [0]),
     ("B", "Das ist das dritte Mal diese Woche .", "anger", [-1, 0]),
     ("A", "Ich komme zu spät zur Prüfung .", "fear", [-2, 0]),
     ("B", "Nimm mein Fahrrad , schnell !", "neutral", [])],
    [("A", "見て、桜が咲いたよ !", "joy", [0]),
     ("B", "本当だ、きれいだね .", "joy", [-1]),
     ("A", "でも明日は雨らしい .", "sadness", [0])],
]

SPEAKERS = [("Ana", "Ben", "Chloé"), ("Dev", "Emeka", "Fatima"), ("Goro", "Hana", "Ines")]


def cause_span(text: str, k: int) -> str:
    """The Subtask 1 span of a cause utterance: its longest clause, or every third time the whole utterance
    (punctuation tokens at the ends left out, as annotators mark them)."""
    clauses, current = [], []
    for token in text.split():
        if token in {",", ".", "!", "?", ";", ":"}:
            if current:
                clauses.append(current)
            current = []
        else:
            current.append(token)
    if current:
        clauses.append(current)
    if k % 3 == 0:
        tokens = text.split()
        while tokens and tokens[-1] in {",", ".", "!", "?"}:
            tokens.pop()
        return " ".join(tokens)
    return " ".join(max(clauses, key=len))


def build(seed: int = 7) -> list[dict]:
    """36 conversations: every scene with each speaker set, then the non-ASCII scenes."""
    rng = random.Random(seed)
    scenes = [(s, names) for s in SCENES for names in SPEAKERS[:3]] + [(s, SPEAKERS[0]) for s in NON_ASCII]
    rng.shuffle(scenes)
    convs = []
    for cid, (scene, names) in enumerate(scenes[:36], start=1):
        utts, pairs = [], []
        for uid, (slot, text, emotion, offsets) in enumerate(scene, start=1):
            speaker = names["ABC".index(slot)]
            utts.append({"utterance_ID": uid, "text": text, "speaker": speaker, "emotion": emotion,
                         "video_name": f"dia{cid}utt{uid}.mp4"})
            pairs += [[f"{uid}_{emotion}", f"{uid + off}_{cause_span(scene[uid + off - 1][1], cid + uid + off)}"]
                      for off in offsets]
        convs.append({"conversation_ID": cid, "conversation": utts, "emotion-cause_pairs": pairs})
    return convs


if __name__ == "__main__":
    convs = build()
    validate_conversations(convs, "ecf_sample.json")
    write_json_atomic(Path(__file__).with_name("ecf_sample.json"), convs)
    print(f"wrote {len(convs)} conversations")
