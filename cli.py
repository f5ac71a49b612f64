"""`colossus-bench`: the one command line, above every part of the project.

Each part keeps its verbs as plain typer-annotated functions beside its code (bench/cli.py,
bench/collectives/cli.py, results/cli.py, reports/model/cli.py, reports/page/cli.py); this module
registers them on one app. Exit codes everywhere: 0 all ok, 1 a case failed its check or crashed,
2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import logging
import sys

import typer

from bench import cli as bench_cli
from bench.collectives import cli as collectives_cli
from reports.model import cli as model_cli
from reports.page import cli as page_cli
from results import cli as results_cli
from results.console import err_console

app = typer.Typer(help="Hardware-aware benchmarks for NVIDIA Hopper GPUs and the clusters "
                       "built from them.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)

app.command()(bench_cli.run)
app.command()(bench_cli.info)
app.command()(results_cli.export)
app.command()(results_cli.ingest)
app.command()(results_cli.upload)
app.command()(results_cli.fleet)
app.command()(collectives_cli.allreduce)
app.command()(model_cli.estimate)
app.command()(model_cli.validate)
app.command()(page_cli.report)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
