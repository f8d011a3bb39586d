"""How the console words what it shows: money, times, status tones, reasons. Pure functions of
the values the API answers, used as template filters (`app.console.pages`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from app.registrations.facts import Reason, newest_log

Tone = Literal["good", "bad", "waiting", "busy", "neutral"]

TONES: Mapping[str, Tone] = {
    # Registration statuses (docs/sinch.md, States).
    "APPROVED": "good",
    "REJECTED": "bad",
    "PENDING": "waiting",
    "PENDING_ATTACHMENTS": "waiting",
    "ON_HOLD": "waiting",
    "IN_QUEUE": "busy",
    "IN_PROGRESS": "busy",
    "PENDING_APPROVAL": "busy",
    # Event states and delivery states.
    "processed": "good",
    "succeeded": "good",
    "failed": "bad",
    "invalid": "bad",
    "received": "busy",
    "pending": "busy",
}
"""A status's meaning for an operator: done well (green), gone wrong (red), waiting on the
customer (amber), in progress (blue); anything else (DRAFT, a state Sinch adds) neutral (grey).
Colour only repeats the text of the badge, which is always shown."""

FREQUENCIES = {"MONTHLY": "monthly", "YEARLY": "yearly", "ANNUALLY": "yearly", "WEEKLY": "weekly"}


def tone(status: str | None) -> Tone:
    return TONES.get(status or "", "neutral")


def when(moment: datetime | None) -> str:
    """The console's one time format (every page): `2024-05-01 10:00:00 UTC`; `-` for none."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def duration(seconds: float | None) -> str:
    """A length of time as an operator reads it: `30 s`, `45 min`, `5.2 h`, `3.4 d`; `-` for none
    (the data cannot tell)."""
    if seconds is None:
        return "-"
    if seconds < 59.5:  # what rounds to 60 s reads as 1 min
        return f"{seconds:.0f} s"
    if seconds < 3_600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def share(value: float | None) -> str:
    """A share as a percentage (`87 %`); `-` for none."""
    return "-" if value is None else f"{100 * value:.0f} %"


def plain(text: str | None) -> str:
    """A message as a person reads it: the Markdown backticks that API problems and errors use
    to mark names are dropped (the console shows no Markdown)."""
    return (text or "").replace("`", "")


def money(price: Mapping[str, Any] | None) -> str:
    """Sinch's `price` object as an operator reads it, e.g. `EUR 120.00 one-time, EUR 10.00
    monthly`; a fee of zero is left out (`no fee` when both are). `-` for none. A shape not
    understood is shown as its `key: value` pairs, never dropped."""
    if not price:
        return "-"
    currency = price.get("currency")
    setup = _amount(price.get("setupFeeAmount"))
    recurrent = _amount(price.get("recurrentFeeAmount"))
    if not isinstance(currency, str) or (setup is None and recurrent is None):
        return ", ".join(f"{key}: {value}" for key, value in sorted(price.items()))
    parts = []
    if setup:
        parts.append(f"{currency} {setup:.2f} one-time")
    if recurrent:
        frequency = price.get("frequency")
        every = FREQUENCIES.get(str(frequency), str(frequency).lower())
        parts.append(f"{currency} {recurrent:.2f} {every if frequency else 'recurring'}")
    return ", ".join(parts) or "no fee"


def _amount(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def explaining_reason(
    status: str, document: Mapping[str, Any] | None, kept: Reason | None
) -> Reason | None:
    """The newest message that explains why a registration is in `status`: the newest entry of
    Sinch's logs (`document`) whose state is `status`, else the reason kept (a callback's
    comments) when it was given for `status`; None when nothing explains this status yet (an
    APPROVED registration is never explained by the log of its submission)."""
    logs = document.get("logs") if document is not None else None
    if isinstance(logs, list):
        found = newest_log(
            [e for e in logs if isinstance(e, dict) and e.get("registrationState") == status]
        )
        if found is not None:
            return found
    return kept if kept is not None and kept.state == status else None
