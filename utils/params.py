"""Notebook parameters: one frozen dataclass per notebook is their only source.

Each field holds a parameter's type, default and help text (``param(default, "help")``). Papermill
injects plain values, ``build``/``from_namespace`` validate them into the dataclass, ``CONFIGS``
names each notebook's dataclass, and the notebooks' ``parameters`` cells are generated from it:

    python -m utils.params --check    # exit 1 naming every parameter whose cell differs from its dataclass
    python -m utils.params --write    # rewrite the parameters cells that differ

A cell holds one line per field, ``NAME: type = default  # help``, in field order. The same two
commands write and check the environment cell that follows it (``utils.bootstrap``), identical in
every notebook.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib
import io
import json
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from utils import bootstrap, env
from utils.env import ROOT
from utils.io import write_text_atomic

T = TypeVar("T")

NOTEBOOK_DIR = ROOT / "notebooks"
ED_CONFIG = "utils.ed.config"  # the empathetic track's dataclasses (notebooks 07-09)
# notebook number -> "module:Class" of its parameters, imported when asked for (the configs import this module)
CONFIGS = {
    "01": "utils.ecf.eda:EdaConfig",
    "02": "utils.ecf.config:FinetuneConfig",
    "03": "utils.ecf.config:EmotionInferenceConfig",
    "04": "utils.ecf.config:CauseFinetuneConfig",
    "05": "utils.ecf.config:CauseInferenceConfig",
    "06": "utils.ecf.config:EvaluationConfig",
    "07": f"{ED_CONFIG}:EdEdaConfig",
    "08": f"{ED_CONFIG}:EdClassifyConfig",
    "09": f"{ED_CONFIG}:EdGenerateConfig",
    "10": "utils.tracking:LogConfig",
    "11": "utils.ecf.config:ConversationConfig",
}
CELL_TYPES = (str, int, float, bool)  # what a parameters cell declares (and papermill injects)
TRUE, FALSE = ("true", "yes", "y", "on", "1"), ("false", "no", "n", "off", "0")
NONE = ("", "none", "null", "~")
LIST_HINT = "python -m utils.run --list"
# a notebook's own globals (ROOT, ENV, REPORT, ...) are upper-case too: only a plain value under a name this close
# to a field is taken for a typo
TYPO_CUTOFF = 0.8


class ConfigError(ValueError):
    """A parameter with the wrong name, type or value."""


# ---------------------------------------------------------------- values -> dataclass

def param(default: Any, help: str = "") -> Any:
    """A notebook parameter: its default and its help text (what ``utils.run --list``, the notebooks'
    parameters cells and the command lines show), in one place."""
    kwargs: dict[str, Any] = {"default": default} if not isinstance(default, (list, dict, set)) else \
        {"default_factory": lambda: type(default)(default)}
    return dataclasses.field(**kwargs, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    """A field's help text ("" where it has none)."""
    return field.metadata.get("help", "")


def _options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``int | None`` -> (int, NoneType)), else the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def type_name(annotation: Any) -> str:
    """``float`` -> "float", ``int | None`` -> "int | None"."""
    return " | ".join("None" if o is type(None) else getattr(o, "__name__", str(o)) for o in _options(annotation))


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Accept ints for floats; otherwise the value must match the annotation's base types."""
    for option in _options(annotation):
        if option is type(None) and value is None:
            return value
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(base, type) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"parameter {name!r} must be {type_name(annotation)}, got {value!r} ({type(value).__name__})")


def nearest(name: str, known: Iterable[str], cutoff: float = 0.7) -> list[str]:
    """The declared names closest to ``name`` (case aside), best first: what a typo meant."""
    return difflib.get_close_matches(name.upper(), sorted(known), n=3, cutoff=cutoff)


def unknown_names(unknown: Iterable[str], known: Iterable[str], where: str, cutoff: float = 0.7) -> str:
    """One short line for parameter names nothing declares: each with its nearest declared names, and where
    every parameter is listed, instead of all of them."""
    known = sorted(known)
    said = [f"{name!r} (did you mean {' or '.join(close)}?)" if (close := nearest(name, known, cutoff)) else repr(name)
            for name in sorted(unknown)]
    return f"unknown parameter(s) {', '.join(said)}: {where}; {LIST_HINT} lists every notebook's parameters"


