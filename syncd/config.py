"""Configuration: a TOML file parsed into frozen, typed settings (design §5).

The dataclasses below are the contract the rest of syncd reads.
:func:`load_config` validates a file into them and reports every problem at
once, as one :class:`~syncd.errors.ConfigError` whose ``problems`` each read
``FILE: KEY.PATH: what is wrong`` (``config.toml: providers[1].api_key:
missing (sendhub needs username and api_key)``) or, for TOML syntax,
``FILE: line N, column M: invalid TOML: …``. Nothing else escapes it.

Rules beyond the design's example:

* Keys are exactly those of design §5 plus, per provider, ``conflict``,
  ``batch_size``, ``timeout_seconds``, ``tls_verify`` and ``enabled``. An
  unknown key is an error, with a "did you mean" hint when one is close.
* Credentials (``password``, ``access_token``, ``session_key``, ``api_key``)
  and the identifiers ``user_key``, ``username`` and ``database.url`` take a
  literal string, ``{ env = "VAR" }`` or ``{ file = "PATH" }``. A file path
  is read relative to the config file's directory, at most 64 KiB, one
  trailing newline stripped. Credentials become :class:`Secret`; the others
  plain strings. No message, warning or ``repr`` ever shows a credential.
* Each provider gives exactly one credential set of its type (smsend:
  ``user_key`` + ``access_token``, ``username`` + ``password``, or
  ``user_key`` + ``session_key``; SendHub: ``username`` + ``api_key``). A
  credential of another type, or a second set, is an error rather than a
  warning: syncd never guesses which one the operator meant. A disabled
  provider (``enabled = false``) is validated just the same. The sets are
  :data:`CREDENTIAL_SETS`, and :attr:`ProviderSettings.credentials` is the one
  an account signs in with: the clients read it and check nothing themselves.
* ``database.url`` must be a URL SQLAlchemy parses and has a driver for. A
  relative SQLite path (``sqlite:///syncd.db``) is kept as written, so it is
  relative to the working directory of the process.
* Warnings (kept in :attr:`Config.warnings`, printed at every start): a
  session key in use, ``tls_verify = false``.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import phonenumbers

from syncd.errors import ConfigError

__all__ = [
    "CONFLICT_POLICIES",
    "CREDENTIAL_SETS",
    "Config",
    "CredentialSet",
    "Credentials",
    "DatabaseSettings",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LoggingSettings",
    "MetricsSettings",
    "PROVIDER_MODES",
    "PROVIDER_TYPES",
    "ProviderSettings",
    "ScheduleSettings",
    "Secret",
    "SyncSettings",
    "credential_problems",
    "format_config_error",
    "load_config",
    "parse_config",
    "preferred_credential_set",
    "resolve_config_path",
]


class Secret:
    """A credential value, resolved at load time; never shown by ``repr`` or ``str``."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "literal") -> None:
        self._value = value
        self.source = source  # "literal", "env:VAR" or "file:PATH": safe to show

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<hidden, {self.source}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite:///var/lib/syncd/syncd.db"


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    interval_seconds: float = 300


@dataclass(frozen=True, slots=True)
class SyncSettings:
    conflict: str = "local"  # local | remote | newest | manual
    default_region: str = "IT"
    max_delete_fraction: float = 0.25
    log_retention_days: int = 90
    full_every: float = 86_400.0  # seconds between full runs (the safety net of change detection); default a day
    deletes: str = "propagate"  # propagate | approve | never: the default deletion policy of every provider


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"  # debug | info | warning | error
    format: str = "auto"  # auto | console | json


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    listen: str | None = None  # "host:port"; None = off


