"""Notebook environment: where we run (Kaggle, Colab, local), which device, which dtype."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root: utils/ lives in it


@dataclass(frozen=True)
class Environment:
    """What the notebook is running on."""

    platform: str  # "kaggle", "colab" or "local"
    device: str  # "cuda" or "cpu"
    gpu_name: str | None
    gpu_count: int
    bf16: bool  # Ampere and newer; a T4 has fp16 only

    def as_dict(self) -> dict:
        return asdict(self)


def detect_platform() -> str:
    """Kaggle and Colab each set an environment variable of their own."""
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "KAGGLE_URL_BASE" in os.environ:
        return "kaggle"
    if "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules:
        return "colab"
    return "local"


def _gpus() -> list[tuple[str, float]]:
    """(name, compute capability) per GPU from nvidia-smi, which leaves CUDA uninitialised.

    A kernel that has initialised CUDA cannot fork workers (accelerate's notebook_launcher on
    Kaggle's 2xT4), so the environment cell must not touch it.
    """
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return [(name.strip(), float(cap)) for name, cap in (line.rsplit(",", 1) for line in out.strip().splitlines())]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def detect() -> Environment:
    """Read the platform and the accelerator without initialising CUDA where avoidable."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # is_available() without a CUDA context
    import torch

    cuda = torch.cuda.is_available()
    gpus = _gpus() if cuda else []
    if cuda and not gpus:  # no nvidia-smi: ask torch, which initialises CUDA
        gpus = [(torch.cuda.get_device_name(i), float("%d.%d" % torch.cuda.get_device_capability(i)))
                for i in range(torch.cuda.device_count())]
    return Environment(
        platform=detect_platform(),
        device="cuda" if cuda else "cpu",
        gpu_name=gpus[0][0] if gpus else None,
        gpu_count=len(gpus),
        # native bf16 needs Ampere (8.0)+; torch.cuda.is_bf16_supported() also counts a T4's emulation
        bf16=bool(gpus) and all(cap >= 8.0 for _, cap in gpus),
    )


def install_requirements(requirements: Path = ROOT / "requirements.txt") -> None:
    """pip-install the requirements on a hosted notebook, leaving its own torch alone."""
    lines = [
        line.strip()
        for line in requirements.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and not line.lower().startswith("torch")
    ]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *lines], check=True)


def setup(install: bool | None = None, quiet: bool = False) -> Environment:
    """Install requirements where hosted (or when asked), then report the environment."""
    platform = detect_platform()
    if install if install is not None else platform != "local":
        install_requirements()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Spinning OpenMP threads slow CPU training 15-30x on a shared 2-core machine; read at torch import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env = detect()
    if not quiet:
        gpu = f"{env.gpu_name} x{env.gpu_count}, bf16={env.bf16}" if env.gpu_name else "no GPU"
        print(f"emocause on {env.platform}: {env.device} ({gpu}), python {sys.version.split()[0]}")
    return env


def resolve(path: str | os.PathLike) -> Path:
    """Resolve a notebook parameter path against the repository root, so cwd does not matter."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else ROOT / path
