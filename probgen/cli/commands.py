"""The command line's working commands: fit, summary, check, score, sample, plot.

``probgen fit MODEL DATA -o fit.npz`` fits a family by name (``GaussianMixture``, with its options
as ``-p n_components=3`` or written as a call, ``"GaussianMixture(n_components=3)"``) or a user's
Pyro function (``module:function``, imported from the working directory) to a CSV, Parquet or
``.npy`` file, and saves the fit.  The other commands read a saved fit.  Option values are read
as Python literals (``3``, ``0.1``, ``'full'``, ``[1, 2]``); nothing from the command line or a
file is run as code.  Errors print one line on standard error and exit with status 2; ``check``
exits with 1 when it finds problems.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "run_command"]

#: Exit status of a refusal (bad arguments, unreadable files, a model that cannot be fitted).
REFUSED = 2


class CommandError(Exception):
    """A refusal with a message for the user (exit status 2)."""


def _literal(text: str, what: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: -p covariance_type=full


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CommandError(f"{what} must be NAME=VALUE; got {item!r}.")
        out[key] = _literal(value, what)
    return out


def _parse_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"Name"`` or ``"Name(a=1, b='x')"`` (keyword literals only) -> name and keywords."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise CommandError(  # noqa: B904  (the parser's message says nothing more)
            f"MODEL must be a family name, Name(option=value, ...) or module:function; got {text!r}."
        )
    if isinstance(node, ast.Name):
        return node.id, {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
        try:
            return node.func.id, {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except ValueError:
            pass
    raise CommandError(
        f"MODEL {text!r}: options in a call must be keywords with literal values, e.g. "
        "GaussianMixture(n_components=3, covariance_type='full')."
    )


def _family_names() -> list[str]:
    import probgen.models as models

    return sorted(models.__all__)


def _model(spec: str, params: dict[str, Any]) -> Any:
    """A family instance or a user's function wrapped by ``probgen.model``."""
    import probgen as pg

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise CommandError(f"cannot import {module_name!r} for MODEL {spec!r}: {err}") from None
        finally:
            sys.path.pop(0)
        fn = getattr(module, attr, None)
        if fn is None:
            raise CommandError(f"module {module_name!r} has no {attr!r} (MODEL {spec!r}).")
        if params:
            raise CommandError("-p options apply to families; a user's function takes its settings in code.")
        return pg.model(fn)
    name, keywords = _parse_call(spec)
    import probgen.models as models

    cls = getattr(models, name, None) if name in models.__all__ else None
    if cls is None:
        raise CommandError(
            f"unknown model {name!r}; families: {', '.join(_family_names())}, or module:function."
        )
    try:
        return cls(**{**keywords, **params})
    except TypeError as err:
        raise CommandError(f"{name}: {err}") from None


def _read_data(path: str, columns: str | None) -> Any:
    """A CSV, Parquet, ``.npy`` or text file as a DataFrame, an array or a string."""
    import numpy as np
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise CommandError(f"no data file at {path!r}.")
    suffix = p.suffix.lower()
    data: Any
    try:
        if suffix in (".csv", ".tsv"):
            data = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            data = pd.read_parquet(p)
        elif suffix == ".npy":
            data = np.load(p, allow_pickle=False)
        elif suffix == ".txt":
            return p.read_text(encoding="utf-8")
        else:
            raise CommandError(f"DATA {path!r}: expected a .csv, .tsv, .parquet, .npy or .txt file.")
    except (ValueError, OSError, ImportError) as err:
        raise CommandError(f"cannot read {path!r}: {err}") from None
    if columns:
        if not isinstance(data, pd.DataFrame):
            raise CommandError("--columns applies to CSV and Parquet data.")
        names = [c.strip() for c in columns.split(",") if c.strip()]
        absent = [c for c in names if c not in data.columns]
        if absent:
            raise CommandError(f"--columns {absent} are not in {path!r}; its columns: {list(data.columns)}.")
        data = data[names]
    if isinstance(data, pd.DataFrame) and data.shape[1] == 1:
        return data.iloc[:, 0]
    return data


