"""Fuzzing the configuration loader (issue 7): random TOML and broken copies of the example.

Whatever the input, :func:`syncd.config.load_config` either returns a
:class:`Config` or raises :class:`ConfigError` whose every problem names the
file and then a key of the document or a line; no other exception, and no
credential ever shown.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import string
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.config import (
    _PROVIDER_SCHEMA,
    _SECTIONS,
    SECRET_KEYS,
    Config,
    DatabaseSettings,
    load_config,
)
from syncd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_LINES = (REPO / "config.example.toml").read_text(encoding="utf-8").splitlines(keepends=True)

#: Every generated credential contains this; no message may ever show it.
SECRET_MARK = "zz-secret-"

#: A few hundred examples per test keep the pair well under 20 s on two cores.
#: A loaded hypothesis profile asking for more (e.g. a CI profile) wins.
BASE_EXAMPLES = 250


def fuzz_settings() -> settings:
    return settings(
        max_examples=max(BASE_EXAMPLES, settings().max_examples),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# -- a tiny TOML writer --------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, object]) -> str:
    """``document`` as TOML: plain keys first, then ``[table]`` and ``[[array of tables]]`` sections."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items() if not _is_section(v)]
    for key, value in document.items():
        if isinstance(value, dict):
            lines += [f"[{toml_key(key)}]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())]
        elif _is_section(value):
            for table in value:
                lines += [f"[[{toml_key(key)}]]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _is_section(value: object) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)
    )


# -- random documents -------------------------------------------------------------

KNOWN_KEYS = sorted(
    {*_SECTIONS, "providers", "env", "file", *_PROVIDER_SCHEMA}
    | {key for _, schema in _SECTIONS.values() for key in schema}
)
KNOWN_WORDS = [
    "local", "remote", "newest", "manual", "two-way", "push", "pull", "smsend", "sendhub", "debug", "info",
    "json", "auto", "IT", "us", "127.0.0.1:9464", "[::1]:0", "https://h.example/v1", "http://", "sqlite:///x.db",
    "sqlite://", "postgresql+psycopg://u@h/db", "mongodb://h", "VAR", "EMPTY", "a", "empty", "d", "missing", "",
]
ENV_NAMES = ["VAR", "EMPTY", "UNSET", ""]
FILE_NAMES = ["a", "empty", "d", "missing", "/nonexistent/secret", ""]

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))
secret_texts = st.text(string.ascii_letters, min_size=1, max_size=8).map(lambda s: SECRET_MARK + s)
leaves = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 1000, 1001, 65536]),
    st.floats(),
    st.sampled_from(KNOWN_WORDS),
    st.text(max_size=20),
    st.dates(),
)
indirect = st.one_of(
    st.fixed_dictionaries({"env": st.sampled_from(ENV_NAMES)}),
    st.fixed_dictionaries({"file": st.sampled_from(FILE_NAMES)}),
    st.dictionaries(st.sampled_from(["env", "file", "value"]), st.sampled_from(ENV_NAMES + FILE_NAMES), max_size=3),
)
values = st.recursive(
    st.one_of(leaves, indirect),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)