class CredentialSet(Enum):
    """One way a provider account signs in: an identity key and a secret key, in that order."""

    ACCESS_TOKEN = ("user_key", "access_token")
    PASSWORD = ("username", "password")
    SESSION_KEY = ("user_key", "session_key")
    API_KEY = ("username", "api_key")

    @property
    def keys(self) -> tuple[str, str]:
        """The two configuration keys of the set: ``(identity, secret)``."""
        identity, secret = self.value
        return identity, secret


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one account signs in with: which set, the identity (user_key or username) and the secret."""

    kind: CredentialSet
    identity: str
    secret: Secret


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    type: str  # smsend | sendhub
    base_url: str
    mode: str = "two-way"  # two-way | push | pull
    conflict: str | None = None  # overrides sync.conflict when set
    deletes: str | None = None  # overrides sync.deletes when set
    include_groups: tuple[str, ...] | None = None  # only contacts of these canonical groups are synced here
    exclude_groups: tuple[str, ...] = ()  # contacts of these canonical groups are not synced here
    requests_per_second: float = 5.0
    max_concurrency: int = 4
    batch_size: int = 500
    timeout_seconds: float = 30.0
    tls_verify: bool = True
    enabled: bool = True
    username: str | None = None
    user_key: str | None = None
    password: Secret | None = None
    access_token: Secret | None = None
    session_key: Secret | None = None
    api_key: Secret | None = None

    def secrets(self) -> list[str]:
        """Every secret value of this provider (for redaction)."""
        return [s.get() for s in (self.password, self.access_token, self.session_key, self.api_key) if s]

    @property
    def credentials(self) -> Credentials:
        """The credential set this account signs in with, and its values.

        A loaded configuration holds exactly one set of its type. Settings built
        in code may hold more: the one :data:`CREDENTIAL_SETS` prefers wins.
        Raises :class:`ConfigError` naming the provider when no set is complete.
        """
        identities = {"user_key": self.user_key, "username": self.username}
        secrets = {"password": self.password, "access_token": self.access_token,
                   "session_key": self.session_key, "api_key": self.api_key}
        given = [key for key, value in (identities | secrets).items() if value]
        kind = preferred_credential_set(self.type, given)
        if kind is None:
            raise ConfigError([f"provider {self.name!r}: {_describe_sets(self.type)}"])
        identity_key, secret_key = kind.keys
        identity, secret = identities[identity_key], secrets[secret_key]
        assert identity and secret  # the set is complete
        return Credentials(kind, identity, secret)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = None
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    providers: tuple[ProviderSettings, ...] = ()
    warnings: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        return [s for p in self.providers for s in p.secrets()]

    def conflict_for(self, provider: ProviderSettings) -> str:
        return provider.conflict or self.sync.conflict

    def deletes_for(self, provider: ProviderSettings) -> str:
        return provider.deletes or self.sync.deletes


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

#: Every provider type syncd has a client for (``syncd.providers.build_provider``).
PROVIDER_TYPES = ("smsend", "sendhub")
CONFLICT_POLICIES = ("local", "remote", "newest", "manual")
PROVIDER_MODES = ("two-way", "push", "pull")
DELETE_POLICIES = ("propagate", "approve", "never")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "console", "json")

#: smsend's "add multiple contacts" takes at most 1,000 contacts per request.
MAX_BATCH_SIZE = 1000

#: Keys whose values are credentials: resolved into :class:`Secret`, never shown.
SECRET_KEYS = ("password", "access_token", "session_key", "api_key")
#: Account identifiers: same three forms as a secret, resolved to plain text.
IDENTITY_KEYS = ("user_key", "username")
CREDENTIAL_KEYS = IDENTITY_KEYS + SECRET_KEYS

#: The credential sets each provider type accepts, preferred first.
CREDENTIAL_SETS: dict[str, tuple[CredentialSet, ...]] = {
    "smsend": (CredentialSet.ACCESS_TOKEN, CredentialSet.PASSWORD, CredentialSet.SESSION_KEY),
    "sendhub": (CredentialSet.API_KEY,),
}

CONFIG_ENV_VAR = "SYNCD_CONFIG"
LOCAL_CONFIG_PATH = Path("config.toml")
SYSTEM_CONFIG_PATH = Path("/etc/syncd/config.toml")

#: A secret file bigger than this is surely the wrong file (and /dev/zero must not hang us).
SECRET_FILE_MAX_BYTES = 64 * 1024

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


# --------------------------------------------------------------------------
# Finding and loading the file
# --------------------------------------------------------------------------


def resolve_config_path(cli_value: str | None, *, environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file to read.

    ``--config`` wins, then ``$SYNCD_CONFIG``, then ``./config.toml``, then
    ``/etc/syncd/config.toml``. A path named explicitly (option or variable)
    must exist: syncd never falls back past an operator's choice. Raises
    :class:`ConfigError` naming every path tried when none exists.
    """
    env = os.environ if environ is None else environ
    if cli_value:
        return _must_exist(Path(cli_value), "--config")
    if env.get(CONFIG_ENV_VAR):
        return _must_exist(Path(env[CONFIG_ENV_VAR]), f"${CONFIG_ENV_VAR}")
    tried = (LOCAL_CONFIG_PATH, SYSTEM_CONFIG_PATH)
    for candidate in tried:
        if candidate.is_file():
            return candidate
    names = ", ".join(str(path) for path in tried)
    raise ConfigError([f"no configuration file found (tried {names}; use --config or ${CONFIG_ENV_VAR})"])


