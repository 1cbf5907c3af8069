"""The import graph of ``src/weakseg`` follows the layers of docs/architecture.md: each package
imports only the layers below it (or its own modules), and no module imports another package's
private (``_name``) module or name. Parsed from the source, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "weakseg"

# Lower numbers are lower layers; a unit may import units of a strictly lower layer. The root
# (``weakseg/__init__``: the version, the lazy ``segment_image``) and ``__main__`` sit on top;
# ``weakseg.__version__`` may be read from anywhere.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_validation": 0,
    "filtering": 1,
    "crf": 2,
    "losses": 3,
    "data": 4,
    "models": 5,
    "interactive": 6,
    "proposals": 6,
    "engine": 7,
    "viz": 8,
    "recipes": 9,
    "cli": 10,
    "segment": 10,  # the old module name, a re-export of weakseg.interactive
    "__main__": 11,
    "__init__": 11,
}


def _unit(path: Path) -> str:
    """The layer unit of a source file: its package, or the top-level module's name."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every ``weakseg`` import in ``path``, nested ones included;
    ``from a import b`` gives ``a.b``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "weakseg"]


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    units = {_unit(path) for path in SOURCES}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def _problems(path: Path, unit: str) -> list[str]:
    """What is wrong with the imports of ``path``, a module of ``unit``."""
    problems = []
    for line, name in _imports(path):
        parts = name.split(".")
        if len(parts) < 2 or parts[1] == "__version__":
            continue
        target = parts[1]
        if target == unit:
            continue
        if target not in LAYERS:
            problems.append(f"line {line}: {name}: weakseg.{target} has no layer")
        elif LAYERS[target] >= LAYERS[unit]:
            problems.append(
                f"line {line}: {name}: {unit} (layer {LAYERS[unit]}) imports {target} "
                f"(layer {LAYERS[target]})"
            )
        private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
        if private:
            problems.append(f"line {line}: {name}: private {private[0]} of weakseg.{target}")
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_and_not_into_private_modules(path: Path) -> None:
    problems = _problems(path, _unit(path))
    assert not problems, "\n".join(problems)


def test_the_checker_sees_upward_and_private_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from weakseg.filtering import PermutohedralLattice\n"
        "from weakseg._validation import check_tensor\n"
        "def f():\n"
        "    from weakseg.engine import train\n"
        "    import weakseg.crf._kernels\n"
    )
    assert _problems(bad, "losses") == [
        "line 4: weakseg.engine.train: losses (layer 3) imports engine (layer 7)",
        "line 5: weakseg.crf._kernels: private _kernels of weakseg.crf",
    ]