numbers = st.one_of(st.integers(min_value=-5, max_value=1100), st.floats(min_value=-2, max_value=2), st.floats())
#: For each known key, values near its valid range, so the fuzz reaches past the type checks.
PLAUSIBLE: dict[str, st.SearchStrategy[object]] = {
    "url": st.sampled_from(["sqlite:///x.db", "sqlite://", "postgresql+psycopg://u@h/db", "mongodb://h", "x", ""]),
    "interval_seconds": numbers,
    "requests_per_second": numbers,
    "timeout_seconds": numbers,
    "max_delete_fraction": numbers,
    "log_retention_days": numbers,
    "max_concurrency": numbers,
    "batch_size": numbers,
    "conflict": st.sampled_from(["local", "remote", "newest", "manual", "lcoal", "Local", ""]),
    "mode": st.sampled_from(["two-way", "push", "pull", "twoway", "both"]),
    "type": st.sampled_from(["smsend", "sendhub", "SMSend", "twilio"]),
    "level": st.sampled_from(["debug", "info", "warning", "error", "INFO", "trace"]),
    "format": st.sampled_from(["auto", "console", "json", "xml"]),
    "default_region": st.sampled_from(["IT", "us", "XX", "", "ITA", "001"]),
    "listen": st.sampled_from(["127.0.0.1:9464", "[::1]:0", "::1:80", ":80", "h:99999", "h:", "h:x", "h:٣"]),
    "name": st.sampled_from(["a", "A", "b", " ", ""]),
    "base_url": st.sampled_from(["https://h.example/v1", "http://h:1/", "ftp://h", "https://", "h", "http://[::1"]),
    "tls_verify": st.booleans(),
    "enabled": st.booleans(),
    **{key: st.one_of(secret_texts, indirect) for key in SECRET_KEYS},
    "user_key": st.one_of(st.just("UK"), indirect),
    "username": st.one_of(st.just("me"), indirect),
}
VALID_PROVIDERS = [
    {"name": "s", "type": "smsend", "base_url": "https://h.example", "user_key": "UK", "access_token": "t"},
    {"name": "s", "type": "smsend", "base_url": "https://h.example", "username": "me", "password": "p"},
    {"name": "s", "type": "smsend", "base_url": "https://h.example", "user_key": "UK", "session_key": "k"},
    {"name": "h", "type": "sendhub", "base_url": "https://h.example", "username": "me", "api_key": "k"},
]


def value_for(draw: Callable, key: str) -> object:
    # Credentials get marked literals (or env/file forms) so their secrecy can be checked.
    plausible = PLAUSIBLE.get(key)
    if plausible is not None and draw(st.integers(min_value=0, max_value=3)):
        return draw(plausible)
    return draw(secret_texts) if key in SECRET_KEYS else draw(values)


def entries(draw: Callable, known: list[str], size: int) -> dict[str, object]:
    """A table holding each ``known`` key or not, plus up to ``size`` arbitrary keys."""
    chosen = [key for key in known if draw(st.booleans())]
    chosen += draw(st.lists(keys, max_size=size, unique=True))
    return {key: value_for(draw, key) for key in dict.fromkeys(chosen)}


@st.composite
def providers(draw: Callable) -> dict[str, object]:
    """Mostly a valid provider with a few keys dropped, changed or added; sometimes anything."""
    if not draw(st.integers(min_value=0, max_value=3)):
        return entries(draw, list(_PROVIDER_SCHEMA), 2)
    provider = {k: (SECRET_MARK + k if k in SECRET_KEYS else v) for k, v in draw(st.sampled_from(VALID_PROVIDERS)).items()}
    for key in draw(st.lists(st.sampled_from(sorted(provider)), max_size=2, unique=True)):
        del provider[key]
    for key in draw(st.lists(st.one_of(st.sampled_from(list(_PROVIDER_SCHEMA)), keys), max_size=3, unique=True)):
        provider[key] = value_for(draw, key)
    return provider


@st.composite
def documents(draw: Callable) -> dict[str, object]:
    """Each known section or not (nearly always a table of its own keys), plus a few stray keys."""
    document: dict[str, object] = {}
    for name, (_, schema) in _SECTIONS.items():
        if draw(st.booleans()):
            rare = draw(st.integers(min_value=0, max_value=9)) == 0
            document[name] = draw(values) if rare else entries(draw, list(schema), 1)
    for key in draw(st.lists(keys, max_size=2, unique=True)):
        document[key] = value_for(draw, key)
    if draw(st.integers(min_value=0, max_value=3)):
        document["providers"] = draw(st.lists(providers(), min_size=1, max_size=3))
    return document


# -- broken copies of the example ---------------------------------------------------

flip_chars = st.one_of(st.sampled_from(list('[]{}="\'#.,\n \\0-+tfe_')), st.characters(exclude_categories=["Cs"]))


