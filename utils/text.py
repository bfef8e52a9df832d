"""Text in both tracks: words for word clouds (the stop words and the tokeniser that works on any script), and
user text made safe to print on a terminal."""

from __future__ import annotations

import re
import unicodedata

# English function words are not what distinguishes one emotion's vocabulary from another's
STOPWORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being "
    "below between both but by can could did do does doing down during each few for from further "
    "had has have having he her here hers herself him himself his how i if in into is it its "
    "itself just me more most my myself no nor not now of off on once only or other our ours "
    "ourselves out over own same she should so some such than that the their theirs them "
    "themselves then there these they this those through to too under until up very was we were "
    "what when where which while who whom why will with would you your yours yourself yourselves "
    "oh okay ok yeah hey uh um umm well know like gonna wanna get got go going right really just "
    "us can will think mean one see come let say said want tell".split()  # sitcom fillers in every emotion
)


def words(text: str) -> list[str]:
    """Lower-cased words for word clouds: punctuation and symbols stripped from both ends,
    tokens without a letter dropped. Works on any script (keeps combining marks, e.g. Bangla)."""
    out = []
    for token in text.split():
        start, end = 0, len(token)
        while start < end and unicodedata.category(token[start])[0] in "PS":
            start += 1
        while end > start and unicodedata.category(token[end - 1])[0] in "PS":
            end -= 1
        word = token[start:end].lower()
        if any(unicodedata.category(ch)[0] == "L" for ch in word):
            out.append(word)
    return out


CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: Unicode's "Cc" category


def terminal_safe(text: str, keep: str = "") -> str:
    """``text`` with each control character but those in ``keep`` shown as ``\\x1b``: an escape sequence in a
    conversation (colours, a window title, a cleared screen) is printed, not obeyed. Other Unicode passes."""
    return CONTROLS.sub(lambda m: m[0] if m[0] in keep else f"\\x{ord(m[0]):02x}", text)