def _must_exist(path: Path, origin: str) -> Path:
    if not path.exists():
        raise ConfigError([f"{path}: configuration file (from {origin}) does not exist"])
    return path


def load_config(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``.

    ``environ`` (default ``os.environ``) answers ``{ env = "VAR" }`` secrets.
    Raises :class:`ConfigError` listing every problem found.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: line {line}: the file is not UTF-8 text"]) from None
    return parse_config(text, path=path, environ=environ)


def parse_config(
    text: str, *, path: Path | str = "config.toml", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate TOML ``text`` as if read from ``path`` (used in messages and for relative files)."""
    path = Path(path)
    reader = _Reader(str(path), path.absolute().parent, os.environ if environ is None else environ)
    return reader.read(text, path)


def format_config_error(err: ConfigError) -> str:
    """The lines the command line prints for ``err``: one per problem."""
    return "\n".join(f"config error: {problem}" for problem in err.problems)


# --------------------------------------------------------------------------
# Values: each validator returns the value as syncd stores it or raises _Invalid
# --------------------------------------------------------------------------


class _Invalid(Exception):
    """One problem with one value. ``key`` names a sub-key (``env``) when the problem is inside it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


Validator = Callable[[Any], Any]

_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (dict, "table"),
    (_dt.datetime, "datetime"),
    (_dt.date, "date"),
    (_dt.time, "time"),
)


def _type_name(value: object) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    """``value`` as TOML would write it, cut to ``limit`` characters. Never call on a secret."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= limit else shown[: limit - 1] + "…"
    return f"a {_type_name(value)}"


def _format_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _join(path: str, key: str) -> str:
    return f"{path}.{_format_key(key)}" if path else _format_key(key)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, found {_type_name(value)}")
    return value


def _nonblank(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected a boolean (true or false), found {_type_name(value)}")
    return value


def _integer(value: object) -> int:
    # bool is an int subclass in Python but not in TOML: `batch_size = true` is a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, found {_type_name(value)}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number, found {_type_name(value)}")
    if not math.isfinite(value):
        raise _Invalid(f"must be a finite number, found {_show(value)}")
    return float(value)


def _checked(read: Validator, accept: Callable[[Any], bool], rule: str) -> Validator:
    """``read``, then refuse what ``accept`` rejects with "must be ``rule``"."""

    def validate(value: object) -> Any:
        result = read(value)
        if not accept(result):
            raise _Invalid(f"must be {rule}, found {_show(value)}")
        return result

    return validate


def _hint(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or nothing."""
    by_folded = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


def _one_of(options: tuple[str, ...]) -> Validator:
    def validate(value: object) -> str:
        text = _string(value)
        if text not in options:
            raise _Invalid(f"{_show(text)} is not one of {', '.join(options)}{_hint(text, options)}")
        return text

    return validate


def _group_names(value: object) -> tuple[str, ...]:
    """A list of canonical group names (matched trimmed and case-folded, as groups are)."""
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of group names, found {_type_name(value)}")
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _Invalid(f"every group name must be a non-empty string, found {_show(item)}")
        names.append(item)
    return tuple(names)


def _region(value: object) -> str:
    code = _string(value).strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise _Invalid(f"{_show(value)} is not a region code phonenumbers knows (two letters, e.g. IT, US, GB)")
    return code


def _listen(value: object) -> str:
    text = _string(value)
    host, colon, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if not colon or not host.strip() or (":" in host and not bracketed) or any(c.isspace() for c in host):
        raise _Invalid(f'must be "host:port" (e.g. "127.0.0.1:9464", "[::1]:9464"), found {_show(text)}')
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise _Invalid(f"port must be a number from 0 to 65535, found {_show(port)}")
    return text


def _http_url(value: object) -> str:
    # The URL is not echoed: it may carry user:password@ by mistake.
    text = _string(value)
    if any(c.isspace() or not c.isprintable() for c in text):
        raise _Invalid("must be a URL without spaces or control characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise _Invalid("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        found = _show(parts.scheme + ":") if parts.scheme else "no scheme"
        raise _Invalid(f"must be an http:// or https:// URL, found {found}")
    if not parts.hostname:
        raise _Invalid("must name a host (https://host/…)")
    return text


def _database_url(value: object) -> str:
    """A URL SQLAlchemy parses and has a dialect for; not echoed (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    text = _nonblank(value)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError, TypeError):
        raise _Invalid(
            "SQLAlchemy cannot parse this database URL "
            "(expected e.g. sqlite:///syncd.db or postgresql+psycopg://user@host/dbname)"
        ) from None
    try:
        url.get_dialect()
    except (NoSuchModuleError, ImportError):
        raise _Invalid(f"SQLAlchemy has no database driver {url.drivername!r}") from None
    return text


_positive_number = _checked(_number, lambda n: n > 0, "greater than 0")

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object) -> float:
    """Seconds, as a number or as text with a unit: ``"90s"``, ``"30m"``, ``"12h"``, ``"1d"``."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if not match:
            raise _Invalid(f'must be seconds or a duration such as "30m", "12h" or "1d", found {_show(value)}')
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        seconds = _number(value)
    if seconds <= 0:
        raise _Invalid("must be greater than 0")
    return seconds

_SECTIONS: dict[str, tuple[type, dict[str, Validator]]] = {
    "database": (DatabaseSettings, {"url": _database_url}),
    "schedule": (ScheduleSettings, {"interval_seconds": _positive_number}),
    "sync": (
        SyncSettings,
        {
            "conflict": _one_of(CONFLICT_POLICIES),
            "default_region": _region,
            "max_delete_fraction": _checked(_number, lambda n: 0 <= n <= 1, "between 0 and 1"),
            "log_retention_days": _checked(_integer, lambda n: n >= 1, "at least 1"),
            "full_every": _duration,
            "deletes": _one_of(DELETE_POLICIES),
        },
    ),
    "logging": (LoggingSettings, {"level": _one_of(LOG_LEVELS), "format": _one_of(LOG_FORMATS)}),
    "metrics": (MetricsSettings, {"listen": _listen}),
}

_PROVIDER_SCHEMA: dict[str, Validator] = {
    "name": _nonblank,
    "type": _one_of(PROVIDER_TYPES),
    "base_url": _http_url,
    "mode": _one_of(PROVIDER_MODES),
    "conflict": _one_of(CONFLICT_POLICIES),
    "deletes": _one_of(DELETE_POLICIES),
    "include_groups": _group_names,
    "exclude_groups": _group_names,
    "requests_per_second": _positive_number,
    "max_concurrency": _checked(_integer, lambda n: n >= 1, "at least 1"),
    "batch_size": _checked(_integer, lambda n: 1 <= n <= MAX_BATCH_SIZE, f"between 1 and {MAX_BATCH_SIZE}"),
    "timeout_seconds": _positive_number,
    "tls_verify": _boolean,
    "enabled": _boolean,
    **{key: _nonblank for key in CREDENTIAL_KEYS},
}
_PROVIDER_REQUIRED = ("name", "type", "base_url")

#: Keys that accept { env = … } / { file = … } besides a literal.
_INDIRECT_KEYS = frozenset({"url", *CREDENTIAL_KEYS})


# --------------------------------------------------------------------------
# Credentials: which keys a provider type needs, as a pure function
# --------------------------------------------------------------------------


def _describe_sets(provider_type: str) -> str:
    sets = [" and ".join(kind.keys) for kind in CREDENTIAL_SETS.get(provider_type, ())]
    if not sets:
        return f"{provider_type!r} is not a provider type ({', '.join(PROVIDER_TYPES)})"
    listed = sets[0] if len(sets) == 1 else ", ".join(sets[:-1]) + ", or " + sets[-1]
    return f"{provider_type} needs {listed}"


def preferred_credential_set(provider_type: str, present: Iterable[str]) -> CredentialSet | None:
    """The first set ``provider_type`` accepts whose keys are all ``present``; None when none is complete."""
    given = set(present)
    return next((kind for kind in CREDENTIAL_SETS.get(provider_type, ()) if set(kind.keys) <= given), None)


def credential_problems(provider_type: str, present: Iterable[str]) -> list[tuple[str | None, str]]:
    """What is wrong with the credential keys ``present`` for ``provider_type``.

    Each problem is ``(key or None, message)``. Keys of another provider type
    are errors; so is a second complete set; a missing key is named from the
    set the given keys come closest to.
    """
    given = [key for key in CREDENTIAL_KEYS if key in set(present)]
    sets = [kind.keys for kind in CREDENTIAL_SETS[provider_type]]
    needs = _describe_sets(provider_type)
    allowed = {key for keys in sets for key in keys}
    problems: list[tuple[str | None, str]] = [
        (key, f"not a {provider_type} credential ({needs})") for key in given if key not in allowed
    ]
    mine = [key for key in given if key in allowed]
    chosen = preferred_credential_set(provider_type, mine)
    if chosen is not None:
        problems += [
            (key, f"cannot be combined with {' + '.join(chosen.keys)}: give one credential set ({needs})")
            for key in mine
            if key not in chosen.keys
        ]
    elif not mine:
        problems.append((None, f"no credentials ({needs})"))
    else:
        closest = max(sets, key=lambda keys: len(set(keys) & set(mine)))
        problems += [(key, f"missing ({needs})") for key in closest if key not in mine]
    return problems


# --------------------------------------------------------------------------
# The reader: walks the document, collecting problems instead of stopping
# --------------------------------------------------------------------------


class _Reader:
    def __init__(self, label: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.label = label
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.label}: {where}: {message}")

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{self.label}: {where}: {message}")

    def read(self, text: str, path: Path) -> Config:
        document = self.parse(text)
        sections = self.read_sections(document)
        providers = self.read_providers(document.get("providers", []))
        if self.problems:
            raise ConfigError(self.problems)
        return Config(path=path, providers=tuple(providers), warnings=tuple(self.warnings), **sections)

    # -- TOML syntax --------------------------------------------------------

    def parse(self, text: str) -> dict[str, Any]:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self.problem(*_syntax_problem(exc, text))
        except RecursionError:
            self.problem(f"line {_deepest_line(text)}", "invalid TOML: arrays or tables nested too deeply")
        raise ConfigError(self.problems)

    # -- [database], [schedule], … ------------------------------------------

    def read_sections(self, document: dict[str, Any]) -> dict[str, Any]:
        for key in document:
            if key not in _SECTIONS and key != "providers":
                self.problem(_format_key(key), f"unknown key{_top_level_hint(key)}")
        sections = {}
        for name, (settings_type, schema) in _SECTIONS.items():
            raw = document.get(name, {})
            if not isinstance(raw, dict):
                self.problem(name, f"expected a table ([{name}]), found {_type_name(raw)}")
                continue
            sections[name] = settings_type(**self.read_table(raw, name, schema))
        return sections

    def read_table(self, raw: dict[str, Any], where: str, schema: dict[str, Validator]) -> dict[str, Any]:
        """The valid values of ``raw`` by key; a problem for each invalid or unknown key."""
        values = {}
        for key, value in raw.items():
            at = _join(where, key)
            validate = schema.get(key)
            if validate is None:
                self.problem(at, f"unknown key{_hint(key, schema)}")
                continue
            try:
                values[key] = self.read_value(key, value, validate)
            except _Invalid as exc:
                self.problem(_join(at, exc.key) if exc.key else at, str(exc))
        return values

    def read_value(self, key: str, value: object, validate: Validator) -> Any:
        if key not in _INDIRECT_KEYS:
            return validate(value)
        text, source = self.resolve(value)
        checked = validate(text)
        return Secret(checked, source) if key in SECRET_KEYS else checked

    # -- [[providers]] ------------------------------------------------------

    def read_providers(self, raw: object) -> list[ProviderSettings]:
        if isinstance(raw, dict):
            self.problem("providers", "expected an array of tables: write [[providers]], with two brackets")
            return []
        if not isinstance(raw, list):
            self.problem("providers", f"expected an array of tables ([[providers]]), found {_type_name(raw)}")
            return []
        providers = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            at = f"providers[{index}]"
            if not isinstance(item, dict):
                self.problem(at, f"expected a table, found {_type_name(item)}")
                continue
            before = len(self.problems)
            values = self.read_provider(item, at)
            self.check_unique_name(values.get("name"), index, seen)
            if len(self.problems) == before:
                providers.append(ProviderSettings(**values))
        return providers

    def read_provider(self, raw: dict[str, Any], at: str) -> dict[str, Any]:
        """The provider's valid settings by key; a problem for everything else."""
        values = self.read_table(raw, at, _PROVIDER_SCHEMA)
        for key in _PROVIDER_REQUIRED:
            if key not in raw:
                self.problem(_join(at, key), "missing")
        if values.get("type") in CREDENTIAL_SETS:
            self.check_credentials(raw, values, at)
        if values.get("tls_verify") is False:
            self.warn(_join(at, "tls_verify"), f"TLS verification is off for provider {_show(values.get('name', '?'))}")
        return values

    def check_credentials(self, raw: dict[str, Any], values: dict[str, Any], at: str) -> None:
        provider_type = values["type"]
        present = [key for key in CREDENTIAL_KEYS if key in raw]
        problems = credential_problems(provider_type, present)
        for key, message in problems:
            self.problem(_join(at, key) if key else at, message)
        if not problems and "session_key" in present:
            self.warn(
                _join(at, "session_key"),
                f"provider {_show(values.get('name', '?'))} uses an smsend session key, which expires "
                "after 5 idle minutes; prefer access_token, or username and password",
            )

    def check_unique_name(self, name: str | None, index: int, seen: dict[str, int]) -> None:
        # Names key rows in the database and lines in the logs: compare without case.
        if name is None:
            return
        folded = name.strip().casefold()
        if folded in seen:
            self.problem(
                f"providers[{index}].name",
                f"duplicate provider name {_show(name)} (also providers[{seen[folded]}].name)",
            )
        else:
            seen[folded] = index

    # -- secrets ------------------------------------------------------------

    def resolve(self, value: object) -> tuple[str, str]:
        """``(text, source)`` of a literal, ``{ env = … }`` or ``{ file = … }``. Never shows the value."""
        if isinstance(value, str):
            return value, "literal"
        if not isinstance(value, dict):
            raise _Invalid(f'expected a string, {{ env = "VAR" }} or {{ file = "PATH" }}, found {_type_name(value)}')
        for key in value:
            if key not in ("env", "file"):
                raise _Invalid(f"unknown key{_hint(key, ('env', 'file'))}; expected env or file", key=key)
        if len(value) != 1:
            raise _Invalid('expected exactly one of { env = "VAR" } or { file = "PATH" }')
        if "env" in value:
            return self.from_env(value["env"])
        return self.from_file(value["file"])

    def from_env(self, name: object) -> tuple[str, str]:
        try:
            name = _nonblank(name)
        except _Invalid as exc:
            raise _Invalid(f"{exc} (the name of an environment variable)", key="env") from None
        text = self.environ.get(name)
        if text is None:
            raise _Invalid(f"environment variable {name} is not set")
        if not text:
            raise _Invalid(f"environment variable {name} is empty")
        return text, f"env:{name}"

    def from_file(self, name: object) -> tuple[str, str]:
        try:
            name = _nonblank(name)
        except _Invalid as exc:
            raise _Invalid(f"{exc} (the path of a file)", key="file") from None
        path = Path(name)
        shown = name if path.is_absolute() else f"{name} ({self.base_dir / path})"
        text = _read_secret_file(path if path.is_absolute() else self.base_dir / path, shown)
        return text, f"file:{name}"


def _read_secret_file(path: Path, shown: str) -> str:
    """The file's text less one trailing newline; ``_Invalid`` naming ``shown`` when unusable."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise _Invalid(f"file {shown} is {kind}")
        with path.open("rb") as handle:
            data = handle.read(SECRET_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise _Invalid(f"file {shown} does not exist") from None
    except PermissionError:
        raise _Invalid(f"file {shown} cannot be read (permission denied)") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise _Invalid(f"file {shown} cannot be read ({reason})") from None
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise _Invalid(f"file {shown} is larger than {SECRET_FILE_MAX_BYTES // 1024} KiB; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(f"file {shown} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise _Invalid(f"file {shown} is empty")
    return text


def _top_level_hint(key: str) -> str:
    """A hint for an unknown top-level key: a close section name, or the section the key belongs to."""
    close = _hint(key, [*_SECTIONS, "providers"])
    if close:
        return close
    homes = [f"{name}.{key}" for name, (_, schema) in _SECTIONS.items() if key in schema]
    if homes:
        return f" (did you mean {homes[0]}?)"
    if key in _PROVIDER_SCHEMA:
        return " (it belongs in a [[providers]] table)"
    return ""


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str) -> tuple[str, str]:
    """``(where, message)`` for a TOML syntax error: the line and column, then tomllib's reason."""
    message = str(exc)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if match := _TOML_POSITION.search(message):
        line, column = int(match[1]), int(match[2])
        message = message[: match.start()]
    elif match := _TOML_AT_END.search(message):
        line, column = text.rstrip().count("\n") + 1, None
        message = message[: match.start()] + " at the end of the file"
    where = f"line {line or 1}" + (f", column {column}" if column else "")
    return where, f"invalid TOML: {message}"


def _deepest_line(text: str) -> int:
    """The line where bracket nesting first gets deep: roughly where the recursion gave up."""
    depth = 0
    for number, line in enumerate(text.splitlines() or [""], start=1):
        depth += sum(line.count(c) for c in "[{") - sum(line.count(c) for c in "]}")
        if depth > 100:
            return number
    return 1
