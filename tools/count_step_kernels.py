"""Kernels per packed training step, with and without XLA: the "fewer, fused kernels" count.

    TF_CPP_MIN_LOG_LEVEL=2 python tools/count_step_kernels.py [--batch_size=16]

The demo pack (78 MLP members). Without XLA: TensorFlow ops in the loop body of the
chunk's graph, nested functions included (each runs as at least one kernel). With XLA:
instructions of the optimised HLO's while-loop body that launch work (fusions, dots,
custom calls, copies...; parameters, tuples and bitcasts excluded).
"""

import argparse
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import demo_pack  # noqa: E402  (tools/, beside this script)

FREE = {"Const", "Identity", "NoOp", "Placeholder", "_Arg", "_Retval", "ReadVariableOp",
        "StopGradient", "Shape"}
HLO_FREE = ("parameter", "tuple", "get-tuple-element", "bitcast", "constant")


def setup(jit, batch_size):
    runner, indices = demo_pack.demo_pack(jit, batch_size, steps=8, learning_rate=0.1,
                                          total_steps=100)
    args = [tf.constant(indices, tf.int32), tf.constant(8, tf.int32)]
    if runner.static_batch is None:
        args.append(tf.constant(batch_size, tf.int32))
    return runner, args


def count_graph_ops(graph_def):
    """Ops of the loop body function(s): the functions named *while_body*, recursively."""
    library = {f.signature.name: f for f in graph_def.library.function}
    seen = set()

    def ops_of(name):
        if name in seen:
            return 0
        seen.add(name)
        total = 0
        for node in library[name].node_def:
            if node.op in library:
                total += ops_of(node.op)
            elif node.op not in FREE:
                total += 1
            for attr in node.attr.values():
                if attr.func.name in library:
                    total += ops_of(attr.func.name)
        return total

    bodies = [n for n in library if "while_body" in n]
    return sum(ops_of(b) for b in bodies)


def count_hlo(hlo_text):
    """Work-launching instructions of the while loops' body computations."""
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo_text))
    total, current = 0, None
    for line in hlo_text.splitlines():
        header = re.match(r"^\s*%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.strip().startswith("ROOT"):
            current = header.group(1)
            continue
        if line.strip() == "}":
            current = None
            continue
        if current in bodies and "=" in line:
            op = re.search(r"=\s*\S+\s+([\w\-]+)\(", line)
            if op and op.group(1) not in HLO_FREE:
                total += 1
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    runner, call_args = setup(False, args.batch_size)
    graph = runner._train_chunk.get_concrete_function(*call_args).graph.as_graph_def()
    print(f"no XLA: {count_graph_ops(graph)} TensorFlow ops per step (loop body)")
    runner, call_args = setup(True, args.batch_size)
    hlo = runner._train_chunk.experimental_get_compiler_ir(*call_args, None)(
        stage="optimized_hlo")
    print(f"XLA:    {count_hlo(hlo)} HLO kernels per step (optimised while body), "
          f"{hlo.count(' fusion(')} fusions in the whole module")
    return 0


if __name__ == "__main__":
    sys.exit(main())
