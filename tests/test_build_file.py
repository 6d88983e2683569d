"""BUILD mirrors the tree: every module, tool and test has its Bazel target."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _targets():
    """(rule, name, srcs) for each call in BUILD, read with Python's parser."""
    tree = ast.parse(open(os.path.join(ROOT, "BUILD")).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            kwargs = {k.arg: k.value for k in node.keywords}
            if "name" in kwargs and "srcs" in kwargs:
                srcs = [e.value for e in kwargs["srcs"].elts]
                found.append((node.func.id, kwargs["name"].value, srcs))
    return found


def test_build_is_generated_from_the_current_tree():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_build.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_source_file_has_a_target():
    covered = {src for _, _, srcs in _targets() for src in srcs}
    for directory in ("tf_sgd_regimes", "configs", "tools", "tests"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, directory)):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "fixtures")]
            for name in filenames:
                if name.endswith(".py"):
                    path = os.path.relpath(os.path.join(dirpath, name), ROOT)
                    assert path in covered, f"{path} has no Bazel target in BUILD"


def test_each_test_file_is_a_py_test():
    tests = {name for rule, name, _ in _targets() if rule == "py_test"}
    on_disk = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(ROOT, "tests"))
               if n.startswith("test_") and n.endswith(".py")}
    assert on_disk == tests


def _setup_cfg():
    import configparser

    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    return parser


def test_setup_cfg_installs_every_package():
    # An explicit list: a subpackage missing from it is left out of the wheel silently.
    listed = set(_setup_cfg()["options"]["packages"].split())
    on_disk = {"tf_sgd_regimes.configs"}  # configs/ is mapped in through package_dir
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "tf_sgd_regimes")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"
                       and not os.path.islink(os.path.join(dirpath, d))]
        if "__init__.py" in filenames:
            on_disk.add(os.path.relpath(dirpath, ROOT).replace(os.sep, "."))
    assert listed == on_disk


def test_console_scripts_resolve():
    import importlib

    scripts = _setup_cfg()["options.entry_points"]["console_scripts"].split("\n")
    for line in filter(None, (s.strip() for s in scripts)):
        module, attribute = line.split("=")[1].strip().split(":")
        assert callable(getattr(importlib.import_module(module), attribute)), line
