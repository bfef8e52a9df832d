"""Every notebook's environment cell: find the project, or fetch it where the notebook was opened alone.

It runs before ``utils`` can be imported (Colab's "open from GitHub" or a Kaggle import bring the
notebook file and nothing else), so ``find_project`` is plain standard-library Python that the cell
carries itself. ``python -m utils.params --write`` copies this module's ``cell_source()`` into the
cell after each notebook's parameters cell, and ``--check`` fails where a notebook's copy differs.
"""

from __future__ import annotations

import inspect

CELL_CALLS = '''
ROOT = find_project(REPO_URL, REPO_REF)  # this checkout, or the project fetched at REPO_REF
from utils import env, params
ENV = env.setup(persist_dir=PERSIST_DIR)  # installs the requirements where hosted; artifacts under PERSIST_DIR'''


def find_project(repo_url: str, repo_ref: str, folder: str = "emocause-src") -> str:
    """The project root, put on sys.path: an importable utils, the checkout around the working directory,
    or ./<folder>, which is fetched from repo_url at repo_ref (branch, tag or commit) when missing, and
    fetched again when an earlier run fetched it from another REPO_URL or REPO_REF."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    here, spec = Path.cwd(), importlib.util.find_spec("utils")
    places = [Path(spec.origin).parents[1]] if spec and spec.origin else []
    root = next((p for p in (*places, here, *here.parents, here / folder) if (p / "utils" / "env.py").is_file()), None)
    fetched, wanted = here / folder, f"{repo_url} {repo_ref}"
    marker = fetched / ".git" / "emocause-source"  # what the copy in ./<folder> was fetched from
    had = marker.read_text(encoding="utf-8").strip() if marker.is_file() else "an unrecorded source"
    if root is None or (root == fetched and had != wanted):
        print(f"fetching the project from {repo_url} at {repo_ref} into {fetched}"
              + (f" (it held {had})" if root else ""))
        for args in (["init", "-q", str(fetched)], ["-C", str(fetched), "fetch", "-q", "--depth", "1", repo_url, repo_ref],
                     ["-C", str(fetched), "checkout", "-q", "FETCH_HEAD"]):
            done = subprocess.run(["git", *args], capture_output=True, text=True)
            if done.returncode and root is None:
                raise RuntimeError(f"could not fetch {repo_url} at {repo_ref!r}: {done.stderr.strip()}\n"
                                   "Offline (Kaggle: Settings > Internet on), or a wrong REPO_URL or REPO_REF?")
            if done.returncode:  # keep the copy that works; say so
                print(f"could not fetch it ({done.stderr.strip()}); keeping the copy in {fetched} ({had})")
                break
        else:
            marker.write_text(wanted + "\n", encoding="utf-8")
            if root is not None and "utils" in sys.modules:
                print("restart the runtime: this session already imported the previous copy's modules")
        root = fetched
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return str(root)


def cell_source() -> str:
    """The environment cell: ``find_project``'s source, then the lines that call it and ``env.setup``."""
    return inspect.getsource(find_project) + CELL_CALLS
