"""The empathetic track on the release's shapes: its split rules, ED_TEST_PATH, bad lines of the release format,
the one-read classifier, the baselines, the CPU budget and the ``ed:release`` download (a local HTTP server)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils.ed import baselines, config, data, download, evaluate, prompts

RELEASE_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"


def release_csv(conversations: list[tuple[str, str]], turns: int = 2) -> str:
    """A release-format csv: each (conv_id, emotion) with ``turns`` alternating utterances."""
    lines = [RELEASE_HEADER]
    for conv, emotion in conversations:
        for i in range(1, turns + 1):
            lines.append(f"{conv},{i},{emotion},my {emotion} day_comma_ really,{i % 2},turn {i} of {conv},,\n")
    return "".join(lines)


def write_release(folder: Path, splits: dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        convs = [(f"{split}:{k}", data.EMOTIONS_32[k % 32]) for k in range(n)]
        (folder / f"{split}.csv").write_text(release_csv(convs), encoding="utf-8")
    return folder


def test_a_release_folder_without_its_test_file_scores_on_valid(tmp_path):
    df, _ = data.load_empathetic(write_release(tmp_path / "ed", {"train": 40, "valid": 10}))
    splits = data.split_by_conversation(df, test_frac=0.1, val_frac=0.1, seed=3)
    ids = {name: set(part["conv_id"]) for name, part in splits.items()}
    assert ids["test"] == {f"valid:{k}" for k in range(10)}  # the valid file, whole
    assert len(ids["val"]) == 4 and ids["val"] <= {f"train:{k}" for k in range(40)}  # 10% of train, for the eval loss
    assert not ids["train"] & ids["val"] and len(ids["train"]) == 36
    with_test, _ = data.load_empathetic(write_release(tmp_path / "full", {"train": 6, "valid": 3, "test": 2}))
    full = data.split_by_conversation(with_test)
    assert {n: p["conv_id"].nunique() for n, p in full.items()} == {"train": 6, "val": 3, "test": 2}


def test_ed_test_path_is_the_test_set_and_nothing_else(tmp_path, capsys):
    folder = write_release(tmp_path / "ed", {"train": 30, "valid": 8})
    held = tmp_path / "held.csv"
    held.write_text(release_csv([("valid:1", "sad"), ("other:9", "proud")]), encoding="utf-8")
    cfg = config.EdClassifyConfig(ED_DATA_PATH=str(folder), ED_TEST_PATH=str(held), MODEL="smollm2")
    df, _ = config.load_for(cfg)
    splits = config.splits_for(cfg, df, "conversation")
    assert list(splits["test"]["conv_id"]) == ["valid:1", "other:9"]  # that file's rows, one per conversation
    # its conversations leave the others; the release's valid file is then val
    assert "valid:1" not in set(splits["val"]["conv_id"]) | set(splits["train"]["conv_id"])
    assert set(splits["val"]["conv_id"]) == {f"valid:{k}" for k in range(8)} - {"valid:1"}
    assert "held.csv" in capsys.readouterr().out


def test_first_turns_keep_one_row_per_conversation_in_order(tmp_path):
    df, _ = data.load_empathetic(write_release(tmp_path / "ed", {"train": 3}), fmt="original")
    df4, _ = data.load_empathetic(tmp_path / "ed" / "train.csv")
    assert len(df) == 3
    four = tmp_path / "four.csv"
    four.write_text(release_csv([("a", "sad"), ("b", "proud")], turns=4), encoding="utf-8")
    rows, _ = data.load_empathetic(four)
    first = data.first_turns(rows)
    assert list(first["conv_id"]) == ["a", "b"] and list(first["dialogue"]) == ["turn 1 of a", "turn 1 of b"]
    assert len(df4) == 3


@pytest.mark.parametrize("line, column, problem", [
    ("c2,1,sad,a day,1,I said, with a raw comma,,\n", None, "9 fields"),
    ("c2,1,happyish,a day,1,hello,,\n", "emotion", "happyish"),
    ("c2,1,sad,a day,1,,,\n", "utterance", "utterance is empty"),
])
def test_bad_release_lines_name_file_row_and_column_or_are_counted(tmp_path, line, column, problem):
    path = tmp_path / "train.csv"
    path.write_text(release_csv([("c1", "sad")]) + line + "c2,2,sad,a day,0,reply,,\n", encoding="utf-8")
    where = r"train\.csv, row 3" + (f", column '{column}'" if column else "")
    with pytest.raises(data.EmpatheticDataError, match=where + ".*" + problem) as raised:
        data.load_empathetic(path)
    assert "\n" not in str(raised.value)  # one line
    df, report = data.load_empathetic(path, on_error="drop")
    assert len(report.dropped) == 1 and report.dropped[0]["row"] == 3
    assert list(df["conv_id"]) == ["c1"]  # the broken conversation's reply pairs with nothing


@pytest.fixture(scope="module")
def smol():
    from utils.lm import plan
    from utils.lm.modeling import load_tokenizer
    return load_tokenizer(plan.resolve_model("smollm2"))


def test_classification_examples_train_one_label_token_read_where_inference_reads(smol):
    rows = pd.DataFrame([{"situation": "My dog died.", "dialogue": "I miss him so much.", "emotion": "sad"},
                         {"situation": "Exam tomorrow " * 200, "dialogue": "help", "emotion": "anxious"}])
    ids = prompts.label_ids(smol)
    assert len(set(ids)) == 32
    examples = prompts.classification_examples(smol, rows, "situation+dialogue", 96)
    for ex, emotion in zip(examples, rows["emotion"]):
        trained = [(i, t) for i, t in enumerate(ex["labels"]) if t != prompts.IGNORE]
        assert trained == [(len(ex["input_ids"]) - 1, ids[data.EMOTIONS_32.index(emotion)])]
        text = prompts.classifier_text(rows[rows["emotion"] == emotion].iloc[0], "situation+dialogue")
        assert ex["input_ids"][:-1] == prompts.read_ids(smol, text, 96)  # what label_probs feeds
    assert len(examples[1]["input_ids"]) <= 96  # the long text was shortened, the label kept
    assert smol.decode(examples[1]["input_ids"]).rstrip().endswith("Emotion: anxious")
    assert "afraid" not in smol.decode(examples[0]["input_ids"])  # no list of 32 names


def test_baselines_majority_and_bag_of_words():
    assert baselines.majority(["sad", "proud", "proud", "sad", "afraid"], 3) == ["proud"] * 3  # tie: alphabetical
    texts = ["my dog died", "i lost my dog", "got a raise at work", "won the prize", "the dog passed away",
             "a prize for me"]
    labels = ["sad", "sad", "proud", "proud", "sad", "proud"]
    pred, conf = baselines.tfidf_predict(texts, labels, ["my old dog died", "i won a prize"])
    assert pred == ["sad", "proud"] and ((conf > 0.5) & (conf <= 1)).all()


def test_confused_pairs_count_both_directions():
    labels = ["afraid", "terrified", "sad"]
    pairs = evaluate.confused_pairs([[5, 3, 0], [2, 4, 1], [0, 0, 9]], labels, top=5)
    assert pairs.iloc[0]["pair"] == "afraid / terrified" and pairs.iloc[0]["count"] == 5
    assert list(pairs["pair"]) == ["afraid / terrified", "terrified / sad"]


def test_cpu_trains_on_a_seeded_sample_a_gpu_on_all(capsys):
    cfg = config.EdClassifyConfig(MODEL="smollm2")
    train = pd.DataFrame({"conv_id": range(20_000), "emotion": "sad"})
    cpu = config.train_rows(cfg, train, "cpu")
    assert len(cpu) == config.CLASSIFY_CPU_ROWS and cpu["conv_id"].is_unique
    assert cpu.equals(config.train_rows(cfg, train, "cpu"))  # seeded
    assert len(config.train_rows(cfg, train, "cuda")) == 20_000
    assert len(config.train_rows(dataclasses.replace(cfg, CPU_TRAIN_ROWS=0), train, "cpu")) == 20_000
    assert len(config.train_rows(dataclasses.replace(cfg, CPU_TRAIN_ROWS=50), train, "cpu")) == 50
    line = config.budget_line([{"input_ids": [1] * 100}] * 84, 1.0, "cpu")
    assert "8,400 tokens" in line and f"about {8400 / config.CPU_TOKENS_PER_S / 60:.0f} min" in line
    assert "min" not in config.budget_line([{"input_ids": [1] * 100}], 1.0, "cuda")


# ---------------------------------------------------------------- ed:release


def release_archive(splits: dict[str, int]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for split, n in splits.items():
            raw = release_csv([(f"hit:{k}_conv:{split}", data.EMOTIONS_32[k % 32]) for k in range(n)]).encode()
            info = tarfile.TarInfo(f"empatheticdialogues/{split}.csv")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server over tmp_path/www; yields (base url, the request log)."""
    www = tmp_path / "www"
    www.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, hits
    httpd.shutdown()


