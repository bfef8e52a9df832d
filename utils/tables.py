"""What a notebook shows of a record (a config, a task record, run statistics): a two-column table a reader
can scan, with counts as integers and shares as percentages, instead of a raw dataclass or dict dump."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

SHARE_WORDS = ("share", "accuracy", "ratio_valid")  # values in [0, 1] shown as percentages


def _is_share(key: str) -> bool:
    return any(word in key for word in SHARE_WORDS)


def shown(key: str, value: Any) -> str:
    """One value as the table shows it."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if _is_share(key) and 0.0 <= value <= 1.0:
            return f"{value:.1%}"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {shown(str(k), v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(shown(key, v) for v in value) if len(value) <= 8 else f"{len(value)} items"
    return str(value)


def facts(record: Any, keys: Iterable[str] | None = None, skip: Iterable[str] = ()):
    """A one-column DataFrame (``value``) of ``record``'s fields (a dataclass or a mapping), ``keys`` in order
    (default: all but ``skip``)."""
    import pandas as pd

    items = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)
    chosen = [k for k in (keys or items) if k in items and k not in set(skip)]
    return pd.DataFrame({"value": [shown(k, items[k]) for k in chosen]}, index=pd.Index(chosen, name=None))


def changed_parameters(cfg: Any):
    """The parameters of ``cfg`` (a notebook config) that differ from their defaults, with the default beside
    each; a notebook run with every default shows one row saying so."""
    import pandas as pd

    rows = {}
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(cfg, f.name)
        if value != default:
            rows[f.name] = {"value": shown(f.name, value), "default": shown(f.name, default)}
    if not rows:
        return pd.DataFrame({"value": ["every parameter at its default"]}, index=["parameters"])
    return pd.DataFrame(rows).T


def percent(shares: Mapping[Any, float]) -> dict[Any, str]:
    """Shares in [0, 1] as percentages with one decimal, for a table column."""
    return {k: f"{float(v):.1%}" for k, v in shares.items()}


def readable(frame):
    """``frame`` with every cell shown as ``facts`` shows a value (counts as integers, shares as percentages by
    their row or column name), for the summary tables whose columns mix counts and means."""
    return frame.apply(lambda column: [shown(f"{column.name} {row}", v) for row, v in column.items()])
