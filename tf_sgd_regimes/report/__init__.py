"""The report of a sweep, from its ledger records: statistics, tables, figures, the paper.

    analysis.py  best k of n, the optimal effective LR and its range, regime breakpoints
    tables.py    tables in the paper's layout, compared with its numbers; text/MD/LaTeX
    figures.py   metric and optimal LR vs batch size, LR sweeps, budgets (matplotlib)
    compose.py   generate(): the whole report of a work directory; the CLI
                 (`python -m tf_sgd_regimes.report --workdir=DIR`, __main__.py)

    from tf_sgd_regimes import report
    result = report.generate(workdir, config)   # result["text"], ["tables"], ["figures"]

`generate` resolves on first use, so importing report.analysis (the sweep's edge
extension does) loads neither pandas nor matplotlib.
"""


def __getattr__(name):
    if name == "generate":
        from tf_sgd_regimes.report import compose

        return compose.generate
    raise AttributeError(f"module 'tf_sgd_regimes.report' has no attribute {name!r}")