def test_ed_release_downloads_once_checks_and_records_the_archive(tmp_path, server, monkeypatch, capsys):
    url, www, hits = server
    counts = {"train": 5, "valid": 3, "test": 2}
    archive = release_archive(counts)
    (www / "ed.tar.gz").write_bytes(archive)
    monkeypatch.setenv("EMOCAUSE_PERSIST_DIR", str(tmp_path / "persist"))
    monkeypatch.setenv(download.URL_ENV, f"{url}/ed.tar.gz")
    monkeypatch.setattr(download, "RELEASE_CONVERSATIONS", counts)
    cfg = config.EdClassifyConfig(ED_DATA_PATH="ed:release", MODEL="smollm2")
    folder = cfg.data_path
    assert folder == tmp_path / "persist" / "data" / "ed" / "empatheticdialogues"
    sha = hashlib.sha256(archive).hexdigest()
    assert download.recorded(folder)["sha256"] == sha and sha in capsys.readouterr().out
    df, _ = config.load_for(cfg)
    assert df["conv_id"].nunique() == 10 and set(df["split"]) == {"train", "valid", "test"}
    assert cfg.data_path == folder and len(hits) == 1  # once


def test_ed_release_refuses_an_archive_that_is_not_the_release(tmp_path, server, monkeypatch):
    url, www, _ = server
    (www / "short.tar.gz").write_bytes(release_archive({"train": 5, "valid": 3}))
    (www / "page.tar.gz").write_text("<html>not found</html>")
    monkeypatch.setenv("EMOCAUSE_PERSIST_DIR", str(tmp_path / "persist"))
    monkeypatch.setattr(download, "RELEASE_CONVERSATIONS", {"train": 5, "valid": 3, "test": 2})
    with pytest.raises(data.EmpatheticDataError, match=r"test\.csv: missing from the archive"):
        download.release_folder(url=f"{url}/short.tar.gz")
    with pytest.raises(data.EmpatheticDataError, match="not a readable .tar.gz"):
        download.release_folder(url=f"{url}/page.tar.gz")
    with pytest.raises(data.EmpatheticDataError, match=r"valid\.csv: 3 conversations where the release has 4"):
        download.release_folder(url=f"{url}/short.tar.gz", expected={"train": 5, "valid": 4})
    assert not (tmp_path / "persist" / "data" / "ed" / "empatheticdialogues").exists()  # nothing half-written
    with pytest.raises(data.EmpatheticDataError, match="could not download"):
        download.release_folder(url=f"{url}/missing.tar.gz")