def build(cls: type[T], values: Mapping[str, Any], *, strict: bool = True) -> T:
    """Build dataclass ``cls`` from ``values``; with ``strict``, unknown keys raise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if strict and unknown:
        raise ConfigError(unknown_names(unknown, fields, f"{cls.__name__} declares no such parameter"))
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(k, v, hints[k]) for k, v in values.items() if k in fields}
    return cls(**kwargs)


def from_namespace(cls: type[T], namespace: Mapping[str, Any]) -> T:
    """Pick ``cls``'s fields out of a notebook's globals (the parameters cell's values); an upper-case global
    holding a plain value that is no field but nearly one (``MODLE = "x"``, typed in the cell or injected by
    papermill) raises, since it would otherwise be ignored and the run would use the default."""
    names = {f.name for f in dataclasses.fields(cls)}
    typos = [k for k, v in namespace.items() if k.isupper() and not k.startswith("_") and k not in names
             and isinstance(v, CELL_TYPES) and nearest(k, names, TYPO_CUTOFF)]
    if typos:
        raise ConfigError(unknown_names(typos, names, f"{cls.__name__} declares no such parameter, so the "
                                                      "notebook would ignore it", TYPO_CUTOFF))
    return build(cls, {k: v for k, v in namespace.items() if k in names})


def from_text(name: str, text: str, annotation: Any) -> Any:
    """A command-line or YAML string as the type of the field it sets: "1e-4" -> 0.0001 for a float,
    "010" stays "010" for a str, "yes" -> True for a bool only."""
    options = _options(annotation)
    if type(None) in options and text.strip().lower() in NONE:
        return None
    for option in options:
        if option is str:
            return text
        if option is bool:
            if text.strip().lower() in TRUE + FALSE:
                return text.strip().lower() in TRUE
            continue
        if option in (int, float):
            try:
                return option(text)
            except ValueError:
                continue
    raise ConfigError(f"parameter {name!r} must be {type_name(annotation)}, got {text!r}")


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class HostedConfig:
    """Parameters every notebook declares first: where a notebook opened alone fetches the project
    (its environment cell, ``utils.bootstrap``) and where its artifacts survive a recycled runtime."""

    REPO_URL: str = param(env.REPO_URL, "git URL (or path) the notebook fetches the project from when "
                                        "opened alone, e.g. on Colab or Kaggle")
    REPO_REF: str = param(env.REPO_REF, "branch, tag or commit fetched from REPO_URL")
    PERSIST_DIR: str = param("", 'folder for results, checkpoints, the experiment log and downloaded data; '
                                 '"": Drive (/content/drive/MyDrive/emocause) on Colab when mounted, '
                                 "/kaggle/working/emocause on Kaggle, else the repository")

    @classmethod
    def smoke_corpus(cls) -> tuple[str, list[str], tuple[str, ...]] | None:
        """(name, texts, label words) the tiny random model of ``utils.run --smoke`` is built from for this
        notebook's track (its tokenizer is trained on the texts, each label word one token); None: no model."""
        return None

    def check_series(self, configs: list) -> None:
        """Refuse settings of the notebooks run together (``configs``, this one among them) that would fail
        only later in the run; the tracks' configs say what they need of the notebooks before them."""


# ---------------------------------------------------------------- notebook -> dataclass

def notebook_number(notebook: str | Path) -> str:
    """"02", "02_emotion_finetuning" or a path to it -> "02"."""
    return Path(notebook).name[:2]


def config_class(notebook: str | Path) -> type:
    """The dataclass of a notebook's parameters (``CONFIGS``)."""
    number = notebook_number(notebook)
    if number not in CONFIGS:
        raise ConfigError(f"notebook {Path(notebook).name}: no parameters dataclass in utils.params.CONFIGS")
    module, name = CONFIGS[number].split(":")
    return getattr(importlib.import_module(module), name)


def notebooks(directory: Path | None = None) -> list[Path]:
    """The numbered notebooks (of ``NOTEBOOK_DIR`` by default), in order."""
    return sorted((directory or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


# ---------------------------------------------------------------- dataclass <-> parameters cell

@dataclasses.dataclass(frozen=True)
class Declared:
    """One line of a parameters cell."""

    name: str
    annotation: str  # as written; "" without one
    default: Any
    help: str
    line: int


def literal(default: Any) -> str:
    """Python source of a default; strings in double quotes where they hold none, as the cells had."""
    text = repr(default)
    if isinstance(default, str) and text.startswith("'") and '"' not in default:
        text = '"' + text[1:-1] + '"'
    return text


def cell_line(field: dataclasses.Field, annotation: Any) -> str:
    """``NAME: type = default  # help``; ConfigError where papermill would misread or drop the line."""
    name, help, default = field.name, help_of(field), field.default
    if default is dataclasses.MISSING:
        raise ConfigError(f"{name}: a parameter needs a default")
    if annotation not in CELL_TYPES or type(default) is not annotation:
        raise ConfigError(f"{name}: a parameters cell holds str, int, float or bool defaults; "
                          f"got {type_name(annotation)} = {default!r}")
    value = literal(default)
    if not help.strip():
        raise ConfigError(f"{name}: no help text: declare it as param(default, \"help\")")
    # papermill skips a line with a second '=' and cuts the value at the first '#'
    for what, text, bad in (("help", help, "=\n\r"), ("default", value, "=#\n\r")):
        found = sorted({c for c in text if c in bad})
        if found:
            raise ConfigError(f"{name}: its {what} {text!r} holds {found}, which papermill misreads "
                              f"(it drops lines with a second '=' and cuts values at '#'): rephrase it")
    if help.strip().startswith("type:") or help != help.strip():
        raise ConfigError(f"{name}: help {help!r} must not start with 'type:' or with/by blanks")
    return f"{name}: {annotation.__name__} = {value}  # {help}"


def field_problems(cls: type) -> list[str]:
    """"Class.NAME: what" for every field a parameters cell cannot hold as it is."""
    hints, problems = typing.get_type_hints(cls), []
    for field in dataclasses.fields(cls):
        try:
            cell_line(field, hints[field.name])
        except ConfigError as e:
            problems.append(f"{cls.__name__}.{e}")
    return problems


def cell_source(cls: type) -> str:
    """The parameters cell of ``cls``; ConfigError naming every field it cannot hold."""
    problems = field_problems(cls)
    if problems:
        raise ConfigError("; ".join(problems))
    hints = typing.get_type_hints(cls)
    return "\n".join(cell_line(f, hints[f.name]) for f in dataclasses.fields(cls))


def read_cell(source: str) -> tuple[list[Declared], list[str]]:
    """(the parameters a cell declares, problems with lines that are not ``NAME: type = literal  # help``)."""
    try:
        tree = ast.parse(source)
        comments = {t.start[0]: t.string[1:].strip()
                    for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    except (SyntaxError, tokenize.TokenError) as e:
        return [], [f"the cell is not valid Python: {e}"]
    lines, declared, problems = source.splitlines(), [], []
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else \
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if not isinstance(target, ast.Name) or node.value is None:
            problems.append(f"line {node.lineno}: not a NAME: type = value assignment")
            continue
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            problems.append(f"{target.id}: line {node.lineno}: the default is not a literal")
            continue
        if node.end_lineno != node.lineno or lines[node.lineno - 1].count("=") != 1:
            problems.append(f"{target.id}: line {node.lineno}: papermill reads one '=' on one line per parameter")
        annotation = ast.unparse(node.annotation) if isinstance(node, ast.AnnAssign) else ""
        declared.append(Declared(target.id, annotation, default, comments.get(node.lineno, ""), node.lineno))
    return declared, problems


def compare(cls: type, source: str) -> list[str]:
    """What differs between ``cls`` and a parameters cell: "NAME: what", one per difference."""
    fields, hints = dataclasses.fields(cls), typing.get_type_hints(cls)
    declared, problems = read_cell(source)
    cell = {d.name: d for d in declared}
    names = [f.name for f in fields]
    problems += [f"{d.name}: in the cell, not a field of {cls.__name__}" for d in declared if d.name not in names]
    problems += [f"{n}: a field of {cls.__name__}, not in the cell" for n in names if n not in cell]
    common = [n for n in names if n in cell]
    in_cell = [d.name for d in declared if d.name in common]
    problems += [f"{n}: at position {in_cell.index(n) + 1} of the cell, {i + 1} in {cls.__name__}"
                 for i, n in enumerate(common) if in_cell[i] != n]
    for field in fields:
        if field.name not in cell:
            continue
        d, annotation, default, help = cell[field.name], hints[field.name], field.default, help_of(field)
        if d.annotation != type_name(annotation):
            problems.append(f"{d.name}: annotated {d.annotation or 'nothing'} in the cell, "
                            f"{type_name(annotation)} in {cls.__name__}")
        if type(d.default) is not type(default) or d.default != default:
            problems.append(f"{d.name}: default {d.default!r} in the cell, {default!r} in {cls.__name__}")
        if d.help != help:
            problems.append(f"{d.name}: help {d.help!r} in the cell, {help!r} in {cls.__name__}")
    return problems + field_problems(cls)


def parameters_cell(nb: dict, path: Path) -> dict:
    """The one cell tagged ``parameters``."""
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ConfigError(f"{path.name}: {len(tagged)} cells tagged 'parameters'; a notebook needs one")
    return tagged[0]


def environment_cell(nb: dict, path: Path) -> dict:
    """The code cell right after the parameters cell: ``utils.bootstrap``'s environment cell."""
    cells = nb["cells"]
    index = cells.index(parameters_cell(nb, path)) + 1
    if index == len(cells) or cells[index]["cell_type"] != "code":
        raise ConfigError("no code cell after the parameters cell for the environment cell")
    return cells[index]


def check(books: list[Path] | None = None) -> list[str]:
    """Every difference between the notebooks' parameters cells and their dataclasses, "notebook: NAME: what",
    and every environment cell that is not ``utils.bootstrap``'s."""
    problems = []
    for path in notebooks() if books is None else books:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
            cell = parameters_cell(nb, path)
            problems += [f"{path.name}: {p}" for p in compare(config_class(path), "".join(cell["source"]))]
            if "".join(environment_cell(nb, path)["source"]) != bootstrap.cell_source():
                problems.append(f"{path.name}: the environment cell differs from utils.bootstrap.cell_source()")
        except ConfigError as e:
            problems.append(f"{path.name}: {e}")
    return problems


def write(books: list[Path] | None = None) -> tuple[list[Path], list[str]]:
    """Rewrite the parameters cells that differ from their dataclasses and the environment cells that differ
    from ``utils.bootstrap`` (id, metadata and tags kept, outputs empty); (notebooks rewritten, problems that
    left a notebook unwritten)."""
    written, problems = [], []
    for path in notebooks() if books is None else books:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
            cell, cls, setup = parameters_cell(nb, path), config_class(path), environment_cell(nb, path)
            wanted = [(setup, bootstrap.cell_source())]
            if compare(cls, "".join(cell["source"])):  # equal values in another spelling stay as written
                wanted.append((cell, cell_source(cls)))
        except ConfigError as e:
            problems.append(f"{path.name}: {e}")
            continue
        changed = [(c, source) for c, source in wanted if "".join(c["source"]) != source]
        for c, source in changed:
            c.update(source=source.splitlines(keepends=True), outputs=[], execution_count=None)
        if changed:
            write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            written.append(path)
    return written, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.params", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 naming every cell that differs")
    action.add_argument("--write", action="store_true", help="rewrite the cells that differ")
    parser.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,02")
    args = parser.parse_args(argv)
    books = notebooks()
    if args.only:
        books = [p for p in books if notebook_number(p) in args.only.split(",")]
    if args.write:
        written, problems = write(books)
        for path in written:
            print(f"rewrote the parameters or environment cell of {path}")
    else:
        problems = check(books)
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.check and not problems:
        print(f"{len(books)} parameters cells match their dataclasses and their environment cells utils.bootstrap")
    return 1 if problems else 0


if __name__ == "__main__":
    from utils.params import main as _main  # the module the configs import, not this __main__ copy

    sys.exit(_main())
