"""The command line's modules (issue 20, items 5 and 7): shared parts in ``cli/common.py`` and
``cli/training_options.py``, no command module importing another's (private) names, no import cycle, one tqdm
wrapper, and ``dnd predict`` in a module named for it. ``dnd --help`` and each command's help are unchanged."""

import ast
from pathlib import Path

import dnd_engine.progress
from dnd_engine.cli.main import build_parser

CLI = Path(__file__).resolve().parents[1] / "dnd_engine" / "cli"


def cli_imports():
    """module → [(imported cli module, names)] for every relative import in dnd_engine/cli, at any depth."""
    graph = {}
    for path in sorted(CLI.glob("*.py")):
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                edges.append((node.module, [a.name for a in node.names]))
        graph[path.stem] = edges
    return graph


def test_cli_modules_import_no_private_names_and_form_no_cycle():
    graph = cli_imports()
    private = [(m, dep, n) for m, edges in graph.items() for dep, names in edges for n in names
               if n.startswith("_")]
    assert private == []
    deps = {m: {dep for dep, _ in edges if dep in graph} for m, edges in graph.items()}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, seen + (d,))) for d in deps[start])
    assert [m for m in deps if reaches(m, m)] == []
    assert deps["common"] == set() and deps["training_options"] == set()      # the shared parts depend on none


def test_one_progress_bar_wrapper_and_predict_in_its_own_module():
    users = [p.stem for p in CLI.glob("*.py") if "tqdm" in p.read_text()]
    assert users == ["common"]
    assert not (CLI / "dnd_cmds.py").exists()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == ["info", "extract", "synth", "demo", "train", "bench", "predict"]
    assert sub.choices["predict"].get_default("func").__module__ == "dnd_engine.cli.predict_cmd"
    assert sub.choices["bench"].get_default("func").__module__ == "dnd_engine.cli.bench_cmd"


def test_the_dead_never_cancelled_helper_is_gone():
    assert not hasattr(dnd_engine.progress, "never_cancelled")
    assert callable(dnd_engine.progress.check_cancelled) and callable(dnd_engine.progress.no_progress)
