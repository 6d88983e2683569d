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