def _load(path: str, model_spec: str | None) -> Any:
    import probgen as pg

    model = _model(model_spec, {}) if model_spec else None
    try:
        return pg.load(path, model=model)
    except FileNotFoundError as err:
        raise CommandError(str(err)) from None
    except ValueError as err:
        if model is None and "user-written" in str(err):
            raise CommandError(
                f"{path!r} holds a fit of a user-written model (its code is not saved): pass --model module:function."
            ) from None
        raise


def _columns_of(fit: Any) -> list[str] | None:
    names = fit.extras.get("feature_names")
    return json.loads(names) if isinstance(names, str) else None


#: The backend a fit uses when none is named: the first of these that serves the model.
_PREFERRED = ("em", "enum", "svi", "cd", "adversarial", "mcmc")


def _default_method(model: Any, data: Any) -> str:
    from probgen.fit import capable_methods

    served = capable_methods(model, model.prepare_data(data))
    for name in _PREFERRED:
        if name in served:
            return name
    raise CommandError(f"no backend serves {model.name}; name one with --method.")


def _fit(args: argparse.Namespace) -> int:
    import pandas as pd

    import probgen as pg

    model = _model(args.model, _pairs(args.param, "-p"))
    data = _read_data(args.data, args.columns)
    options = _pairs(args.option, "-O")
    method = args.method or _default_method(model, data)
    fit = pg.fit(model, data, method=method, seed=args.seed, progress=not args.no_progress, **options)
    if isinstance(data, pd.DataFrame | pd.Series):
        names = list(map(str, data.columns)) if isinstance(data, pd.DataFrame) else [str(data.name)]
        fit = dataclasses.replace(fit, extras={**fit.extras, "feature_names": json.dumps(names)})
    fit.save(args.out)
    print(
        f"fitted {fit.model.name} by {fit.method} on {args.data} (converged={fit.converged}); saved to {args.out}",
        file=sys.stderr,
    )
    return 0


def _summary(args: argparse.Namespace) -> int:
    import probgen as pg

    table = pg.summary(_load(args.fit, args.model))
    print(table.to_csv() if args.csv else table.to_string())
    return 0


def _check(args: argparse.Namespace) -> int:
    import probgen as pg

    problems = pg.check(_load(args.fit, args.model))
    for p in problems:
        print(f"- {p}")
    if not problems:
        print("healthy: no problems found")
    return 1 if problems else 0


def _write_table(frame: Any, out: str | None) -> None:
    if out:
        frame.to_csv(out, index=False)
    else:
        frame.to_csv(sys.stdout, index=False)


def _score(args: argparse.Namespace) -> int:
    import pandas as pd

    fit = _load(args.fit, args.model)
    data = _read_data(args.data, args.columns)
    names = _columns_of(fit)
    if names and isinstance(data, pd.DataFrame):
        absent = [c for c in names if c not in data.columns]
        if absent:
            raise CommandError(f"{args.data!r} lacks the columns {absent} the model was fitted on.")
        data = data[names] if len(names) > 1 else data[names[0]]
    scores = fit.log_prob(data)
    _write_table(pd.DataFrame({"log_prob": scores.detach().double().cpu().numpy()}), args.out)
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    fit = _load(args.fit, args.model)
    draws = fit.sample(args.n, seed=args.seed)
    if isinstance(draws, pd.DataFrame):
        frame = draws
    elif isinstance(draws, str) or (isinstance(draws, list) and draws and isinstance(draws[0], str)):
        texts = [draws] if isinstance(draws, str) else draws
        frame = pd.DataFrame({"text": texts})
    else:
        array = np.asarray(draws.detach().cpu().numpy() if hasattr(draws, "detach") else draws)
        if array.ndim > 2:
            raise CommandError(
                f"{fit.model.name} generates items of shape {array.shape[1:]}; a CSV holds one row per item "
                "of scalars or vectors (save with the Python API)."
            )
        array = array.reshape(len(array), -1)
        names = _columns_of(fit)
        if not names or len(names) != array.shape[1]:
            names = [f"x{i}" for i in range(array.shape[1])] if array.shape[1] > 1 else ["x"]
        frame = pd.DataFrame(array, columns=names)
    _write_table(frame, args.out)
    return 0


