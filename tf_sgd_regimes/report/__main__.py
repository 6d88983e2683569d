"""python -m tf_sgd_regimes.report --workdir=DIR [--out_dir=DIR2]: a sweep's report."""

from tf_sgd_regimes.report import compose

if __name__ == "__main__":
    compose.entry_point()
