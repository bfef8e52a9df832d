"""Notebook 07's figures and counts of a cleaned EmpatheticDialogues frame."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from utils import plots
from utils.ed.config import EdEdaConfig
from utils.ed.data import EMOTIONS_32, word_counts
from utils.env import resolve


def eda_figures(df: pd.DataFrame, cfg: EdEdaConfig, show: bool = True) -> dict[str, Path]:
    """Emotion countplot, text length by emotion, word clouds of situations and of dialogues."""
    out = cfg.figures_dir
    paths = {"emotions": plots.countplot(df["emotion"], out / "ed_emotion_counts.png",
                                         "EmpatheticDialogues: rows per emotion", order=EMOTIONS_32,
                                         annotate=False, rotate=90, show=show)}
    order = df.groupby("emotion")["text_length"].median().sort_values().index
    fig, ax = plt.subplots(figsize=(12, 4.5))
    sns.boxplot(data=df, x="emotion", y="text_length", order=list(order), ax=ax, color="C0", fliersize=2)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set(title="Speaker-turn length by emotion (characters)", xlabel="", ylabel="characters")
    paths["lengths"] = plots.save_figure(fig, out / "ed_text_length_by_emotion.png", show)
    clouds = {name: dict(sorted(word_counts(df[column]).items(), key=lambda kv: -kv[1])[: cfg.TOP_WORDS])
              for name, column in (("situations", "situation"), ("dialogues", "dialogue"))}
    paths["wordclouds"] = plots.wordcloud_grid(clouds, out / "ed_wordclouds.png", "Most frequent words",
                                               font_path=cfg.FONT_PATH and str(resolve(cfg.FONT_PATH)) or None,
                                               columns=2, show=show)
    return paths


def eda_stats(df: pd.DataFrame) -> dict:
    """Counts a report quotes: rows, conversations, per-emotion rows, length summary."""
    lengths = df["text_length"]
    return {"rows": int(len(df)), "conversations": int(df["conv_id"].nunique()),
            "emotions": {e: int(n) for e, n in df["emotion"].value_counts().reindex(EMOTIONS_32, fill_value=0).items()},
            "text_length": {k: float(v) for k, v in lengths.describe().items()},
            "non_ascii_rows": int((~df["dialogue"].map(str.isascii)).sum())}


def sample_note(df: pd.DataFrame, data_path: Path) -> str | None:
    """What the page says when it shows the bundled synthetic sample rather than EmpatheticDialogues itself;
    None for any other file."""
    from utils.ed.data import SAMPLE_PATH

    if Path(data_path).resolve() != Path(SAMPLE_PATH).resolve():
        return None
    per = df["emotion"].value_counts().reindex(EMOTIONS_32, fill_value=0)
    spread = f"{per.min()}" if per.min() == per.max() else f"{per.min()} to {per.max()}"
    return (f"This is the project's synthetic sample ({len(df):,} rows, {spread} per emotion), written for tests and "
            "the demo: its counts and clouds show what the figures look like, not what EmpatheticDialogues holds. "
            "Set ED_DATA_PATH to the Kaggle CSV (64,636 rows) or the original release for the real figures.")
