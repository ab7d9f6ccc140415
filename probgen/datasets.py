"""Small real datasets shipped with probgen (no network needed).

Each table loader returns a pandas DataFrame; each text loader returns a ``str``.  Sources and
licences:

* ``old_faithful``: eruption duration and waiting time (minutes) of 272 eruptions of the Old
  Faithful geyser, Yellowstone National Park.  Härdle, W. (1991) *Smoothing Techniques with
  Implementation in S*, Springer; distributed with R as ``datasets::faithful``.  Public-domain
  measurements.
* ``geyser``: 299 *consecutive* eruptions of Old Faithful, 1-15 August 1985 (waiting time before
  each eruption and its duration), a real time series.  Azzalini, A. and Bowman, A. W. (1990)
  "A look at some data on the Old Faithful geyser", *Applied Statistics* 39, 357-365; distributed
  with R's MASS package as ``geyser``.  Public-domain measurements.
* ``penguins``: bill, flipper and body-mass measurements of 344 penguins of three species
  (Adelie, Chinstrap, Gentoo) from Palmer Station, Antarctica.  Horst, A. M., Hill, A. P. and
  Gorman, K. B. (2020) *palmerpenguins*, doi:10.5281/zenodo.3960218; data by Gorman, Williams
  and Fraser (2014), PLoS ONE 9(3): e90081.  Licence CC0 1.0.  Eleven rows have missing values.
* ``doctor_visits``: number of face-to-face visits to a medical doctor in a year (``mdvis``), for
  20,190 person-years of the RAND Health Insurance Experiment (1974-1982), real overdispersed
  counts.  RAND Corporation; the subset of Cameron, A. C. and Trivedi, P. K. (2005)
  *Microeconometrics: Methods and Applications*, Cambridge University Press, as distributed with
  statsmodels (``statsmodels.datasets.randhie``, the column ``mdvis``, rows in its order).
  Public domain.
* ``sp500``: the last 100 daily log returns of the S&P 500 index in 2018 (8 August to 31
  December), in percent (``return = 100 * log(close_t / close_{t-1})``, the first from the close
  of 7 August), with the adjusted close they come from, a real series with a volatility burst in
  its last weeks.  Daily index values from Yahoo Finance, as shipped by the ``arch`` package
  (Sheppard, K., ``arch.data.sp500``, version 8.0.0, NCSA licence); the last 101 closes of its
  file.  Index levels are published market facts.
* ``shakespeare`` (a text, :func:`load_text`): 199,994 characters (62 distinct: ASCII letters,
  punctuation, spaces and newlines) of William Shakespeare's plays as speeches, each headed by
  its speaker: *The Tragedy of Coriolanus* (c. 1608) and the opening of *King Richard III*
  (c. 1593).  The first 200 KB of the "tiny Shakespeare" collection of Karpathy, A. (2015),
  char-rnn, cut at a speech boundary.  Public domain (the plays are over four centuries old).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = [
    "list_texts",
    "list_datasets",
    "load",
    "load_doctor_visits",
    "load_geyser",
    "load_old_faithful",
    "load_penguins",
    "load_shakespeare",
    "load_sp500",
    "load_text",
]

_FILES = {
    "old_faithful": "old_faithful.csv",
    "geyser": "geyser.csv",
    "penguins": "penguins.csv",
    "doctor_visits": "doctor_visits.csv",
    "sp500": "sp500.csv",
}
_TEXTS = {"shakespeare": "shakespeare.txt"}


def _read(name: str) -> pd.DataFrame:
    with resources.files("probgen").joinpath("data", _FILES[name]).open("r") as fh:
        frame = pd.read_csv(fh)
    unnamed = [c for c in frame.columns if not c or c.startswith("Unnamed")]
    return frame.drop(columns=unnamed)


def list_datasets() -> list[str]:
    """Names of the bundled datasets: tables for :func:`load`, texts for :func:`load_text`."""
    return sorted([*_FILES, *_TEXTS])


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset by name (see :func:`list_datasets`)."""
    if name in _TEXTS:
        raise ValueError(
            f"{name!r} is a text, not a table; load it with probgen.datasets.load_text({name!r})."
        )
    if name not in _FILES:
        raise ValueError(f"Unknown dataset {name!r}; expected one of: {', '.join(list_datasets())}.")
    return _read(name)


def load_old_faithful() -> pd.DataFrame:
    """Old Faithful: 272 eruptions, columns ``eruptions`` (minutes) and ``waiting`` (minutes)."""
    return _read("old_faithful")


def load_geyser() -> pd.DataFrame:
    """Old Faithful, 299 consecutive eruptions in time order: ``waiting`` and ``duration``."""
    return _read("geyser")


def load_penguins(dropna: bool = False) -> pd.DataFrame:
    """Palmer penguins, 344 rows: species, island, four measurements, sex, year.

    ``dropna=True`` drops the rows with a missing measurement (342 remain with all four
    measurements; 333 when ``sex`` must be known too, which this does not require).
    """
    frame = _read("penguins")
    if dropna:
        cols = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
        frame = frame.dropna(subset=cols).reset_index(drop=True)
    return frame


def load_doctor_visits() -> pd.DataFrame:
    """RAND Health Insurance Experiment: 20,190 yearly counts of doctor visits, column ``mdvis``."""
    return _read("doctor_visits")


def load_sp500() -> pd.DataFrame:
    """S&P 500, the last 100 trading days of 2018: ``date``, ``close`` and ``return`` (percent log return).

    Examples
    --------
    >>> from probgen.datasets import load_sp500
    >>> frame = load_sp500()
    >>> len(frame), frame["date"].iloc[-1]
    (100, '2018-12-31')
    """
    return _read("sp500")


def list_texts() -> list[str]:
    """Names accepted by :func:`load_text` (bundled texts, for the text families)."""
    return sorted(_TEXTS)


def load_text(name: str) -> str:
    """Load a bundled text by name (``"shakespeare"``) as one string.

    Examples
    --------
    >>> from probgen.datasets import load_text
    >>> load_text("shakespeare")[:14]
    'First Citizen:'
    """
    if name not in _TEXTS:
        raise ValueError(f"Unknown text {name!r}; expected one of: {', '.join(sorted(_TEXTS))}.")
    with resources.files("probgen").joinpath("data", _TEXTS[name]).open("r", encoding="utf-8") as fh:
        return fh.read()


def load_shakespeare() -> str:
    """Shakespeare, 199,994 characters: *Coriolanus* and the opening of *Richard III* (public domain)."""
    return load_text("shakespeare")
