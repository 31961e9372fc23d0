"""Which contacts a run reconciles for one account, and in which pieces.

A run starts from **seeds**: the records that may be out of step (journalled
changes, records a pull found changed or gone, records due for a retry), or
every record in a full run. Seeds alone are not enough for the decision table:
a seed's link brings its partner, and an unlinked record brings every record it
could be matched with by key, or be a duplicate of. :meth:`Scope.windows`
closes the seeds over links and keys with narrow queries (ids and phones only),
groups the closed set into *components* (records that can affect one another's
operations share one: a key, or a link), and splits them into parts of bounded
size; :meth:`Scope.load` reads a part into a :class:`Window`, loaded whole (links with their
bases, validated canonical rows, mirror rows) and reconciled on its own. A run
thus costs what changed, and a first import of a million contacts holds one
window in memory at a time.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from syncd.db.canonical import Invalid
from syncd.db.repo import Store
from syncd.model import BaseRecord, Contact, Group, RemoteContact
from syncd.phones import InvalidPhone, to_e164

__all__ = ["WINDOW", "Part", "Scope", "Seeds", "Window"]

#: Records per window: a first import of N contacts holds N/WINDOW of them in memory at a time.
WINDOW = 20_000

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass
class Seeds:
    """Contacts of one account a run starts from: canonical ids and remote ids, or everything."""

    contacts: set[int] = field(default_factory=set)
    remote: set[str] = field(default_factory=set)
    everything: bool = False

    def add(self, *, contacts: Collection[int] = (), remote: Collection[str] = ()) -> None:
        if not self.everything:
            self.contacts.update(contacts)
            self.remote.update(remote)

    def __bool__(self) -> bool:
        return self.everything or bool(self.contacts or self.remote)


@dataclass(frozen=True, slots=True)
class Part:
    """The ids of one window's records (None: every record of that kind)."""

    contacts: set[int] | None
    remote: set[str] | None


@dataclass
class Window:
    """One piece of an account's contacts, loaded whole: what reconcile needs for these records."""

    links: dict[int, BaseRecord]  # canonical id -> link (with its base)
    contacts: dict[int, Contact]  # readable canonical rows
    invalid: list[Invalid]  # canonical rows that cannot be read
    mirror: dict[str, RemoteContact]  # remote id -> mirror record



@dataclass
class Scope:
    """The closed set of records to reconcile for one account, split into components."""

    store: Store
    provider: str
    groups: Mapping[int, Group]
    default_region: str
    check: Callable[[int], bool]  # canonical rows whose phone is parsed again
    window: int = WINDOW

    def parts(self, seeds: Seeds) -> list[Part]:
        """The seeds' records, closed over links and matching keys, in parts of at most ``window``."""
        if not seeds:
            return []
        pairs, phones, keys = self._closure(seeds)
        parts = self._parts(pairs, phones, keys)
        if seeds.everything and len(parts) == 1:
            return [Part(None, None)]  # everything at once: read whole tables, no id lists
        return [Part(cids, rids) for cids, rids in parts if cids or rids]

    def load(self, part: Part) -> Window:
        """One part's records, loaded whole."""
        store, name = self.store, self.provider
        cids, rids = part.contacts, part.remote
        links = store.load_links(name, "contact") if cids is None else store.load_links(name, "contact", cids=cids)
        contacts, invalid = store.load_contacts(cids, self.groups, self.default_region, check=self.check)
        wanted = None if rids is None else rids | {link.remote_id for link in links.values()}
        return Window(links, contacts, invalid, store.load_mirror_contacts(name, wanted))

    # -- the narrow pass: ids and phones only -----------------------------------------------

    def _closure(self, seeds: Seeds) -> tuple[dict[int, str], dict[int, str], dict[str, str]]:
        """Links (canonical -> remote), canonical phones and remote keys of every record the seeds reach."""
        store, name = self.store, self.provider
        if seeds.everything:
            return (store.link_pairs(name, "contact"), store.contact_phones(None), store.mirror_phones(name))
        pairs = store.link_pairs(name, "contact", cids=seeds.contacts, rids=seeds.remote)
        phones = store.contact_phones(seeds.contacts | pairs.keys())
        keys = store.mirror_phones(name, seeds.remote | set(pairs.values()))
        # An unlinked remote record meets the canonical contact with its number (to link it, or to be its duplicate).
        linked = set(pairs.values())
        wanted = {keys[rid] for rid in keys if rid not in linked} - {self._key(p) for p in phones.values()}
        found = {cid: phone for phone, cid in store.contacts_with_phones(wanted).items() if cid not in phones}
        if found:
            phones.update(found)
            more = store.link_pairs(name, "contact", cids=found.keys())
            pairs.update(more)
            keys.update(store.mirror_phones(name, set(more.values()) - keys.keys()))
        # A canonical contact not linked here meets the unlinked remote records with its number.
        free = {self._key(phones[cid]) for cid in phones if cid not in pairs}
        candidates = {rid: key for rid, key in store.mirror_with_phones(name, free).items() if rid not in keys}
        if candidates:
            taken = set(store.link_pairs(name, "contact", rids=candidates.keys()).values())
            keys.update({rid: key for rid, key in candidates.items() if rid not in taken})
        return pairs, phones, keys

    def _key(self, phone: str) -> str:
        """A canonical phone as the matching key (E.164), parsed only when not already written so."""
        if _E164.fullmatch(phone):
            return phone
        try:
            return to_e164(phone, self.default_region)
        except InvalidPhone:
            return phone

    def _parts(self, pairs: Mapping[int, str], phones: Mapping[int, str], keys: Mapping[str, str]
               ) -> list[tuple[set[int], set[str]]]:
        """The records grouped by component and split into about-equal parts of at most ``window``."""
        canonical_of = {rid: cid for cid, rid in pairs.items()}
        cids = set(phones) | set(pairs)
        rids = set(keys) | set(canonical_of)
        count = max(1, math.ceil((len(cids) + len(rids)) / self.window))
        parts: list[tuple[set[int], set[str]]] = [(set(), set()) for _ in range(count)]

        def component(cid: int) -> str:
            phone = phones.get(cid)
            return self._key(phone) if phone is not None else f"#{cid}"

        def part(name: str) -> tuple[set[int], set[str]]:
            return parts[zlib.crc32(name.encode()) % count] if count > 1 else parts[0]

        for cid in cids:
            part(component(cid))[0].add(cid)
        for rid in rids:
            linked = canonical_of.get(rid)
            part(component(linked) if linked is not None else keys.get(rid, f"@{rid}"))[1].add(rid)
        return parts
