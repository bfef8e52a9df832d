"""Exploratory statistics of ECF conversations (pure) and the figures of notebook 01."""

from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from utils import env, io, plots
from utils.ecf.data import EMOTIONS, emotion_pairs
from utils.text import STOPWORDS, words
from utils.params import HostedConfig, param

@dataclass(frozen=True)
class EdaConfig(HostedConfig):
    """Parameters of notebooks/01_eda.ipynb (names match its parameters cell)."""

    DATA_PATH: str = param("data/ecf_sample.json", "ECF file, official Subtask 1 or Subtask 2 format "
                                                   "(relative to the repo root)")
    TRAIN_DIR: str = param("results_train", "figures -> TRAIN_DIR/figures/*.png, numbers -> "
                                            "TRAIN_DIR/eda_stats.json (as notebooks 02-06)")
    LIMIT: int = param(0, "keep the first N conversations (0 keeps all)")
    TOP_SPEAKERS: int = param(10, "rows of the speaker table")
    TOP_WORDS: int = param(60, "words per emotion in the word clouds")
    FONT_PATH: str = param("", "word-cloud font file (empty: DejaVu Sans); give a Bangla or CJK .ttf "
                               "for those scripts")
    SHOW_TEXT: bool = param(True, "show the first conversation's utterances (False: aggregates and figures "
                                  "only, for pages rendered from a corpus whose text is not ours to publish)")

    def __post_init__(self) -> None:
        for name in ("LIMIT", "TOP_SPEAKERS", "TOP_WORDS"):
            minimum = 0 if name == "LIMIT" else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"parameter {name} must be >= {minimum}, got {getattr(self, name)}")
        if self.FONT_PATH and not env.resolve(self.FONT_PATH).is_file():
            raise ValueError(f"FONT_PATH {self.FONT_PATH!r} is not a file: give a .ttf/.otf path or ''")

    @property
    def data_path(self) -> Path:
        return env.resolve(self.DATA_PATH)

    @property
    def train_dir(self) -> Path:
        return env.resolve_artifact(self.TRAIN_DIR)

    @property
    def figures_dir(self) -> Path:
        return self.train_dir / "figures"

    @property
    def stats_path(self) -> Path:
        return self.train_dir / "eda_stats.json"


def load(cfg: EdaConfig) -> list[dict]:
    """Load the ECF file named by the config, keeping the first LIMIT conversations."""
    from utils.ecf.data import load_ecf

    convs = load_ecf(cfg.data_path)
    return convs[: cfg.LIMIT] if cfg.LIMIT else convs


# ---------------------------------------------------------------- statistics (pure functions)


def tokens(text: str) -> list[str]:
    """Whitespace words: ECF text is already tokenised, punctuation stands alone."""
    return text.split()