def _plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = _load(args.fit, args.model)
    result = fit.plot()
    figure = getattr(result, "figure", None) or plt.gcf()
    figure.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"saved {args.out}", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Add ``fit``, ``summary``, ``check``, ``score``, ``sample`` and ``plot`` to the parser."""
    p = sub.add_parser(
        "fit",
        help="fit a family or a function of your own to a data file and save the fit",
        description="Fit MODEL to DATA and save the fit (a .npz of arrays and JSON; no pickle).",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a family (GaussianMixture, 'GaussianMixture(n_components=3)') or module:function",
    )
    p.add_argument("data", metavar="DATA", help="a .csv, .tsv, .parquet, .npy or .txt file")
    p.add_argument("-o", "--out", required=True, help="where to save the fit (.npz)")
    p.add_argument(
        "-m",
        "--method",
        default=None,
        help="backend: em, enum, svi, mcmc, cd, adversarial (default: the first of em, enum, svi, cd, adversarial, mcmc that serves the model)",
    )
    p.add_argument(
        "-p", "--param", action="append", metavar="NAME=VALUE", help="a family option (repeatable)"
    )
    p.add_argument(
        "-O", "--option", action="append", metavar="NAME=VALUE", help="a backend option (repeatable)"
    )
    p.add_argument("--columns", default=None, help="comma-separated columns of a table to use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown on stderr)")
    p.set_defaults(run=_fit)

    for name, helptext, fn in (
        ("summary", "the table of estimates of a saved fit", _summary),
        ("check", "diagnostics of a saved fit; exit status 1 when there are problems", _check),
    ):
        c = sub.add_parser(name, help=helptext, description=helptext)
        c.add_argument("fit", metavar="FIT", help="a fit saved by 'probgen fit' or Fit.save")
        c.add_argument("--model", default=None, help="module:function, for a fit of a user's model")
        if name == "summary":
            c.add_argument("--csv", action="store_true", help="print CSV instead of a text table")
        c.set_defaults(run=fn)

    s = sub.add_parser(
        "score", help="per-item log-likelihoods of new data, as CSV", description="Score DATA."
    )
    s.add_argument("fit", metavar="FIT")
    s.add_argument("data", metavar="DATA")
    s.add_argument("-o", "--out", default=None, help="CSV file (default: standard output)")
    s.add_argument("--columns", default=None)
    s.add_argument("--model", default=None, help="module:function, for a fit of a user's model")
    s.set_defaults(run=_score)

    g = sub.add_parser("sample", help="generate new items, as CSV", description="Draw new items from a fit.")
    g.add_argument("fit", metavar="FIT")
    g.add_argument("-n", type=int, default=10, help="number of items (default 10)")
    g.add_argument("-o", "--out", default=None, help="CSV file (default: standard output)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--model", default=None, help="module:function, for a fit of a user's model")
    g.set_defaults(run=_sample)

    f = sub.add_parser("plot", help="the picture of a saved fit, as an image file", description="Plot a fit.")
    f.add_argument("fit", metavar="FIT")
    f.add_argument("-o", "--out", required=True, help="image file (.png, .pdf, .svg)")
    f.add_argument("--model", default=None, help="module:function, for a fit of a user's model")
    f.set_defaults(run=_plot)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed working command; a refusal prints one line on stderr and returns 2."""
    from probgen.errors import ModelNotSupportedError

    try:
        return int(args.run(args))
    except BrokenPipeError:  # the reader stopped early (| head): quiet, as Python's docs advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except CommandError as err:
        print(f"probgen {args.command}: error: {err}", file=sys.stderr)
        return REFUSED
    except (ValueError, TypeError, ModelNotSupportedError, FileNotFoundError) as err:
        print(f"probgen {args.command}: error: {err}", file=sys.stderr)
        return REFUSED
