"""EDA: every statistic on a hand-made corpus (numbers computed by hand), the figures, and notebook 01."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

os.environ.setdefault("MPLBACKEND", "Agg")  # before matplotlib is imported anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nbformat  # noqa: E402
import papermill as pm  # noqa: E402
import pytest  # noqa: E402

from utils import params, plots  # noqa: E402
from utils.ecf import data, eda
from utils.env import ROOT  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOTEBOOK = ROOT / "notebooks" / "01_eda.ipynb"
PARAMETERS = {"REPO_URL", "REPO_REF", "PERSIST_DIR", "DATA_PATH", "TRAIN_DIR", "LIMIT", "TOP_SPEAKERS", "TOP_WORDS",
              "FONT_PATH", "SHOW_TEXT"}


def utt(i, speaker, emotion, text):
    return {"utterance_ID": i, "text": text, "speaker": speaker, "emotion": emotion}


# Three conversations small enough to count by hand (the numbers in the tests below).
CONVS = [
    {"conversation_ID": 1,
     "conversation": [utt(1, "Ann", "neutral", "Hello there !"),             # 3 tokens
                      utt(2, "Bob", "sadness", "I lost my job ."),           # 5
                      utt(3, "Ann", "sadness", "Oh no , that is terrible"),  # 6
                      utt(4, "Bob", "joy", "But I found a better one !")],   # 7
     # distances 0, -1, 0, -2; the repeated ["3_sadness", "2"] counts once
     "emotion-cause_pairs": [["2_sadness", "2"], ["3_sadness", "2"], ["3_sadness", "2"],
                             ["4_joy", "4"], ["4_joy", "2"]]},
    {"conversation_ID": 2,
     "conversation": [utt(1, "Cara", "surprise", "Wow , Zoë’s café is open !"),  # 7
                      utt(2, "Dan", "joy", "Great ."),                           # 2
                      utt(3, "Cara", "anger", "Ugh")],                           # 1, no cause
     "emotion-cause_pairs": [["1_surprise", "2"]]},                             # distance +1
    {"conversation_ID": 3,
     "conversation": [utt(1, "Ann", "neutral", "Fine .")],                       # 2
     "emotion-cause_pairs": []},
]


@pytest.fixture(scope="module")
def stats():
    return eda.compute_stats(CONVS, top_speakers=2, top_word_count=10)


def test_totals(stats):
    assert (stats["conversations"], stats["utterances"], stats["pairs"], stats["speakers"]) == (3, 8, 5, 4)
    assert stats["emotion_counts"] == {"neutral": 2, "anger": 1, "disgust": 0, "fear": 0, "joy": 2,
                                       "sadness": 2, "surprise": 1}
    assert stats["emotion_shares"]["neutral"] == 0.25
    assert stats["pair_emotion_counts"] == {"neutral": 0, "anger": 0, "disgust": 0, "fear": 0, "joy": 2,
                                            "sadness": 2, "surprise": 1}


def test_conversation_lengths(stats):
    s = stats["conversation_length"]
    assert s["distribution"] == {"1": 1, "3": 1, "4": 1}
    assert (s["count"], s["mean"], s["median"], s["min"], s["max"], s["p90"]) == (3, 2.666667, 3, 1, 4, 4)


def test_utterance_tokens_are_whitespace_words(stats):
    s = stats["utterance_tokens"]  # [3, 5, 6, 7, 7, 2, 1, 2]
    assert s["distribution"] == {"1": 1, "2": 2, "3": 1, "5": 1, "6": 1, "7": 2}
    assert (s["mean"], s["median"], s["min"], s["max"], s["p90"]) == (4.125, 4, 1, 7, 7)


def test_pairs_per_conversation(stats):
    s = stats["pairs_per_conversation"]  # [4, 1, 0] after deduplication
    assert s["distribution"] == {"0": 1, "1": 1, "4": 1}
    assert (s["mean"], s["median"], s["share_without_pairs"]) == (1.666667, 1, 0.333333)


def test_causes_per_emotion_utterance(stats):
    s = stats["causes_per_emotion_utterance"]  # conv1 utt2: 1, utt3: 1, utt4: 2; conv2 utt1: 1
    assert s["distribution"] == {"1": 3, "2": 1}
    assert (s["count"], s["mean"], s["max"]) == (4, 1.25, 2)
    # six non-neutral utterances, four with a cause, 5 pairs / 6
    assert (s["non_neutral_utterances"], s["non_neutral_with_cause"], s["mean_over_non_neutral"]) == (6, 4, 0.833333)


def test_cause_distance(stats):
    s = stats["cause_distance"]  # 0, -1, 0, -2, +1
    assert s["distribution"] == {"-2": 1, "-1": 1, "0": 2, "1": 1}
    assert s["shares"] == {"-2": 0.2, "-1": 0.2, "0": 0.4, "1": 0.2}
    assert (s["share_before"], s["share_self"], s["share_after"]) == (0.4, 0.4, 0.2)
    assert (s["mean"], s["median"], s["min"], s["max"]) == (-0.4, 0, -2, 1)


def test_speaker_relation(stats):
    s = stats["speaker_relation"]  # self x2; Bob->Bob (4<-2); Ann<-Bob and Cara<-Dan
    assert s["counts"] == {"self_cause": 2, "same_speaker_other_utterance": 1, "other_speaker": 2}
    assert (s["share_same_speaker"], s["share_self_cause"]) == (0.6, 0.4)
    assert (s["share_same_speaker_other_utterance"], s["share_other_speaker"]) == (0.2, 0.4)


def test_transitions_are_row_normalised(stats):
    t = stats["transitions"]
    idx = {e: i for i, e in enumerate(t["labels"])}
    expected = Counter({("neutral", "sadness"): 1, ("sadness", "sadness"): 1, ("sadness", "joy"): 1,
                        ("surprise", "joy"): 1, ("joy", "anger"): 1})  # never across conversations
    assert t["counts"] == [[expected[(a, b)] for b in t["labels"]] for a in t["labels"]]
    assert t["row_shares"][idx["sadness"]][idx["joy"]] == 0.5
    assert t["row_shares"][idx["neutral"]][idx["sadness"]] == 1.0
    assert sum(t["row_shares"][idx["fear"]]) == 0  # an empty row stays zero, not NaN


def test_speaker_table(stats):
    table = stats["speaker_table"]
    assert [r["speaker"] for r in table] == ["Ann", "Bob"]  # top 2; Bob beats Cara on the name at 2 each
    ann, bob = table
    assert (ann["utterances"], ann["share_non_neutral"]) == (3, 0.333333)
    assert (ann["top_emotion"], ann["top_non_neutral_emotion"]) == ("neutral", "sadness")
    assert (bob["share_non_neutral"], bob["top_emotion"]) == (1.0, "joy")  # joy/sadness tie: EMOTIONS order
    assert eda.speaker_table(CONVS, top=4)[2]["top_emotion"] == "anger"  # anger/surprise tie


def test_top_words_keep_non_ascii_and_drop_stopwords(stats):
    assert stats["top_words"]["surprise"] == {"café": 1, "open": 1, "wow": 1, "zoë’s": 1}  # "is" dropped
    assert set(stats["top_words"]) == set(data.EMOTIONS)
    assert json.loads(json.dumps(stats, ensure_ascii=False)) == stats  # JSON-ready as is


def test_words_any_script():
    assert eda.words("আমি ভালো আছি।") == ["আমি", "ভালো", "আছি"]  # vowel signs kept, danda stripped
    assert eda.words("¿Qué? -- 42 «Ünïcode»!") == ["qué", "ünïcode"]


def test_empty_corpus_and_bad_pair():
    empty = eda.compute_stats([])
    assert (empty["conversations"], empty["pairs"], empty["cause_distance"]["mean"]) == (0, 0, None)
    bad = [{**CONVS[2], "emotion-cause_pairs": [["1_neutral", "9"]]}]
    with pytest.raises(ValueError, match=r"conversation 3: pair \(1, 9\)"):
        eda.compute_stats(bad)


def test_clipped_distances_pool_the_tails():
    assert eda.clipped_distances({"-12": 2, "-8": 1, "-1": 5, "0": 4, "2": 1}, clip=8) == {
        "≤-8": 3, "-7": 0, "-6": 0, "-5": 0, "-4": 0, "-3": 0, "-2": 0, "-1": 5, "0": 4, "+1": 0, "+2": 1}


def test_config_validates():
    cfg = params.build(eda.EdaConfig, {"DATA_PATH": "x.json", "TRAIN_DIR": "out", "LIMIT": 5})
    assert cfg.stats_path == ROOT / "out" / "eda_stats.json" and cfg.figures_dir == ROOT / "out" / "figures"
    with pytest.raises(params.ConfigError):
        params.build(eda.EdaConfig, {"LIMIT": "5"})
    with pytest.raises(ValueError, match="LIMIT"):
        eda.EdaConfig(LIMIT=-1)
    with pytest.raises(ValueError, match="FONT_PATH"):
        eda.EdaConfig(FONT_PATH="no/such/font.ttf")


def assert_png(path):
    head = path.read_bytes()[:8]
    assert head == PNG_MAGIC, f"{path} is not a PNG"
    assert path.stat().st_size > 5_000, f"{path} is suspiciously small"


def test_render_all_and_confusion(tmp_path):
    stats = eda.compute_stats(CONVS)
    paths = {name: plot(stats, tmp_path / f"{name}.png", show=False) for name, plot in eda.FIGURES.items()}
    assert set(paths) == set(eda.FIGURES)
    for path in paths.values():
        assert_png(path)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temp files
    out = plots.plot_confusion([[5, 1], [0, 3]], ["neutral", "joy"], tmp_path / "cm.png", "CM", show=False)
    assert_png(out)


def test_notebook_is_clean_with_documented_parameters():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is code[0]
    names = {line.split(":")[0] for line in params[0].source.splitlines() if "#" in line}
    assert names == PARAMETERS == {f.name for f in dataclasses.fields(eda.EdaConfig)}


@pytest.mark.slow
def test_notebook_runs_on_sample(tmp_path):
    out = tmp_path / "results"
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "01_eda.ipynb"), kernel_name="python3",
                        cwd=str(ROOT), progress_bar=False,
                        parameters={"DATA_PATH": "data/ecf_sample.json", "TRAIN_DIR": str(out)})
    for name in eda.FIGURES:
        assert_png(out / "figures" / f"{name}.png")
    stats = json.loads((out / "eda_stats.json").read_text(encoding="utf-8"))
    convs = data.load_ecf(data.SAMPLE_PATH)
    assert set(stats) == {"source", "limit", *eda.compute_stats(convs)}
    assert stats["conversations"] == len(convs)
    assert stats["utterances"] == sum(len(c["conversation"]) for c in convs)
    assert stats["pairs"] == sum(len(data.emotion_pairs(c)) for c in convs)
    gold = Counter(u["emotion"] for c in convs for u in c["conversation"])
    assert {e: n for e, n in stats["emotion_counts"].items() if n} == dict(gold)
    executed = nbformat.read(tmp_path / "01_eda.ipynb", as_version=4)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == len(eda.FIGURES)  # every figure was shown inline, once


WORDS = {"cheesecake": 5, "sofa": 3, "আনন্দ": 4, "খুশি": 2, "うれしい": 3, "試験": 2}


def _draws(font: str, word: str) -> bool:
    return {ord(c) for c in word} <= plots._charmap(font)


def test_each_script_gets_a_font_that_draws_it():
    groups = plots.font_groups(WORDS)
    assert sorted(w for g in groups.values() for w in g) == sorted(WORDS)  # every word once, counts kept
    assert {w: c for g in groups.values() for w, c in g.items()} == WORDS
    if not all(_draws(plots.pick_font(w, warn=False), w) for w in WORDS):
        pytest.skip("no installed font draws Bangla and Japanese (Debian: fonts-noto-core fonts-noto-cjk)")
    assert len(groups) >= 2  # no single font here draws all three scripts
    for font, group in groups.items():
        assert all(_draws(font, w) for w in group), (font, group)
    latin = {w: c for w, c in WORDS.items() if w.isascii()}
    assert plots.font_groups(latin) == {plots.default_font(): latin}  # one script: one cloud, as before


def test_a_mixed_script_cloud_is_one_panel_of_side_by_side_clouds():
    groups = plots.font_groups(WORDS)
    image = plots._cloud_image(WORDS, None)
    assert image.shape[0] == 240 and image.shape[2] == 3
    if len(groups) > 1:  # the panel is the groups' clouds side by side with a white strip between
        assert image.shape[1] >= 400 - 6 and (image[:, :, :] == 255).all(axis=(0, 2)).any()
    assert plots._cloud_image(WORDS, plots.default_font()).shape == (240, 400, 3)  # a given font: one cloud