def summary(values: Sequence[float]) -> dict:
    """count, mean, median, min, max and 90th percentile (nearest rank); None where empty."""
    if not values:
        return {"count": 0, "mean": None, "median": None, "min": None, "max": None, "p90": None}
    ordered = sorted(values)
    p90 = ordered[max(0, -(-9 * len(ordered) // 10) - 1)]  # nearest rank: ceil(0.9 n)-th value
    return {"count": len(ordered), "mean": round(statistics.fmean(ordered), 6),
            "median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "p90": p90}


def distribution(values: Iterable[int]) -> dict[str, int]:
    """{value: count} with string keys (JSON) in numeric order."""
    counts = Counter(values)
    return {str(k): counts[k] for k in sorted(counts)}


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Each count divided by the total, rounded to 6 places."""
    total = sum(counts.values())
    return {k: round(v / total, 6) if total else 0.0 for k, v in counts.items()}


def _ratio(num: int, den: int) -> float:
    return round(num / den, 6) if den else 0.0


def _ordered_counts(counter: Counter) -> dict[str, int]:
    """Every known emotion (zeros included) in EMOTIONS order, then any unknown label."""
    extra = sorted(k for k in counter if k not in EMOTIONS)
    return {e: counter.get(e, 0) for e in (*EMOTIONS, *extra)}


def _top(counter: Counter, exclude: str | None = None) -> str | None:
    """Most frequent label; ties broken by EMOTIONS order so the answer is deterministic."""
    rank = {e: i for i, e in enumerate(EMOTIONS)}
    items = [(k, v) for k, v in counter.items() if k != exclude and v > 0]
    return min(items, key=lambda kv: (-kv[1], rank.get(kv[0], len(rank)), kv[0]))[0] if items else None


def pair_records(convs: Sequence[dict]) -> list[dict]:
    """One record per deduplicated pair: emotion, distance (cause - emotion), speakers."""
    records = []
    for conv in convs:
        speakers = {u["utterance_ID"]: u.get("speaker") for u in conv["conversation"]}
        for i, emotion, j in emotion_pairs(conv):
            if i not in speakers or j not in speakers:
                raise ValueError(f"conversation {conv['conversation_ID']}: pair ({i}, {j}) names an "
                                 f"utterance_ID that is not in the conversation (ids {sorted(speakers)})")
            records.append({"conversation_ID": conv["conversation_ID"], "emotion_utt": i,
                            "emotion": emotion, "cause_utt": j, "distance": j - i,
                            "same_speaker": speakers[i] == speakers[j]})
    return records


def speaker_table(convs: Sequence[dict], top: int = 10) -> list[dict]:
    """Top speakers by utterances: share non-neutral, most frequent emotion overall and non-neutral."""
    per_speaker: dict[str, Counter] = defaultdict(Counter)
    for conv in convs:
        for utt in conv["conversation"]:
            per_speaker[str(utt.get("speaker", ""))][utt["emotion"]] += 1
    ranked = sorted(per_speaker.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:top]
    return [{"speaker": name, "utterances": sum(c.values()),
             "share_non_neutral": _ratio(sum(c.values()) - c["neutral"], sum(c.values())),
             "top_emotion": _top(c), "top_non_neutral_emotion": _top(c, exclude="neutral"),
             "emotion_counts": _ordered_counts(c)} for name, c in ranked]


def transition_counts(convs: Sequence[dict]) -> list[list[int]]:
    """Counts of (emotion of utterance t) -> (emotion of utterance t+1), rows/cols in EMOTIONS order."""
    index = {e: k for k, e in enumerate(EMOTIONS)}
    matrix = [[0] * len(EMOTIONS) for _ in EMOTIONS]
    for conv in convs:
        labels = [u["emotion"] for u in conv["conversation"]]
        for a, b in zip(labels, labels[1:]):
            if a in index and b in index:
                matrix[index[a]][index[b]] += 1
    return matrix


def top_words(convs: Sequence[dict], top: int = 60) -> dict[str, dict[str, int]]:
    """Most frequent non-stopword words per emotion (the word clouds' input)."""
    per_emotion: dict[str, Counter] = {e: Counter() for e in EMOTIONS}
    for conv in convs:
        for utt in conv["conversation"]:
            bag = per_emotion.setdefault(utt["emotion"], Counter())
            bag.update(w for w in words(utt["text"]) if w not in STOPWORDS)
    # ties broken alphabetically so the JSON does not depend on dict order
    return {e: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top]) for e, c in per_emotion.items()}


def compute_stats(convs: Sequence[dict], *, top_speakers: int = 10, top_word_count: int = 60) -> dict:
    """Every EDA number as a JSON-ready dict (no I/O)."""
    utts = [u for conv in convs for u in conv["conversation"]]
    emotion_counts = _ordered_counts(Counter(u["emotion"] for u in utts))
    pairs = pair_records(convs)
    per_conv = [len(emotion_pairs(c)) for c in convs]
    pairs_by_utt = Counter((p["conversation_ID"], p["emotion_utt"]) for p in pairs)
    non_neutral = [(c["conversation_ID"], u["utterance_ID"]) for c in convs
                   for u in c["conversation"] if u["emotion"] != "neutral"]
    distances = distribution(p["distance"] for p in pairs)
    n_pairs, n_self = len(pairs), sum(p["distance"] == 0 for p in pairs)
    n_same = sum(p["same_speaker"] for p in pairs)
    counts = transition_counts(convs)
    return {
        "conversations": len(convs),
        "utterances": len(utts),
        "pairs": n_pairs,
        "emotion_counts": emotion_counts,
        "emotion_shares": shares(emotion_counts),
        "pair_emotion_counts": _ordered_counts(Counter(p["emotion"] for p in pairs)),
        "speakers": len({str(u.get("speaker", "")) for u in utts}),
        "conversation_length": {**summary([len(c["conversation"]) for c in convs]),
                                "distribution": distribution(len(c["conversation"]) for c in convs)},
        "utterance_tokens": {**summary([len(tokens(u["text"])) for u in utts]),
                             "distribution": distribution(len(tokens(u["text"])) for u in utts)},
        "pairs_per_conversation": {
            **summary(per_conv), "distribution": distribution(per_conv),
            "share_without_pairs": _ratio(per_conv.count(0), len(convs))},
        "causes_per_emotion_utterance": {
            **summary(list(pairs_by_utt.values())),  # over utterances that have at least one cause
            "distribution": distribution(pairs_by_utt.values()),
            "non_neutral_utterances": len(non_neutral),
            "non_neutral_with_cause": sum(k in pairs_by_utt for k in non_neutral),
            "mean_over_non_neutral": _ratio(sum(pairs_by_utt[k] for k in non_neutral), len(non_neutral))},
        "cause_distance": {  # cause_utt - emotion_utt: negative = the cause comes first
            **summary([p["distance"] for p in pairs]),
            "distribution": distances, "shares": shares(distances),
            "share_before": _ratio(sum(p["distance"] < 0 for p in pairs), n_pairs),
            "share_self": _ratio(n_self, n_pairs),
            "share_after": _ratio(sum(p["distance"] > 0 for p in pairs), n_pairs)},
        "speaker_relation": {
            "counts": {"self_cause": n_self, "same_speaker_other_utterance": n_same - n_self,
                       "other_speaker": n_pairs - n_same},
            "share_same_speaker": _ratio(n_same, n_pairs),  # self-causes included
            "share_self_cause": _ratio(n_self, n_pairs),
            "share_same_speaker_other_utterance": _ratio(n_same - n_self, n_pairs),
            "share_other_speaker": _ratio(n_pairs - n_same, n_pairs)},
        "transitions": {"labels": list(EMOTIONS), "counts": counts,
                        "row_shares": [[round(x, 6) for x in row] for row in _row_shares(counts)]},
        "speaker_table": speaker_table(convs, top_speakers),
        "top_words": top_words(convs, top_word_count),
    }


def _row_shares(matrix: list[list[int]]) -> list[list[float]]:
    return [[x / sum(row) if sum(row) else 0.0 for x in row] for row in matrix]


def save_stats(stats: dict, cfg: EdaConfig) -> Path:
    """Write the numbers (and where they came from) to TRAIN_DIR/eda_stats.json atomically."""
    return io.write_json_atomic(cfg.stats_path, {"source": cfg.DATA_PATH, "limit": cfg.LIMIT, **stats})


# ---------------------------------------------------------------- figures (one per statistic)

CLIP_DISTANCE = 8  # the distance plot pools |d| > 8 into edge bars: the long tail is a handful


def _expand(dist: dict[str, int]) -> list[int]:
    """Back from a {value: count} distribution to the raw values (for histograms)."""
    return [int(k) for k, n in dist.items() for _ in range(n)]


def plot_conversation_lengths(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    return plots.histogram(_expand(stats["conversation_length"]["distribution"]), path,
                           "Utterances per conversation", xlabel="utterances", ylabel="conversations",
                           discrete=True, show=show)


def plot_emotion_distribution(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    return plots.countplot(stats["emotion_counts"], path, "Utterance emotions", xlabel="emotion",
                           ylabel="utterances", order=list(stats["emotion_counts"]), show=show)


def plot_utterance_lengths(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    return plots.histogram(_expand(stats["utterance_tokens"]["distribution"]), path,
                           "Utterance length (whitespace tokens)", xlabel="tokens",
                           ylabel="utterances", discrete=True, show=show)


def plot_pairs_per_conversation(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    return plots.histogram(_expand(stats["pairs_per_conversation"]["distribution"]), path,
                           "Emotion-cause pairs per conversation", xlabel="pairs",
                           ylabel="conversations", discrete=True, show=show)


def plot_causes_per_emotion_utterance(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    dist = stats["causes_per_emotion_utterance"]["distribution"]
    return plots.countplot(dist, path, "Causes per emotion utterance (utterances with a cause)",
                           xlabel="cause utterances", ylabel="emotion utterances", order=list(dist),
                           show=show)


def clipped_distances(dist: dict[str, int], clip: int = CLIP_DISTANCE) -> dict[str, int]:
    """Pool distances beyond ±clip into '≤-clip' / '≥+clip'; keep every step in between (zeros too)."""
    values = [int(k) for k in dist] or [0]
    low, high = max(-clip, min(min(values), 0)), min(clip, max(max(values), 0))

    def label(d: int) -> str:
        return f"≤{d:+d}" if d == -clip else f"≥{d:+d}" if d == clip else f"{d:+d}" if d else "0"

    out = {label(d): 0 for d in range(low, high + 1)}
    for k, n in dist.items():
        out[label(min(max(int(k), low), high))] += n
    return out


def plot_cause_distance(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    dist = clipped_distances(stats["cause_distance"]["distribution"])
    return plots.countplot(dist, path, "Cause position relative to the emotion utterance",
                           xlabel="cause_utt − emotion_utt (negative: cause comes first)",
                           ylabel="pairs", order=list(dist), show=show)


def plot_speaker_relation(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    names = {"self_cause": "self-cause", "same_speaker_other_utterance": "same speaker,\nother utterance",
             "other_speaker": "other speaker"}
    counts = {names[k]: n for k, n in stats["speaker_relation"]["counts"].items()}
    return plots.countplot(counts, path, "Who causes the emotion?", ylabel="pairs",
                           order=list(counts), show=show)


def plot_wordclouds(stats: dict, path: str | os.PathLike, show: bool = True, font_path: str = "") -> Path:
    return plots.wordcloud_grid(stats["top_words"], path, "Most frequent words per emotion",
                                font_path=font_path or None, show=show)


def plot_transitions(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    tr = stats["transitions"]
    return plots.heatmap(tr["row_shares"], tr["labels"], tr["labels"], path,
                         "Emotion transitions between consecutive utterances (row-normalised)",
                         xlabel="next utterance", ylabel="utterance", vmin=0.0, vmax=1.0, show=show)


def plot_speakers(stats: dict, path: str | os.PathLike, show: bool = True) -> Path:
    table = stats["speaker_table"]
    rows = {f"{r['speaker']} ({r['utterances']})": shares(r["emotion_counts"]) for r in table}
    return plots.stacked_barh(rows, list(stats["emotion_counts"]), path,
                              "Emotion mix of the top speakers (utterances)", show=show)


FIGURES: dict[str, Callable[..., Path]] = {
    "conversation_lengths": plot_conversation_lengths,
    "emotion_distribution": plot_emotion_distribution,
    "utterance_lengths": plot_utterance_lengths,
    "pairs_per_conversation": plot_pairs_per_conversation,
    "causes_per_emotion_utterance": plot_causes_per_emotion_utterance,
    "cause_distance": plot_cause_distance,
    "speaker_relation": plot_speaker_relation,
    "wordclouds": plot_wordclouds,
    "emotion_transitions": plot_transitions,
    "speakers": plot_speakers,
}