def test_the_one_read_classifier_learns_its_labels(tiny_family, tmp_path):
    from utils.lm import training
    from utils.lm.modeling import LoraSettings, load_model, load_tokenizer
    from utils.ed.predict import label_probs

    model = str(tiny_family("llama"))
    tokenizer = load_tokenizer(model)
    assert prompts.label_ids(tokenizer) is not None  # the read path: each label one first token
    rows = pd.DataFrame({"situation": ["my dog died", "i won the prize", "a spider in my bed", "my friend lied"] * 4,
                         "dialogue": ["so sad", "so proud", "so scared", "so angry"] * 4,
                         "emotion": ["sad", "proud", "terrified", "furious"] * 4})
    examples = prompts.classification_examples(tokenizer, rows, "situation+dialogue", 64)
    texts = [prompts.classifier_text(r, "situation+dialogue") for r in rows.head(4).to_dict("records")]
    gold = [data.EMOTIONS_32.index(e) for e in rows["emotion"].head(4)]
    before = label_probs(load_model(model), tokenizer, texts, 64)[range(4), gold]
    cfg = training.TrainConfig(output_dir=str(tmp_path / "out"), max_steps=12, learning_rate=5e-3, batch_size=4,
                               max_length=64, save_steps=1000, logging_steps=1, resume=False,
                               answer_ids=tuple(prompts.label_ids(tokenizer)),
                               lora=LoraSettings(target_modules=("q_proj", "v_proj", "gate_proj", "up_proj")))
    result = training.train(model, examples, None, cfg)
    after = label_probs(load_model(model, adapter=result.adapter_dir), tokenizer, texts, 64)
    assert np.allclose(after.sum(axis=1), 1) and (after[range(4), gold] > before).all()
    assert (after.argmax(axis=1) == gold).mean() >= 0.75
