"""Fail on functions longer than a limit, unless their signature says why they are long.

A function's length is counted from its ``def`` line to its last line, without its docstring
(numpydoc docstrings of stage functions run to 40 lines; documenting a function must never be a
reason to split it).
A function over the limit passes when a comment ``# long: <why>`` (a non-empty reason) stands
on its ``def`` line or on another line of its signature.

Usage::

    python tools/check_function_length.py [--max-lines 60] PATH [PATH ...]

PATH is a ``.py`` file or a folder searched for ``.py`` files. Prints one line per offending
function (``path:line: ...``) and exits 1 when there is any, 0 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LongFunction", "long_functions", "main"]

#: The default limit, in lines.
MAX_LINES = 60
_REASON = re.compile(r"#\s*long:\s*\S")


@dataclass(frozen=True)
class LongFunction:
    """A function over the limit without a ``# long:`` reason."""

    path: Path
    line: int
    name: str
    n_lines: int

    def message(self, max_lines: int) -> str:
        """One line for the report."""
        return (f"{self.path}:{self.line}: function {self.name!r} is {self.n_lines} lines (max {max_lines}): "
                f"split it, or give the reason on its def line as '# long: <why>'")


def _signature_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: Sequence[str]) -> list[str]:
    """Source lines from ``def`` to the line before the body (the whole signature)."""
    last = max(node.lineno, node.body[0].lineno - 1)
    return list(lines[node.lineno - 1:last])


def long_functions(path: Path, max_lines: int = MAX_LINES) -> list[LongFunction]:
    """Functions (and methods, nested ones too) of one file over ``max_lines`` without a reason.

    Raises
    ------
    SyntaxError
        When the file does not parse.
    """
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        n_lines = (node.end_lineno or node.lineno) - node.lineno + 1 - _docstring_lines(node)
        if n_lines > max_lines and not any(_REASON.search(line) for line in _signature_lines(node, lines)):
            found.append(LongFunction(path, node.lineno, node.name, n_lines))
    return sorted(found, key=lambda f: f.line)


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines taken by the function's docstring (0 when it has none)."""
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return (first.end_lineno or first.lineno) - first.lineno + 1
    return 0


def _python_files(paths: Sequence[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)
        elif path.suffix == ".py" and path.is_file():
            yield path
        else:
            raise SystemExit(f"check_function_length: {path} is neither a .py file nor a folder")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help=".py files or folders")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES, help="longest allowed function (lines)")
    args = parser.parse_args(argv)
    found, unparsed = [], 0
    for path in _python_files(args.paths):
        try:
            found += long_functions(path, args.max_lines)
        except SyntaxError as error:
            print(f"{path}:{error.lineno}: does not parse ({error.msg})")
            unparsed += 1
    for function in found:
        print(function.message(args.max_lines))
    if found:
        print(f"check_function_length: {len(found)} function(s) over {args.max_lines} lines", file=sys.stderr)
    return 1 if found or unparsed else 0


if __name__ == "__main__":
    sys.exit(main())
