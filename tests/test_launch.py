"""Multi-process training: two CPU processes (gloo) launched by accelerate train the tiny model and save one adapter."""

from __future__ import annotations

import math
import re

import pytest

from utils import params
from utils.ecf import config, launch
from utils.io import read_json
from utils.lm.modeling import weights_digest

CPU2 = launch.CONFIG_DIR / "cpu2.yaml"
STEPS, BATCH, WORLD = 3, 2, 2


def test_flags_round_trip_to_the_notebook_config():
    cfg = config.CauseFinetuneConfig(MAX_STEPS=7, LEARNING_RATE=3e-5, MERGE=True, CAUSE_EMOTIONS="gold")
    assert launch.parse_args(launch.to_argv("cause", cfg)) == ("cause", cfg, None)
    task, parsed, out = launch.parse_args(["--task", "emotion", "--data", "x.json", "--max-steps", "5",
                                           "--no-resume", "--output-dir", "/tmp/run"])
    assert (task, parsed.DATA_PATH, parsed.MAX_STEPS, parsed.RESUME) == ("emotion", "x.json", 5, False)
    assert str(out) == "/tmp/run"
    assert type(parsed) is config.FinetuneConfig
    with pytest.raises(params.ConfigError, match="CAUSE_EMOTIONS"):  # a cause flag on the emotion task
        launch.parse_args(["--task", "emotion", "--cause-emotions", "gold"])
    with pytest.raises(SystemExit):
        launch.parse_args(["--task", "summarise"])


def test_flags_come_from_the_dataclass(capsys):
    parser = launch.build_parser("emotion")
    help_text = " ".join(parser.format_help().split())
    assert "peak learning rate of the LoRA weights (linear decay, 3% warm-up) (default: 0.001)" in help_text
    assert "--data-path DATA_PATH, --data DATA_PATH" in help_text and "--cause-emotions" not in help_text
    assert "--emotion-format EMOTION_FORMAT" in help_text and "--cause-layout" not in help_text
    _, cfg, _ = launch.parse_args(["--task", "emotion", "--smoke", "--merge", "false", "--resume", "false",
                                   "--epochs", "2"])
    assert (cfg.SMOKE, cfg.MERGE, cfg.RESUME, cfg.EPOCHS) == (True, False, False, 2.0)
    with pytest.raises(SystemExit):  # typed by the field: argparse names the flag
        launch.parse_args(["--task", "emotion", "--max-steps", "1.5"])
    assert "--max-steps: invalid int value: '1.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        launch.parse_args(["--task", "emotion", "--merge", "maybe"])
    assert "--merge: invalid bool value: 'maybe'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no prefix abbreviations: a typo is an error
        launch.parse_args(["--task", "emotion", "--max-step", "2"])
    assert "unrecognized arguments: --max-step 2" in capsys.readouterr().err
    assert launch.main(["--task", "cause", "--cause-cutoffs", "all"]) == 2  # the dataclass's check, no traceback
    assert capsys.readouterr().err.startswith("error: CAUSE_CUTOFFS='all'")


def test_notebook_launch_forks_run_and_refuses_after_cuda(monkeypatch, tmp_path):
    import accelerate
    import torch

    seen = {}

    def fake_launcher(fn, args=(), num_processes=None, use_port="29500", **kwargs):
        seen.update(fn=fn, args=args, num_processes=num_processes, port=use_port)
        (tmp_path / launch.SUMMARY_FILE).write_text('{"world_size": 2}', encoding="utf-8")

    monkeypatch.setattr(accelerate, "notebook_launcher", fake_launcher)
    cfg = config.FinetuneConfig(MAX_STEPS=1)
    assert launch.notebook_launch("emotion", cfg, tmp_path, num_processes=2) == {"world_size": 2}
    assert seen["fn"] is launch.train_process and seen["args"] == ("emotion", cfg, tmp_path) and seen["num_processes"] == 2
    assert seen["port"].isdigit()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="subprocess_launch"):
        launch.notebook_launch("emotion", cfg, tmp_path)


def _lora_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_two_cpu_processes_train_and_save_one_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel

    from utils.lm.modeling import LoadStrategy, load_model

    cfg = config.FinetuneConfig(MODEL=str(tiny_model_dir), DATA_PATH="data/ecf_sample.json", MAX_STEPS=STEPS,
                                  SAVE_STEPS=STEPS, BATCH_SIZE=BATCH, LOGGING_STEPS=1, LEARNING_RATE=1e-3,
                                  CHECKPOINT_DIR=str(tmp_path / "unused"))
    out = tmp_path / "run"
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    ran = launch.subprocess_launch("emotion", cfg, out, num_processes=WORLD, config_file=CPU2,
                                   port=launch.free_port(), env=env, echo=False)
    summary = ran.summary

    # two processes in one gloo group, and the Trainer sharded the batches between them
    assert (summary["world_size"], summary["backend"]) == (WORLD, "gloo")
    assert summary["distributed_type"].endswith("MULTI_CPU")
    n_train = summary["examples"]["train"]["examples"]
    assert summary["train"]["epoch"] == pytest.approx(STEPS / math.ceil(n_train / (BATCH * WORLD)))
    assert summary["train"]["global_step"] == STEPS and summary["train"]["session_samples"] == STEPS * BATCH * WORLD

    # DDP kept the replicas identical; each rank said so once, and only rank 0 wrote
    assert [r["rank"] for r in summary["replicas"]] == [0, 1] and summary["replicas_in_sync"] is True
    assert len(re.findall(r"\[rank 0/2\] wrote .*launch_summary\.json", ran.log)) == 1
    assert "[rank 1/2] wrote" not in ran.log
    assert len(re.findall(r"\[rank [01]/2\] done: step 3", ran.log)) == 2

    # the artifacts: whole, once, no temp leftovers
    names = {p.name for p in out.iterdir()}
    assert {"adapter", f"checkpoint-{STEPS}", "launch_summary.json", "train_summary.json", "task.json"} <= names
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == [out / ".lock"]  # the run's lock file (released when the run ends), no temp files
    assert read_json(out / "run.json")["fingerprint"] == read_json(out / "task.json")["fingerprint"]
    rng_states = {p.name for p in (out / f"checkpoint-{STEPS}").glob("rng_state_*.pth")}
    assert rng_states == {"rng_state_0.pth", "rng_state_1.pth"}  # one per rank, each written by its own rank
    train_summary = read_json(out / "train_summary.json")
    assert {k: v for k, v in train_summary.items() if k != "log_history"} == summary["train"]
    assert read_json(out / "task.json")["task"] == "emotion"
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    final, checkpoint = _lora_tensors(adapter / "adapter_model.safetensors"), \
        _lora_tensors(out / f"checkpoint-{STEPS}" / "adapter_model.safetensors")
    assert final.keys() == checkpoint.keys() and all(torch.equal(final[k], checkpoint[k]) for k in final)

    # it loads with peft on the tiny model, has learnt (B left zero), and is what both replicas held
    cpu = LoadStrategy("full-precision", "cpu", torch.float32)
    base = load_model(str(tiny_model_dir), strategy=cpu)
    peft_model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    lora_b = [p for name, p in peft_model.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.detach().abs().sum()) > 0 for p in lora_b)
    assert weights_digest(peft_model) == summary["replicas"][0]["lora_sha256"]


def test_a_missing_data_file_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    assert launch.main(["--task", "emotion", "--data", str(missing), "--max-steps", "1", "--model", "smollm2",
                        "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "file not found" in err and "Traceback" not in err
