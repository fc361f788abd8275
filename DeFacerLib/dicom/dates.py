"""Shift DA and DT values by whole days (Retain Longitudinal ... Modified Dates).

A whole-day shift keeps every interval between two dates of the same patient, and keeps
times of day (TM, and the time part of DT) as they are. Values that do not parse are
reported as ``None`` so the caller replaces them with a dummy rather than keeping them.
"""
from __future__ import annotations

import datetime as _dt


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
    return _shift_date(day, days).strftime("%Y%m%d")


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]; keep the rest."""
    text = value.strip()
    if not text:
        return text
    if len(text) < 8:  # a year or year-month only: too coarse to shift by days, drop it
        return None
    shifted = shift_da(text[:8], days)
    return None if shifted is None else shifted + text[8:]


def _shift_date(day: _dt.date, days: int) -> _dt.date:
    try:
        return day + _dt.timedelta(days=days)
    except OverflowError:
        return _dt.date(1, 1, 1)
