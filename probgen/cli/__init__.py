"""The ``probgen`` command: ``fit``, ``summary``, ``check``, ``score``, ``sample``, ``plot``,
``demo``, ``datasets``, ``calibrate``; ``probgen COMMAND --help`` for each.

Exit status: 0 on success, 1 when ``check`` finds problems, 2 on any refusal (bad arguments, an
unreadable file, an unknown calibration row, a model that cannot be fitted)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from probgen.cli.commands import add_commands, run_command

__all__ = ["main"]

_TOURS = ("probgen.cli.tour_mixture", "probgen.cli.tour_hmm", "probgen.cli.tour_bayesnet")


def _demo_custom_model(progress: bool) -> None:
    import pyro
    import pyro.distributions as dist
    import torch

    import probgen as pg

    print("== A model of your own: eight schools (Rubin 1981), fitted by SVI and by MCMC ==")
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    @pg.model
    def eight_schools(data=None):  # non-centred: theta = mu + tau * eta
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", 8):
            eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=data)

    t0 = time.perf_counter()
    svi = pg.fit(eight_schools, y, method="svi", seed=0, progress=progress, num_steps=2000, lr=0.02)
    print(
        f"SVI ({len(svi.history)} steps, {time.perf_counter() - t0:.1f} s): posterior mean of mu "
        f"{float(svi.params['mu']):.2f}, of tau {float(svi.params['tau']):.2f}"
    )
    t0 = time.perf_counter()
    mcmc = pg.fit(
        eight_schools, y, method="mcmc", seed=0, progress=progress, num_samples=500, warmup_steps=500
    )
    print(f"MCMC (NUTS, 2 chains x 500 draws, {time.perf_counter() - t0:.1f} s):")
    print(pg.summary(mcmc).loc[["mu", "tau"]].to_string())
    problems = pg.check(mcmc)
    print("pg.check:", "healthy" if not problems else "")
    for p in problems:
        print("  -", p)
    print()


def _demo(progress: bool) -> int:
    _demo_custom_model(progress)
    for name in _TOURS:  # the tours use the families: the command line is the one layer above them
        importlib.import_module(name).run(progress=progress)
    return 0


def _datasets() -> int:
    from probgen import datasets

    for name in datasets.list_datasets():
        if name in datasets.list_texts():
            print(f"{name:14s} text, {len(datasets.load_text(name)):,} characters")
            continue
        frame = datasets.load(name)
        print(f"{name:14s} {frame.shape[0]:4d} rows  columns: {', '.join(frame.columns)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probgen`` console command."""
    parser = argparse.ArgumentParser(
        prog="probgen",
        description="probgen: generative models on Pyro (mixtures, hidden Markov models, Bayesian "
        "networks, naive Bayes, VAEs, RBMs, GANs, text generators and models of your own) fitted by EM, "
        "SVI, exact enumeration, MCMC, contrastive divergence or adversarial training, with ArviZ "
        "diagnostics.  Fit, score and sample from data files without writing Python.",
        epilog="Exit status: 0 success, 1 problems found by 'check', 2 a refusal.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(sub)
    demo = sub.add_parser("demo", help="a short tour on bundled data (a custom model, mixtures, HMMs)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub.add_parser("datasets", help="list the bundled datasets")
    cal = sub.add_parser("calibrate", help="simulation-based calibration over a grid of models x backends")
    cal.add_argument("--quick", action="store_true", help="20 simulations per row with small fits")
    cal.add_argument("--out", default=None, help="write the Markdown table to this file")
    cal.add_argument("--row", action="append", default=None, help="only this grid row (repeatable)")
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is not None:
        return run_command(args)
    if args.version:
        from probgen import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        return _demo(progress=not args.no_progress and sys.stderr.isatty())
    if args.command == "datasets":
        return _datasets()
    if args.command == "calibrate":
        from probgen.cli.calibration_grid import GRID, run

        known = [row[0] for row in GRID]
        unknown = [r for r in args.row or [] if r not in known]
        if unknown:
            print(
                f"probgen calibrate: error: unknown --row {unknown}; rows: {', '.join(known)}",
                file=sys.stderr,
            )
            return 2
        run(args.out, quick=args.quick, rows=args.row, progress=sys.stderr.isatty())
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
