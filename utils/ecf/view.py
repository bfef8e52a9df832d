"""What ``utils.ecf.analyse`` shows: one self-contained HTML page (inline CSS, no script, no network; every
text escaped) with each utterance coloured by its emotion and linked to its causes, and a terminal table."""

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
color:#546e7a}
"""


def _span_words(text: str, span: tuple[int, int] | None) -> str:
    """``text`` escaped, with the cause span (whitespace tokens [start, end)) underlined."""
    if not span:
        return escape(text)
    start, end = span
    words = text.split()
    inner = " ".join(words[start:end])
    return " ".join(filter(None, [escape(" ".join(words[:start])), f'<span class="span">{escape(inner)}</span>',
                                  escape(" ".join(words[end:]))]))


def _utterance(conv: dict, utt: dict, causes: list[tuple[int, float | None]], effects: list[int],
               span: str | None) -> str:
    cid, k, emotion = conv["conversation_ID"], utt["utterance_ID"], utt["emotion"]
    probs = ", ".join(f"{e} {p:.2f}" for e, p in sorted(utt["emotion_probabilities"].items(), key=lambda x: -x[1]))
    anchor = f"c{escape(str(cid))}-u{k}"
    links = "".join(f'<a href="#c{escape(str(cid))}-u{j}" title="P(cause) {p if p is None else round(p, 3)}">'
                    f"U{j}{'' if p is None else f' · {p:.2f}'}</a>" for j, p in causes)
    cause_row = f'<div class="causes">caused by {links}</div>' if causes else (
        '<div class="causes">no cause found</div>' if emotion != "neutral" else "")
    of_row = (f'<div class="of">cause of ' + ", ".join(f'<a href="#c{escape(str(cid))}-u{i}">U{i}</a>' for i in effects)
              + "</div>") if effects else ""
    return (f'<div class="utt" id="{anchor}" style="background:{COLOURS[emotion]};border-color:{BORDERS[emotion]}" '
            f'title="{escape(probs)}"><span class="id">U{k}</span><span class="who">{escape(utt["speaker"])}</span>'
            f'<span class="text">{_span_words(utt["text"], span)}</span><span class="emo">{escape(emotion)} '
            f'<span class="p">{utt["emotion_probability"]:.2f}</span></span>{cause_row}{of_row}</div>')


def _conversation(conv: dict) -> str:
    pairs = [(int(e.split("_")[0]), int(c), p) for (e, c), p in zip(conv["emotion-cause_pairs"], conv["pair_probabilities"])]
    spans = {int(c): tuple(w) for (_, c), w in zip(conv["emotion-cause_pairs"], conv.get("cause_span_words", []))}
    rows = []
    for utt in conv["conversation"]:
        k = utt["utterance_ID"]
        causes = [(j, p) for i, j, p in pairs if i == k]
        effects = sorted({i for i, j, _ in pairs if j == k})
        rows.append(_utterance(conv, utt, causes, effects, spans.get(k)))
    return f'<h2>Conversation {escape(str(conv["conversation_ID"]))}</h2>' + "\n".join(rows)


def html(result: list[dict], title: str = "", notes: list[str] | None = None) -> str:
    """The page: a legend of the seven colours, any notes, then every conversation."""
    legend = "".join(f'<span style="background:{COLOURS[e]};border-color:{BORDERS[e]}">{e}</span>' for e in EMOTIONS)
    note_html = "".join(f'<div class="note">{escape(n)}</div>' for n in notes or [])
    body = "\n".join(_conversation(c) for c in result)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>emocause · {escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>Emotions and their causes</h1>"
            f'<p class="sub">{escape(title)} · hover an utterance for every emotion\'s probability; the number beside '
            f"a cause link is P(cause); the underlined words are the cause span</p>"
            f'<div class="legend">{legend}</div>{note_html}{body}</body></html>\n')


def table(result: list[dict], width: int = 48) -> str:
    """utterance, emotion, p, causes: one row per utterance, control characters shown escaped."""
    lines = [f"{'utterance':<{width + 5}} {'emotion':<9} {'p':>5}  causes"]
    for conv in result:
        pairs = [(int(e.split("_")[0]), int(c), p) for (e, c), p in zip(conv["emotion-cause_pairs"],
                                                                         conv["pair_probabilities"])]
        for utt in conv["conversation"]:
            k = utt["utterance_ID"]
            text = terminal_safe(f"{utt['speaker']}: {utt['text']}".replace("\n", " "))  # before the cut: widths hold
            text = text if len(text) <= width else text[: width - 1] + "…"
            causes = ", ".join(f"U{j}" + ("" if p is None else f" ({p:.2f})") for i, j, p in pairs if i == k)
            lines.append(f"U{k:<3} {text:<{width}} {utt['emotion']:<9} {utt['emotion_probability']:>5.2f}  {causes}")
    return "\n".join(lines)
