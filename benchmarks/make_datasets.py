"""The data of the benchmark tables that are not the demo corpus, made from what every
Python ships, so that a table can be rebuilt offline:

    python benchmarks/make_datasets.py     # writes benchmarks/data/*.jsonl

- stdlib_docstrings_chat.jsonl: chat layout (`messages`): the user asks what a standard
  library function does, given its signature; the assistant answers with the first
  paragraph of its docstring.
- stdlib_code.jsonl: text layout: Python source of standard library modules, cut into
  chunks of about 400 characters at line ends.

The files are committed: another Python's standard library gives other examples."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

DOC_MODULES = [
    "json",
    "os.path",
    "shutil",
    "textwrap",
    "string",
    "re",
    "itertools",
    "functools",
    "math",
    "statistics",
    "random",
    "datetime",
    "pathlib",
    "collections",
    "heapq",
    "bisect",
    "base64",
    "hashlib",
    "csv",
    "difflib",
    "fnmatch",
    "glob",
    "tempfile",
    "zlib",
    "calendar",
    "operator",
    "urllib.parse",
    "html",
    "copy",
    "pprint",
    "struct",
    "secrets",
    "uuid",
    "ipaddress",
    "fractions",
]
CODE_MODULES = ["textwrap", "shlex", "colorsys", "fnmatch", "glob", "bisect", "heapq", "graphlib", "fractions"]
OUT = Path(__file__).parent / "data"


def _docstring_chats() -> list[dict]:
    records = []
    for module_name in DOC_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            answer = doc.split("\n\n")[0].replace("\n", " ").strip()
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                signature = "(...)"
            if len(signature) > 40:
                signature = "(...)"
            if not 20 <= len(answer) <= 300 or answer.startswith(name + "("):
                continue
            question = f"What does `{module_name}.{name}{signature}` do?"
            records.append(
                {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            )
    return records


def _code_chunks(chunk_chars: int = 400) -> list[dict]:
    records = []
    for module_name in CODE_MODULES:
        lines = inspect.getsource(importlib.import_module(module_name)).splitlines(keepends=True)
        chunk = ""
        for line in lines:
            if len(chunk) + len(line) > chunk_chars and chunk.strip():
                records.append({"text": chunk})
                chunk = ""
            chunk += line
    return records


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, records in (("stdlib_docstrings_chat", _docstring_chats()), ("stdlib_code", _code_chunks())):
        path = OUT / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"{path}: {len(records)} examples")


if __name__ == "__main__":
    main()
