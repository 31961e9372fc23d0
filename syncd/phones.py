"""Phone numbers to E.164, the contact matching key. Pure."""

from __future__ import annotations

import functools

import phonenumbers

__all__ = ["InvalidPhone", "is_north_american", "to_e164"]


class InvalidPhone(ValueError):
    """A value that is not a valid phone number; the message says why."""


@functools.lru_cache(maxsize=65_536)  # a number read again (by each account, or the next run) is not parsed again
def to_e164(raw: object, default_region: str) -> str:
    """``raw`` in E.164 form, reading numbers without ``+country`` in ``default_region``.

    Raises :class:`InvalidPhone` naming the value when it cannot be parsed or is
    not a valid number.
    """
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidPhone(f"phone number must be text, got {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise InvalidPhone("phone number is empty")
    if len(text) > 64:
        raise InvalidPhone(f"phone number is too long ({len(text)} characters)")
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{text!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_north_american(e164: str) -> bool:
    """True for a +1 number with 10 national digits (the only kind SendHub accepts)."""
    return len(e164) == 12 and e164.startswith("+1") and e164[2:].isdigit()
