"""``ED_DATA_PATH="ed:release"``: the EmpatheticDialogues release archive, downloaded once into the (persistent) data
folder and checked before it is used.

The release publishes no checksum, so what is checked is what it must hold: train, valid and test csv files with
the release's columns and its conversation counts (19,533 / 2,770 / 2,547, 24,850 in all). The archive's sha256 is
printed and recorded beside the files (``release.json``), so a later change of the archive shows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from utils.ed.data import ORIGINAL_COLUMNS, EmpatheticDataError
from utils.env import resolve_artifact
from utils.io import read_json, write_json_atomic

RELEASE_URL = "https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/empatheticdialogues.tar.gz"
URL_ENV = "EMOCAUSE_ED_URL"  # another address of the archive (a mirror; the tests' local server)
DATA_FOLDER = "data/ed"  # under the persistent folder on a hosted runtime, like the ECF downloads
RELEASE_CONVERSATIONS = {"train": 19533, "valid": 2770, "test": 2547}
RECORD = "release.json"


def _conversations(path: Path) -> int:
    """Distinct conv_ids of a release csv whose header starts with the release's columns."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(",")
        if header[: len(ORIGINAL_COLUMNS)] != list(ORIGINAL_COLUMNS):
            raise EmpatheticDataError(path, f"header {header} does not start with {list(ORIGINAL_COLUMNS)}", row=0)
        return len({line.split(",", 1)[0] for line in f if line.strip()})


def check_release(folder: Path, expected: dict[str, int] | None = None) -> dict[str, int]:
    """The conversations per split of a release folder; an error naming the file when a file is missing, its
    header is not the release's or its count is not the release's (``expected``, default RELEASE_CONVERSATIONS)."""
    counts = {}
    for split, n in (expected or RELEASE_CONVERSATIONS).items():
        path = folder / f"{split}.csv"
        if not path.is_file():
            raise EmpatheticDataError(path, "missing from the archive: the release has train.csv, valid.csv and "
                                            "test.csv in a folder 'empatheticdialogues'")
        counts[split] = _conversations(path)
        if counts[split] != n:
            raise EmpatheticDataError(path, f"{counts[split]:,} conversations where the release has {n:,}: not the "
                                            f"EmpatheticDialogues release (or a changed one)")
    return counts


def _extract(archive: Path, into: Path) -> Path:
    """Unpack the archive's regular files (no links, nothing outside ``into``); the folder holding train.csv."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    found = sorted(into.rglob("train.csv"))
    if not found:
        raise EmpatheticDataError(archive, "the archive holds no train.csv")
    return found[0].parent


def release_folder(name: str = "release", url: str | None = None, timeout: float = 120,
                   expected: dict[str, int] | None = None) -> Path:
    """"ed:release": the release folder (train/valid/test.csv), downloaded, checked and recorded the first time."""
    if name != "release":
        raise EmpatheticDataError(f"ed:{name}", "unknown; the one name is ed:release (the whole release)")
    dest = resolve_artifact(DATA_FOLDER) / "empatheticdialogues"
    if (dest / RECORD).is_file():
        return dest
    url = url or os.environ.get(URL_ENV, RELEASE_URL)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".ed-download-") as tmp:
        archive = Path(tmp) / "release.tar.gz"
        print(f"downloading the EmpatheticDialogues release from {url} (about 28 MB, once)")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as e:
            raise EmpatheticDataError(f"ed:{name}", f"could not download {url} ({e}); offline? Download the archive "
                                      "by hand, unpack it and pass its folder as ED_DATA_PATH") from None
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        try:
            folder = _extract(archive, Path(tmp) / "unpacked")
        except (tarfile.TarError, EOFError) as e:
            raise EmpatheticDataError(url, f"not a readable .tar.gz ({e})") from None
        counts = check_release(folder, expected)
        write_json_atomic(folder / RECORD, {"url": url, "sha256": digest, "conversations": counts})
        if dest.exists():
            shutil.rmtree(dest)  # a folder without its record is an unfinished earlier download
        folder.rename(dest)
    print(f"EmpatheticDialogues release in {dest}: {counts} conversations; archive sha256 {digest}")
    return dest


def recorded(folder: str | os.PathLike) -> dict | None:
    """What the download recorded (url, sha256, conversation counts), or None for a folder it did not make."""
    path = Path(folder) / RECORD
    return read_json(path) if path.is_file() else None