@st.composite
def mutated_example(draw: Callable) -> str:
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        # Most mutations hit a line that is not a comment: that is where values live.
        active = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
        anywhere = draw(st.booleans()) or not active
        index = draw(st.integers(min_value=0, max_value=max(0, len(lines) - 1)) if anywhere else st.sampled_from(active))
        kind = draw(st.sampled_from(["delete", "duplicate", "retype", "flip", "insert", "uncomment"]))
        if not lines or kind == "insert":
            key = draw(st.sampled_from(KNOWN_KEYS))
            lines.insert(index, f"{toml_key(key)} = {toml_value(draw(values))}\n")
        elif kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, lines[index])
        elif kind == "retype" and "=" in lines[index]:
            key = lines[index].split("=", 1)[0]
            lines[index] = f"{key}= {toml_value(value_for(draw, key.strip().removeprefix('# ')))}\n"
        elif kind == "uncomment":
            lines[index] = lines[index].removeprefix("# ")
        else:
            line = lines[index]
            at = draw(st.integers(min_value=0, max_value=max(0, len(line) - 1)))
            lines[index] = line[:at] + draw(flip_chars) + line[at + 1 :]
    return "".join(lines)


# -- the property --------------------------------------------------------------------


def make_secret_files(directory: Path) -> dict[str, str]:
    """Files the generated { file = … } forms point at, and the environment for { env = … }."""
    (directory / "a").write_text(SECRET_MARK + "file\n")
    (directory / "empty").write_text("")
    (directory / "d").mkdir()
    return {"VAR": SECRET_MARK + "env", "EMPTY": ""}


def key_prefixes(text: str) -> list[str]:
    """How each top-level key of ``text`` starts a key path in a message (TOML's own quoting)."""
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return []
    return [k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False) for k in document]


def check_loads_or_fails_cleanly(path: Path, text: str, environ: dict[str, str]) -> bool:
    """Write ``text`` to ``path`` and load it; True when it loaded. Asserts the contract either way."""
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path, environ=environ)
    except ConfigError as err:
        assert err.problems, "a ConfigError must list at least one problem"
        prefixes = key_prefixes(text)
        for problem in err.problems:
            assert SECRET_MARK not in problem, problem
            rest = problem.removeprefix(f"{path}: ")
            assert rest != problem, f"problem does not name the file: {problem!r}"
            names_line = re.match(r"line \d+(, column \d+)?: \S", rest)
            names_key = any(re.match(re.escape(p) + r"[.\[:]", rest) for p in prefixes)
            assert names_line or names_key, f"problem names neither a key nor a line: {problem!r}"
        return False
    assert isinstance(config, Config)
    # user_key, username and database.url are plain text by contract (they may come
    # from the same env/file as a secret here), so only the rest must hide the mark.
    plain = replace(
        config,
        database=DatabaseSettings(),
        providers=tuple(replace(p, user_key=None, username=None) for p in config.providers),
    )
    shown = " ".join([repr(plain), str(plain), *config.warnings])
    assert SECRET_MARK not in shown
    return True


def run_fuzz(strategy: st.SearchStrategy[str]) -> tuple[set[str], set[str]]:
    """Every distinct text tried, and those that loaded."""
    tried: set[str] = set()
    loaded: set[str] = set()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        environ = make_secret_files(directory)

        @fuzz_settings()
        @given(strategy)
        def check(text: str) -> None:
            tried.add(text)
            if check_loads_or_fails_cleanly(directory / "config.toml", text, environ):
                loaded.add(text)

        check()
    return tried, loaded


def test_random_toml_documents_load_or_fail_naming_a_key() -> None:
    tried, loaded = run_fuzz(documents().map(toml_document))

    malformed = tried - loaded
    print(f"random documents: {len(tried)} distinct, {len(malformed)} rejected cleanly, {len(loaded)} loaded")
    assert len(malformed) >= BASE_EXAMPLES // 2


def test_mutated_example_config_loads_or_fails_naming_a_key_or_line() -> None:
    tried, loaded = run_fuzz(mutated_example())

    malformed = tried - loaded
    print(f"mutated example: {len(tried)} distinct, {len(malformed)} rejected cleanly, {len(loaded)} loaded")
    assert len(malformed) >= BASE_EXAMPLES // 4
    assert loaded, "some mutations (a deleted comment, say) must still load"


def test_the_toml_writer_round_trips() -> None:
    """The fuzz is only as good as its writer: what it writes, tomllib reads back."""

    @settings(max_examples=100, deadline=None)
    @given(documents())
    def check(document: dict[str, object]) -> None:
        parsed = tomllib.loads(toml_document(document))
        assert toml_document(parsed) == toml_document(document)

    check()
