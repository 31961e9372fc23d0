"""Domain values shared by the engine and the provider clients.

Terminology (see also ``syncd.sync``):

canonical
    The contact book in syncd's own database (tables ``contacts``, ``groups``,
    ``group_members``): the desired state.
remote
    A record as one provider account holds it, normalised by that provider's client.
projection
    A canonical record mapped onto the fields one provider can store, in that
    provider's own field names (``Provider.project``). Fingerprints and the
    three-way comparison are taken on projections, so a field a provider cannot
    hold never shows up as a change.

Nothing here imports httpx, SQLAlchemy or structlog: these are plain values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

import orjson

__all__ = [
    "NOTHING_KEPT",
    "BaseRecord",
    "ChangeEntry",
    "Deletes",
    "LocalRecord",
    "Mode",
    "PendingStatus",
    "Preference",
    "RemoteRecord",
    "Contact",
    "ContactWrite",
    "Fields",
    "Group",
    "OptOut",
    "RemoteContact",
    "RemoteGroup",
    "WriteOutcome",
    "digest",
    "fingerprint",
    "group_key",
]

Fields: TypeAlias = Mapping[str, Any]
"""Projected field values of one record, in one provider's field space."""

NOTHING_KEPT: Mapping[str, Any] = MappingProxyType({})
"""The empty ``kept`` mapping: an immutable default for signatures and records."""


def group_key(name: str) -> str:
    """The matching key of a group: its name trimmed and case-folded."""
    return " ".join(name.split()).casefold()


def fingerprint(fields: Fields) -> str:
    """A stable digest of projected fields (key order does not matter)."""
    return digest(orjson.dumps(fields, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))


def digest(blob: bytes) -> str:
    """The fingerprint of some bytes: 32 hex digits."""
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Contact:
    """A canonical contact. ``groups`` holds canonical group ids."""

    id: int | None
    phone: str
    name: str = ""
    surname: str = ""
    email: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    opted_out: bool = False
    groups: frozenset[int] = frozenset()
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """A canonical group."""

    id: int | None
    name: str
    description: str = ""
    updated_at: datetime | None = None

    @property
    def key(self) -> str:
        return group_key(self.name)


@dataclass(frozen=True, slots=True)
class RemoteGroup:
    """A group as a provider lists it."""

    remote_id: str
    name: str
    description: str = ""
    modified_at: datetime | None = None
    kept: Mapping[str, Any] = field(default_factory=lambda: NOTHING_KEPT, compare=False)
    """Provider-owned attributes syncd does not sync but must send back on a
    replace-style write (SendHub's ``slug``, ``text_to_subscribe``, ``ttjResponse``),
    as last pulled: JSON values, stored in the mirror and handed back to
    ``Provider.update_group``. Not part of equality (it is not synced data)."""

    @property
    def key(self) -> str:
        return group_key(self.name)


@dataclass(frozen=True, slots=True)
class RemoteContact:
    """A contact as a provider lists it, normalised by the client.

    ``phone`` is E.164 when the provider's value parses, else the raw value.
    ``fields`` is in the provider's field space and excludes groups and opt-out,
    which have their own attributes. ``groups`` holds remote group ids.
    """

    remote_id: str
    phone: str
    fields: Fields
    groups: frozenset[str] = frozenset()
    opted_out: bool = False
    modified_at: datetime | None = None
    kept: Mapping[str, Any] = field(default_factory=lambda: NOTHING_KEPT, compare=False)
    """Provider-owned attributes a replace-style write would reset (SendHub's
    ``screened`` and ``keyword``), as last pulled; the engine passes them back
    as ``ContactWrite.kept``. Not part of equality (it is not synced data)."""
    fingerprint: str = ""
    """The client's digest of the record as the provider sent it ("" when it has none): a
    pull compares it with the mirror's to skip records that did not change."""


@dataclass(frozen=True, slots=True)
class ContactWrite:
    """One contact to create or update at a provider.

    ``ref`` is the caller's handle (the canonical id) echoed in the outcome.
    ``remote_id`` is None for a create. ``fields`` is the projection
    (``Provider.project``); ``groups`` the remote group ids the contact must be
    in afterwards (providers whose writes replace memberships need them all).
    ``opted_out`` asks providers that can hold an opt-out to record it.
    """

    ref: int
    phone: str
    fields: Fields
    groups: frozenset[str] = frozenset()
    remote_id: str | None = None
    opted_out: bool = False
    kept: Mapping[str, Any] = field(default_factory=lambda: NOTHING_KEPT)
    """``RemoteContact.kept`` of the contact being updated, as last pulled: sent
    back so that a replace-style write (SendHub's PUT) keeps them."""
    replace_groups: bool = False
    """The write takes the contact out of a group. Providers that can only add
    memberships without replacing the whole set (smsend's upsert) replace it then,
    at a cost their module docstring states; otherwise ``groups`` is only added."""


@dataclass(frozen=True, slots=True)
class OptOut:
    """One opt-out a provider lists on its own (smsend's SMS blacklist).

    ``phone`` is E.164 when the provider's value parses, else the raw value;
    ``origin`` is the provider's word for how it got there (smsend: ``API``,
    ``WEB``, ``STOPSMS``); ``at`` is when it was recorded (aware, UTC), if said.
    """

    phone: str
    origin: str
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The result of one write in a batch: a remote id, or the error that stopped it.

    ``error`` is a ``syncd.errors.ProviderError``; typed loosely here to keep this
    module free of the error tree's imports.
    """

    ref: int | str
    remote_id: str | None = None
    error: Exception | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


# -- what reconcile compares (syncd.sync.reconcile) ------------------------------------------------


class Mode(StrEnum):
    """How a provider takes part (``mode``): both ways, made to match the book, or feeding it only."""

    TWO_WAY = "two-way"
    PUSH = "push"
    PULL = "pull"


class Deletes(StrEnum):
    """What a provider does with a deletion carried to a side (``deletes``)."""

    PROPAGATE = "propagate"  # carried out
    APPROVE = "approve"  # held as a pending delete until an operator approves or declines it
    NEVER = "never"  # never deleted at the provider; one deleted there is re-created from the book


class PendingStatus(StrEnum):
    """The ``change_log`` status of a deletion held for an operator (``deletes = "approve"``)."""

    AWAITING = "awaiting_approval"
    APPROVED = "approved"  # the next run carries it out
    DECLINED = "declined"  # the next run restores the record on the side that lost it
    CANCELLED = "cancelled"  # the record came back or changed before anyone decided


class Preference(StrEnum):
    """Which side a conflict keeps (``conflict``): ``newest`` by modification time, ``manual`` holds it."""

    LOCAL = "local"
    REMOTE = "remote"
    NEWEST = "newest"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class BaseRecord:
    """A link: the remote id and the projected fields at the last successful sync."""

    remote_id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """A canonical record projected into the provider's field space."""

    canonical_id: int
    key: str
    fields: Mapping[str, Any]
    opted_out: bool = False
    modified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """A mirror record in the provider's field space (groups as canonical ids)."""

    remote_id: str
    key: str
    fields: Mapping[str, Any]
    opted_out: bool = False
    modified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """A ``change_log`` row to write: what happened to one record, and how it stands."""

    provider: str
    entity: str
    action: str
    direction: str
    status: str
    reason: str
    canonical_id: int | None = None
    remote_id: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    fingerprint: str | None = None
