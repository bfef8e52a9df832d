"""Notebook environment: where we run (Kaggle, Colab, local), which device, which dtype, and where
artifacts go so that they survive a recycled hosted runtime."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root: utils/ lives in it
# Where a notebook opened alone (Colab "open from GitHub", Kaggle) fetches the project: the REPO_URL
# and REPO_REF parameters' defaults and the README's "Open in" links. A placeholder until it is published.
REPO_URL = "https://github.com/emocause/emocause"
REPO_REF = "main"
PERSIST_ENV = "EMOCAUSE_PERSIST_DIR"  # set by setup() from PERSIST_DIR, so subprocesses (launch) agree
INSTALL_ENV = "EMOCAUSE_INSTALL"  # "check": pip checks the requirements against what is installed, downloads nothing
COLAB_DRIVE = Path("/content/drive/MyDrive")  # Google Drive, once mounted: the only Colab folder a recycle keeps
KAGGLE_WORKING = Path("/kaggle/working")  # saved with a Kaggle notebook's output
# "ecf:Subtask_1_train.json" as a data path: an official file, downloaded once and checked ("module:function")
SCHEMES = {"ecf": "utils.ecf.data:official_file"}
_TORCH_LINE = re.compile(r"^\s*torch\s*(?:[<>=!~;\[@(]|$)", re.IGNORECASE)


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


def requirements_copy(requirements: Path, folder: Path) -> Path:
    """``requirements`` without its torch line, written into ``folder``: what pip gets on a hosted notebook,
    whose own CUDA build of torch must stay."""
    lines = requirements.read_text(encoding="utf-8").splitlines(keepends=True)
    copy = Path(folder) / requirements.name
    copy.write_text("".join(line for line in lines if not _TORCH_LINE.match(line)), encoding="utf-8")
    return copy


def pip_command(requirements: Path, check: bool = False) -> list[str]:
    """pip reads the file itself (comments, markers, options); ``check``: a dry run against the
    installed packages, with no index, so nothing is downloaded."""
    command = [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)]
    return command + ["--dry-run", "--no-index"] if check else command


def install_requirements(requirements: Path = ROOT / "requirements.txt", check: bool | None = None) -> None:
    """pip-install the requirements on a hosted notebook, leaving its own torch alone (quick when all are
    there); ``check`` (default: $EMOCAUSE_INSTALL=check) only verifies them offline."""
    check = os.environ.get(INSTALL_ENV) == "check" if check is None else check
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(pip_command(requirements_copy(requirements, Path(folder)), check))
    if done.returncode:
        raise RuntimeError(f"pip could not install {requirements} (its message is above); on Kaggle, turn "
                           "Internet on in the notebook's settings")


def persist_root(persist_dir: str = "", platform: str | None = None) -> Path | None:
    """Where artifacts survive a recycled runtime: ``persist_dir`` (PERSIST_DIR; relative to the repository),
    else $EMOCAUSE_PERSIST_DIR, else Drive on Colab when mounted or /kaggle/working on Kaggle; None elsewhere."""
    chosen = persist_dir or os.environ.get(PERSIST_ENV)
    if chosen:
        return resolve(chosen)
    platform = platform or detect_platform()
    if platform == "colab" and COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "emocause"
    if platform == "kaggle" and KAGGLE_WORKING.is_dir():
        return KAGGLE_WORKING / "emocause"
    return None


def artifact_root() -> Path:
    """The folder that relative artifact paths resolve under: the persistent one, else the repository."""
    return persist_root() or ROOT


def use_persist_dir(persist_dir: str = "", platform: str | None = None) -> Path | None:
    """Choose the persistent folder (``persist_root``), create it and record it in $EMOCAUSE_PERSIST_DIR for
    this process and the ones it starts (``utils.ecf.launch``); None where artifacts stay in the repository."""
    persist = persist_root(persist_dir, platform)
    if persist is not None:
        persist.mkdir(parents=True, exist_ok=True)
        os.environ[PERSIST_ENV] = str(persist)
    return persist


def setup(install: bool | None = None, quiet: bool = False, persist_dir: str = "") -> Environment:
    """Install requirements where hosted (or when asked), choose where artifacts persist (PERSIST_DIR),
    then report the environment."""
    platform = detect_platform()
    if install if install is not None else platform != "local":
        install_requirements()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Spinning OpenMP threads slow CPU training 15-30x on a shared 2-core machine; read at torch import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    persist = use_persist_dir(persist_dir, platform)
    env = detect()
    if not quiet:
        gpu = f"{env.gpu_name} x{env.gpu_count}, bf16={env.bf16}" if env.gpu_name else "no GPU"
        print(f"emocause on {env.platform}: {env.device} ({gpu}), python {sys.version.split()[0]}")
        if persist is not None:
            print(f"artifacts (results, checkpoints, experiment log, downloaded data) persist in {persist}")
        elif platform == "colab":
            print(f"artifacts live in {ROOT} and go with the runtime: mount Drive (from google.colab import "
                  "drive; drive.mount('/content/drive')) and rerun to keep them, or set PERSIST_DIR")
    return env


def resolve(path: str | os.PathLike) -> Path:
    """Resolve a notebook parameter path against the repository root, so cwd does not matter;
    "ecf:<name>" is an official ECF file (``SCHEMES``), fetched into the persistent data folder once."""
    scheme, _, name = str(path).partition(":")
    if name and scheme in SCHEMES:
        module, function = SCHEMES[scheme].split(":")
        return getattr(importlib.import_module(module), function)(name)
    path = Path(path).expanduser()
    return path if path.is_absolute() else ROOT / path


def resolve_artifact(path: str | os.PathLike, root: Path | None = None) -> Path:
    """An artifact path (TRAIN_DIR, TEST_DIR, CHECKPOINT_DIR, the experiment log, downloaded data): absolute
    as given, relative under ``root`` (default ``artifact_root()``: PERSIST_DIR's folder, else the repository)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or artifact_root()) / path


def hosted_links(notebook: str, repo_url: str = REPO_URL, ref: str = REPO_REF) -> dict[str, str]:
    """The README's "Open in Colab" and "Open in Kaggle" links of ``notebook`` (a name in notebooks/)."""
    owner_repo = repo_url.removeprefix("https://github.com/").removesuffix(".git").strip("/")
    raw = f"https://raw.githubusercontent.com/{owner_repo}/{ref}/notebooks/{notebook}"
    return {"colab": f"https://colab.research.google.com/github/{owner_repo}/blob/{ref}/notebooks/{notebook}",
            "kaggle": f"https://kaggle.com/kernels/welcome?src={raw}"}
