"""The package's layout as the README's module map states it: every import points up the map, every
module is on it, and the checkpoint schema builds no model."""
import ast
import re

from helpers import ROOT

PACKAGE = ROOT / "cyclelib"
# The entry points of the package, not modules of the map: the public API and `python -m cyclelib`.
ENTRY_POINTS = {"__init__", "__main__"}


def module_map() -> list[str]:
    """The modules of the README's map, in its order (row by row, left to right in a row)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    intro = next(i for i, line in enumerate(lines) if "no module imports one below it" in line)
    table = []
    for line in lines[intro + 1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    modules = [name for row in table[2:] for name in re.findall(r"`(\w+)\.py`", row.split("|")[1])]
    assert modules, "README.md: no module table after 'no module imports one below it'"
    return modules


def package_imports(name: str) -> set[str]:
    """The modules of cyclelib that ``cyclelib/<name>.py`` imports, at its top or inside functions."""
    modules = {path.stem for path in PACKAGE.glob("*.py")} - ENTRY_POINTS
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and not (node.module or "").startswith("cyclelib"):
                continue
            base = (node.module or "").removeprefix("cyclelib").lstrip(".").split(".")[0]
            # `from . import files` names modules; `from . import __version__` a name of the package
            found |= {base} if base else {alias.name for alias in node.names} & modules
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("cyclelib.")}
    return found - ENTRY_POINTS


def test_the_readme_maps_every_module_of_the_package_once():
    listed = module_map()
    modules = {path.stem for path in PACKAGE.glob("*.py")} - ENTRY_POINTS
    twice = sorted(m for m in set(listed) if listed.count(m) > 1)
    assert not twice, f"listed twice in the README's module map: {twice}"
    assert not modules - set(listed), f"missing from the README's module map: {sorted(modules - set(listed))}"
    assert not set(listed) - modules, f"on the README's module map, not in cyclelib/: {sorted(set(listed) - modules)}"


def test_every_import_points_up_the_readme_module_map():
    listed = module_map()
    place = {name: i for i, name in enumerate(listed)}
    wrong = [f"{name}.py imports {used}.py, listed below it" for name in listed if (PACKAGE / f"{name}.py").is_file()
             for used in sorted(package_imports(name)) if used in place and place[used] >= place[name]]
    assert not wrong, "; ".join(wrong)


def test_the_checkpoint_schema_builds_no_model():
    # checkpoints.py reads and writes every weight file: the models (and their config) are built on it, not under it
    imported = package_imports("checkpoints")
    assert imported <= {"files", "integrity"}, f"checkpoints.py imports {sorted(imported)}"
