"""What ``utils.ecf.analyse`` shows: one self-contained HTML page (inline CSS, no script, no network; every
text escaped) with each utterance coloured by its emotion and linked to its causes, and a terminal table. Both
set a cause the model found (P above the cut-off) apart from a guess (the rule's fallback pair for an emotional
utterance left with none), and mark the words of an utterance the reads did not see."""

from __future__ import annotations

from html import escape

from utils.ecf.data import EMOTIONS
from utils.text import terminal_safe

COLOURS = {"neutral": "#eceff1", "anger": "#ef9a9a", "disgust": "#c5e1a5", "fear": "#b39ddb", "joy": "#fff59d",
           "sadness": "#90caf9", "surprise": "#ffcc80"}  # pale fills: black text stays readable on each
BORDERS = {"neutral": "#b0bec5", "anger": "#c62828", "disgust": "#558b2f", "fear": "#4527a0", "joy": "#f9a825",
           "sadness": "#1565c0", "surprise": "#ef6c00"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:980px;color:#212121}
h1{font-size:20px;margin:0 0 4px} .sub{color:#616161;margin:0 0 12px} .note{background:#fff8e1;padding:6px 10px;
border-left:4px solid #ffb300;margin:6px 0} .legend span{display:inline-block;padding:2px 10px;margin:0 6px 6px 0;
border-radius:10px;border:1px solid #9e9e9e;font-size:13px} .utt{display:grid;grid-template-columns:48px 120px 1fr
150px;gap:10px;align-items:start;padding:8px 10px;margin:4px 0;border-radius:6px;border-left:6px solid}
.utt:target{outline:3px solid #212121} .id{font-weight:600;color:#424242} .who{font-weight:600;overflow-wrap:anywhere}
.text{overflow-wrap:anywhere;white-space:pre-wrap} .emo{text-align:right;font-weight:600} .p{font-weight:400;
color:#424242} .causes{grid-column:3/5;font-size:13px;color:#37474f} .causes a{color:#0d47a1;font-weight:600;
margin-right:8px} .span{background:rgba(0,0,0,.08);border-bottom:2px solid #263238} .of{grid-column:3/5;font-size:12px;
color:#546e7a} .causes a.guess{color:#546e7a;font-weight:400;border:1px dashed #78909c;border-radius:4px;padding:0 4px;
background:rgba(255,255,255,.6)}
.unread{color:#455a64;font-style:italic;background:rgba(255,255,255,.6)} .cut{font-size:12px;color:#b71c1c;
background:#fff;border:1px solid #b71c1c;border-radius:4px;padding:0 4px;margin-left:6px;white-space:nowrap}
.about{color:#424242;font-size:13px;margin:2px 0}
.warn{background:#ffebee;padding:6px 10px;border-left:4px solid #c62828;margin:6px 0}
"""
ABOUT = ("emotion adapter", "cause adapter")  # the lines ``analyse`` opens with: what each adapter was trained on


def _span_words(text: str, span: tuple[int, int] | None, read: int | None = None) -> str:
    """``text`` escaped, the cause span (whitespace tokens [start, end)) underlined and the words past ``read`` (the
    reads did not see them) greyed and marked."""
    words = text.split()
    seen, unread = (words, []) if read is None else (words[:read], words[read:])
    if span:
        start, end = span
        parts = [escape(" ".join(seen[:start])), f'<span class="span">{escape(" ".join(seen[start:end]))}</span>',
                 escape(" ".join(seen[end:]))]
    else:
        parts = [escape(" ".join(seen)) if unread else escape(text)]
    if unread:
        parts.append(f'<span class="unread" title="not read: past the first tokens the model sees">'
                     f'{escape(" ".join(unread))}</span><span class="cut">cut: read {read} of {len(words)} words</span>')
    return " ".join(filter(None, parts))


def _link(cid: object, j: int, p: float | None, source: str) -> str:
    """A cause link: the model's (P above the cut-off) plain, a fallback guess dashed and marked."""
    cause = "P(cause)" if p is None else f"P(cause) {p:.3f}"
    if source == "guess":
        return (f'<a class="guess" href="#c{escape(str(cid))}-u{j}" title="a guess: {cause}, below the cut-off; the '
                f'rule\'s fallback for an emotional utterance the model left with no cause">U{j} guess</a>')
    return f'<a href="#c{escape(str(cid))}-u{j}" title="{cause}">U{j}{"" if p is None else f" · {p:.2f}"}</a>'


def _utterance(conv: dict, utt: dict, causes: list[tuple[int, float | None, str]], effects: list[int],
               span: str | None) -> str:
    cid, k, emotion = conv["conversation_ID"], utt["utterance_ID"], utt["emotion"]
    probs = ", ".join(f"{e} {p:.2f}" for e, p in sorted(utt["emotion_probabilities"].items(), key=lambda x: -x[1]))
    anchor = f"c{escape(str(cid))}-u{k}"
    links = "".join(_link(cid, j, p, source) for j, p, source in causes)
    cause_row = f'<div class="causes">caused by {links}</div>' if causes else (
        '<div class="causes">no cause found</div>' if emotion != "neutral" else "")
    of_row = (f'<div class="of">cause of ' + ", ".join(f'<a href="#c{escape(str(cid))}-u{i}">U{i}</a>' for i in effects)
              + "</div>") if effects else ""
    return (f'<div class="utt" id="{anchor}" style="background:{COLOURS[emotion]};border-color:{BORDERS[emotion]}" '
            f'title="{escape(probs)}"><span class="id">U{k}</span><span class="who">{escape(utt["speaker"])}</span>'
            f'<span class="text">{_span_words(utt["text"], span, utt.get("words_read"))}</span>'
            f'<span class="emo">{escape(emotion)} '
            f'<span class="p">{utt["emotion_probability"]:.2f}</span></span>{cause_row}{of_row}</div>')


def _pairs(conv: dict) -> list[tuple[int, int, float | None, str]]:
    """(i, j, P(cause), "model" or "guess") of each pair of an ``analyse`` record (no sources: the model's)."""
    sources = conv.get("pair_sources") or ["model"] * len(conv["emotion-cause_pairs"])
    return [(int(e.split("_")[0]), int(c), p, s)
            for (e, c), p, s in zip(conv["emotion-cause_pairs"], conv["pair_probabilities"], sources)]


def _conversation(conv: dict) -> str:
    pairs = _pairs(conv)
    spans = {int(c): tuple(w) for (_, c), w in zip(conv["emotion-cause_pairs"], conv.get("cause_span_words", []))}
    rows = []
    for utt in conv["conversation"]:
        k = utt["utterance_ID"]
        causes = [(j, p, s) for i, j, p, s in pairs if i == k]
        effects = sorted({i for i, j, _, _ in pairs if j == k})
        rows.append(_utterance(conv, utt, causes, effects, spans.get(k)))
    return f'<h2>Conversation {escape(str(conv["conversation_ID"]))}</h2>' + "\n".join(rows)


def html(result: list[dict], title: str = "", notes: list[str] | None = None) -> str:
    """The page: a legend of the seven colours, any notes, then every conversation."""
    legend = "".join(f'<span style="background:{COLOURS[e]};border-color:{BORDERS[e]}">{e}</span>' for e in EMOTIONS)
    note_html = "".join(f'<div class="{_note_class(n)}">{escape(n)}</div>' for n in notes or [])
    body = "\n".join(_conversation(c) for c in result)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>emocause · {escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>Emotions and their causes</h1>"
            f'<p class="sub">{escape(title)} · hover an utterance for every emotion\'s probability; the number beside '
            f"a cause link is P(cause), above the cut-off: the model found it; a dashed grey link marked guess is the "
            f"rule's fallback, below the cut-off; the underlined words are the cause span; the grey italic words on "
            f'a pale band, marked cut, were not read</p><p class="sub">{_tally(result)}</p>'
            f'<div class="legend">{legend}</div>{note_html}{body}</body></html>\n')


def _note_class(note: str) -> str:
    return "warn" if note.startswith("warning:") else "about" if note.startswith(ABOUT) else "note"


def _tally(result: list[dict]) -> str:
    """How many cause links the model found and how many are the fallback's guesses."""
    sources = [s for conv in result for *_, s in _pairs(conv)]
    guesses = sources.count("guess")
    return (f"{len(sources)} cause links: {len(sources) - guesses} found by the model (P above the cut-off), "
            f"{guesses} {'guess' if guesses == 1 else 'guesses'} (below it: the fallback pairs of emotional utterances "
            "the model left with none)")


def table(result: list[dict], width: int = 48) -> str:
    """utterance, emotion, p, causes: one row per utterance, control characters shown escaped."""
    lines = [f"{'utterance':<{width + 5}} {'emotion':<9} {'p':>5}  causes"]
    for conv in result:
        pairs = _pairs(conv)
        for utt in conv["conversation"]:
            k = utt["utterance_ID"]
            text = terminal_safe(f"{utt['speaker']}: {utt['text']}".replace("\n", " "))  # before the cut: widths hold
            cut = " [cut]" if "words_read" in utt else ""
            text = text + cut if len(text + cut) <= width else text[: width - 1 - len(cut)] + "…" + cut
            causes = ", ".join(f"U{j}" + (" guess" if s == "guess" else "") + ("" if p is None else f" ({p:.2f})")
                               for i, j, p, s in pairs if i == k)
            lines.append(f"U{k:<3} {text:<{width}} {utt['emotion']:<9} {utt['emotion_probability']:>5.2f}  {causes}")
    if any(s == "guess" for conv in result for *_, s in _pairs(conv)):
        lines.append(_tally(result))
    if any("words_read" in u for conv in result for u in conv["conversation"]):
        lines.append("[cut]: the reads saw only the first words of that utterance; no cause span covers the rest")
    return "\n".join(lines)
