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
    ("Tesla T4, 7.5\nTesla T4, 7.5\n", False, 2),  # Kaggle 2xT4: fp16 only
    ("NVIDIA A100-SXM4-40GB, 8.0\n", True, 1),
])
def test_gpu_capabilities_decide_bf16(monkeypatch, smi, bf16, count):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=smi))
    detected = env.detect()
    assert (detected.device, detected.bf16, detected.gpu_count) == ("cuda", bf16, count)


def test_cpu_machine(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    detected = env.detect()
    assert detected.device == "cpu" and not detected.bf16 and detected.gpu_name is None
