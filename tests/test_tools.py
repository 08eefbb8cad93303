"""tools/check_function_length.py: what counts as a function's length, and the `# long:` escape."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_function_length.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_function_length", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _function(name: str, n_code: int, n_doc: int = 0, reason: str = "") -> str:
    doc = ['    """Doc.', *["    more" for _ in range(max(n_doc - 2, 0))], '    """'] if n_doc else []
    return "\n".join([f"def {name}():{reason}", *doc, *["    x = 1" for _ in range(n_code)]]) + "\n"


def test_length_counts_code_not_docstring(tmp_path):
    tool = _tool()
    path = tmp_path / "m.py"
    path.write_text(_function("documented", 50, n_doc=40) + _function("long", 61)
                    + _function("excused", 80, reason="  # long: one table of cases"))
    found = tool.long_functions(path, max_lines=60)
    assert [(f.name, f.n_lines) for f in found] == [("long", 62)]
    assert tool.main([str(path)]) == 1
    path.write_text(_function("documented", 50, n_doc=40))
    assert tool.main([str(path)]) == 0
