"""Shift DA and DT values by whole days (Retain Longitudinal ... Modified Dates).

A whole-day shift keeps every interval between two dates of the same patient, and keeps
times of day (TM, and the time part of DT) as they are. Values that do not parse are
reported as ``None`` so the caller replaces them with a dummy rather than keeping them.
"""
from __future__ import annotations

import datetime as _dt
import re

# PS3.5 6.2 DT: YYYY[MM[DD[HH[MM[SS[.F{1-6}]]]]]][&ZZXX]
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?((?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)([+-]\d{4})?")


def shift_da(value: str, days: int) -> str | None:
    text = value.strip()
    if not text:
        return text
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA YYYY.MM.DD
        text = text.replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    return _da(_shift_date(day, days))


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]; keep the rest.

    A value that names only a year (or a year and month) keeps that precision: the middle of
    the year (or month) is shifted and the result cut back, so "2019" moves with the patient's
    full dates instead of becoming a dummy."""
    text = value.strip()
    if not text:
        return text
    match = _DT.fullmatch(text)
    if match is None:
        return None
    year, month, day, rest, zone = match.groups()
    if day is None and rest:  # a time part needs a full date before it
        return None
    try:
        if day is not None:
            moved = _shift_date(_dt.date(int(year), int(month), int(day)), days)
            return _da(moved) + rest + (zone or "")
        middle = _dt.date(int(year), int(month), 15) if month else _dt.date(int(year), 7, 2)
    except ValueError:
        return None
    moved = _shift_date(middle, days)
    return (f"{moved.year:04d}{moved.month:02d}" if month else f"{moved.year:04d}") + (zone or "")


def _da(day: _dt.date) -> str:
    # not strftime: glibc's %Y drops the leading zeros of a year before 1000 ("10101")
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _shift_date(day: _dt.date, days: int) -> _dt.date:
    try:
        return day + _dt.timedelta(days=days)
    except OverflowError:
        return _dt.date(1, 1, 1)
