"""Environment detection: platform, and bf16 only on GPUs that have it natively."""

from __future__ import annotations

import subprocess

import pytest

from utils import env


@pytest.mark.parametrize("variables, expected", [
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "kaggle"),
    ({"COLAB_RELEASE_TAG": "release-colab"}, "colab"),
    ({}, "local"),
])
def test_platform(monkeypatch, variables, expected):
    for name in ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert env.detect_platform() == expected


@pytest.mark.parametrize("smi, bf16, count", [
    ("Tesla T4, 7.5, 15360\nTesla T4, 7.5, 15360\n", False, 2),  # Kaggle 2xT4: fp16 only
    ("NVIDIA A100-SXM4-40GB, 8.0, 40960\n", True, 1),
])
def test_gpu_capabilities_decide_bf16(monkeypatch, smi, bf16, count):
    monkeypatch.delenv(env.SIMULATE_GPU_ENV, raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=smi))
    detected = env.detect()
    assert (detected.device, detected.bf16, detected.gpu_count) == ("cuda", bf16, count)
    assert env.gpus()[0].memory_gib == float(smi.splitlines()[0].split(",")[2]) / 1024


def test_cpu_machine(monkeypatch):
    monkeypatch.delenv(env.SIMULATE_GPU_ENV, raising=False)
    monkeypatch.setattr(env, "_nvidia_smi", lambda: [])  # the same answer on a GPU machine
    monkeypatch.setattr(env.Path, "exists", lambda self: False)  # no NVIDIA device nodes
    detected = env.detect()
    assert detected.device == "cpu" and not detected.bf16 and detected.gpu_name is None
    assert env.torch_device() == "cpu"


def test_a_simulated_gpu_is_what_the_device_query_reports(monkeypatch):
    monkeypatch.setenv(env.SIMULATE_GPU_ENV, "Tesla T4,7.5,15.0")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nvidia-smi asked"))
    detected = env.detect()
    assert (detected.device, detected.gpu_name, detected.bf16) == ("cuda", "Tesla T4", False)
    assert env.gpus() == [env.Gpu("Tesla T4", 7.5, 15.0)]
    assert env.torch_device() == "cpu"  # the tensors stay where torch can put them
    monkeypatch.setenv(env.SIMULATE_GPU_ENV, "T4")
    with pytest.raises(ValueError, match="EMOCAUSE_SIMULATE_GPU='T4': give name,capability,memory_gib"):
        env.gpus()
