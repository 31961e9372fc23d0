"""The one interface the sync engine sees of a provider account.

Every provider module (``smsend``, ``sendhub``) implements :class:`Provider`.
Reads stream page by page; writes take batches and answer one
:class:`~syncd.model.WriteOutcome` per item, so one bad record never stops the
others. Errors are :mod:`syncd.errors` ``ProviderError`` subclasses only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from syncd.model import NOTHING_KEPT, Contact, ContactWrite, Fields, OptOut, RemoteContact, RemoteGroup, WriteOutcome

__all__ = ["Capabilities", "MembershipOutcome", "Provider", "RequestStats"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's documented API lets syncd do.

    ``list_contacts``
        Contacts can be listed. When False (smsend) contacts are outbound only:
        the mirror holds what syncd last wrote, and remote edits are not seen.
    ``contact_id_is_phone``
        The provider's write path is keyed by phone number (smsend's upsert), so
        the E.164 number serves as the remote id and a create can never duplicate.
    ``member_changes``
        Memberships change through a per-group add/remove call (SendHub); when
        False, memberships travel with the contact write (smsend's ``groupIds``).
    ``opt_out_outbound``
        syncd can record an opt-out at the provider (smsend's blacklist).
    ``contact_fields``
        The provider field names ``project`` may produce.
    ``group_fields``
        The canonical group attributes the provider stores (SendHub groups have no description).
    ``list_opt_outs``
        The provider lists opt-outs on their own (:meth:`Provider.opt_outs`: smsend's
        SMS blacklist). When False (SendHub) opt-outs arrive with the contacts
        (``RemoteContact.opted_out``) and ``opt_outs`` raises ``Unsupported``.
    """

    list_contacts: bool
    contact_id_is_phone: bool
    member_changes: bool
    opt_out_outbound: bool
    contact_fields: frozenset[str]
    group_fields: frozenset[str] = frozenset({"name", "description"})
    list_opt_outs: bool = False


@dataclass(slots=True)
class RequestStats:
    """Requests one account's client has sent, counted by its HTTP session.

    ``requests`` counts every attempt, ``retries`` those that repeated an
    earlier one, ``by_endpoint`` attempts per ``METHOD /path``. The run report,
    the metrics endpoint and the benchmarks read them.
    """

    requests: int = 0
    retries: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MembershipOutcome:
    """Per-id results of one membership change call: failed ids map to their error."""

    added: frozenset[str]
    removed: frozenset[str]
    errors: dict[str, Exception]


@runtime_checkable
class Provider(Protocol):
    """One configured provider account."""

    name: str
    capabilities: Capabilities

    @property
    def stats(self) -> RequestStats:
        """The requests this client has sent so far (read after a run, for its report)."""

    # -- mapping (pure) ---------------------------------------------------
    def project(self, contact: Contact) -> dict[str, Any]:
        """The canonical contact in this provider's field space (no groups, no opt-out)."""

    def to_canonical(self, fields: Fields, current: Contact | None) -> dict[str, Any]:
        """Canonical attribute values (phone when ``fields`` hold one, name, surname, email, extra) for remote ``fields``.

        ``current`` is the canonical contact being updated, if any, so fields the
        provider cannot hold (and splits it cannot express) are kept from it.
        """

    # -- reads ------------------------------------------------------------
    def groups(self) -> AsyncIterator[list[RemoteGroup]]:
        """Every group, one list per page fetched."""

    def contacts(self, known: MutableMapping[str, str] | None = None) -> AsyncIterator[list[RemoteContact]]:
        """Every contact, one list per page fetched (``Unsupported`` when not listable).

        ``known`` maps remote ids to the :attr:`RemoteContact.fingerprint` of the
        records the caller already holds. When given, a contact sent exactly as
        before is neither parsed nor yielded, each yielded contact carries its
        fingerprint, and every listed id is taken out of ``known``: after a
        complete listing it holds the contacts that are gone.
        """

    def opt_outs(self, since: datetime | None = None) -> AsyncIterator[list[OptOut]]:
        """Opt-outs recorded at the provider (at or after ``since``), one list per page.

        Only where ``capabilities.list_opt_outs``; ``Unsupported`` otherwise. An
        answer the client cannot read is a ``ProtocolError``, never an empty list.
        """

    # -- writes -----------------------------------------------------------
    async def create_group(self, name: str, description: str) -> str:
        """Create a group; answer its remote id."""

    async def update_group(
        self, remote_id: str, name: str, description: str, kept: Mapping[str, Any] = NOTHING_KEPT
    ) -> None:
        """Rename a group; ``kept`` is its ``RemoteGroup.kept`` as last pulled, sent back where a write replaces."""

    async def delete_group(self, remote_id: str) -> None: ...

    async def create_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """Create contacts (with their groups); one outcome per write, in order."""

    async def update_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """Replace contacts' fields and groups; one outcome per write, in order."""

    async def delete_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """Delete contacts; one outcome per write, in order."""

    async def change_members(
        self, group_remote_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> MembershipOutcome:
        """Add and remove contacts (remote ids) to and from one group."""

    async def aclose(self) -> None: ...
