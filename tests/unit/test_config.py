"""The configuration loader: every bad-config case of issue 2, one test each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncd import config as config_module
from syncd.config import (
    CREDENTIAL_SETS,
    PROVIDER_TYPES,
    Config,
    CredentialSet,
    Credentials,
    DatabaseSettings,
    ProviderSettings,
    Secret,
    SyncSettings,
    credential_problems,
    format_config_error,
    load_config,
    parse_config,
    resolve_config_path,
)
from syncd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

SMSEND = """
[[providers]]
name = "sms"
type = "smsend"
base_url = "https://sms.example/API/v1.0/REST"
"""
SENDHUB = """
[[providers]]
name = "hub"
type = "sendhub"
base_url = "https://hub.example/v1"
"""
VALID = f"""
[database]
url = "sqlite:///syncd.db"
{SMSEND}
user_key = "UK-1"
access_token = "AT-topsecret-1"
{SENDHUB}
username = "me"
api_key = "API-topsecret-2"
"""


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ=environ or {})


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    path = str(tmp_path / "config.toml")
    assert all(p.startswith(f"{path}: ") for p in caught.value.problems), caught.value.problems
    # Drop the file prefix so assertions read like the messages the operator sees.
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


def with_sync(body: str) -> str:
    return f"[sync]\n{body}\n{VALID}"


# -- what loads ---------------------------------------------------------------


def test_example_config_loads_without_any_environment() -> None:
    config = load_config(REPO / "config.example.toml", environ={})

    assert config.path == REPO / "config.example.toml"
    assert config.database.url == "sqlite:///syncd.db"
    assert [(p.name, p.type) for p in config.providers] == [("smsend-main", "smsend"), ("sendhub", "sendhub")]
    assert config.providers[0].access_token == Secret("ACCESS_TOKEN")
    assert config.providers[1].api_key == Secret("API_KEY")
    assert config.warnings == ()


def test_absent_sections_take_the_dataclass_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, f'{SENDHUB}\nusername = "me"\napi_key = "k"\n')

    assert config.database == DatabaseSettings()
    assert config.sync == SyncSettings()
    assert config.schedule.interval_seconds == 300
    assert config.metrics.listen is None
    provider = config.providers[0]
    assert (provider.mode, provider.batch_size, provider.tls_verify, provider.enabled) == ("two-way", 500, True, True)
    assert config.conflict_for(provider) == "local"


def test_an_empty_file_is_a_valid_config_with_no_providers(tmp_path: Path) -> None:
    assert load(tmp_path, "").providers == ()


def test_values_are_converted_to_their_declared_types(tmp_path: Path) -> None:
    text = f"""
[schedule]
interval_seconds = 60
[sync]
default_region = "us"
max_delete_fraction = 1
[metrics]
listen = "[::1]:9464"
{SENDHUB}
username = "me"
api_key = "k"
requests_per_second = 2
timeout_seconds = 7
conflict = "remote"
enabled = false
"""
    config = load(tmp_path, text)

    assert config.schedule.interval_seconds == 60.0 and isinstance(config.schedule.interval_seconds, float)
    assert config.sync.default_region == "US"
    assert config.sync.max_delete_fraction == 1.0
    assert config.metrics.listen == "[::1]:9464"
    provider = config.providers[0]
    assert isinstance(provider.requests_per_second, float) and isinstance(provider.timeout_seconds, float)
    assert config.conflict_for(provider) == "remote"
    assert provider.enabled is False


# -- TOML syntax ----------------------------------------------------------------


def test_invalid_toml_syntax_names_line_and_column(tmp_path: Path) -> None:
    found = problems(tmp_path, '[sync]\nconflict = "local"\nmax_delete_fraction = = 0.3\n')

    assert len(found) == 1
    assert found[0].startswith("line 3, column 23: invalid TOML: ")


def test_invalid_toml_at_the_end_names_the_last_line(tmp_path: Path) -> None:
    found = problems(tmp_path, '[sync]\nconflict = "local"\nlog_retention_days =')

    assert found == ["line 3: invalid TOML: Invalid value at the end of the file"]


def test_duplicate_toml_key_is_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, '[sync]\nconflict = "local"\nconflict = "remote"\n')

    assert found[0].startswith("line 3")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[sync]\nconflict = "local"\n# caf\xe9\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    assert caught.value.problems == [f"{path}: line 3: the file is not UTF-8 text"]


def test_nesting_too_deep_for_the_parser_is_a_config_error(tmp_path: Path) -> None:
    found = problems(tmp_path, "[sync]\nx = " + "[" * 5000 + "\n")

    assert found == ["line 2: invalid TOML: arrays or tables nested too deeply"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")

    assert caught.value.problems == [f"{tmp_path / 'absent.toml'}: cannot read the configuration file: No such file or directory"]


# -- unknown keys ---------------------------------------------------------------


def test_unknown_key_in_a_section_gets_a_did_you_mean_hint(tmp_path: Path) -> None:
    found = problems(tmp_path, with_sync('conflit = "local"'))

    assert found == ["sync.conflit: unknown key (did you mean 'conflict'?)"]


def test_unknown_key_at_top_level(tmp_path: Path) -> None:
    found = problems(tmp_path, f'colour = "blue"\nprovider = []\n{VALID}')

    assert found == ["colour: unknown key", "provider: unknown key (did you mean 'providers'?)"]


def test_a_section_key_written_at_top_level_is_pointed_to_its_section(tmp_path: Path) -> None:
    found = problems(tmp_path, f'interval_seconds = 60\n{VALID}')

    assert found == ["interval_seconds: unknown key (did you mean schedule.interval_seconds?)"]


def test_unknown_key_in_a_provider(tmp_path: Path) -> None:
    found = problems(tmp_path, f'{SENDHUB}\nusername = "me"\napi_key = "k"\nbatchsize = 10\nwebhook = "x"\n')

    assert found == [
        "providers[0].batchsize: unknown key (did you mean 'batch_size'?)",
        "providers[0].webhook: unknown key",
    ]


def test_a_key_that_is_not_bare_is_quoted_in_the_path(tmp_path: Path) -> None:
    found = problems(tmp_path, with_sync('"max delete fraction" = 1\n"a.b" = 2'))

    assert found == ['sync."max delete fraction": unknown key (did you mean \'max_delete_fraction\'?)', 'sync."a.b": unknown key']


# -- wrong types ----------------------------------------------------------------


def test_wrong_type_names_the_expected_and_found_types(tmp_path: Path) -> None:
    found = problems(tmp_path, f'[schedule]\ninterval_seconds = "300"\n{VALID}')

    assert found == ["schedule.interval_seconds: expected a number, found string"]


def test_a_boolean_is_not_an_integer(tmp_path: Path) -> None:
    found = problems(tmp_path, f"{VALID}\nbatch_size = true\n")

    assert found == ["providers[1].batch_size: expected an integer, found boolean"]


def test_a_float_is_not_an_integer(tmp_path: Path) -> None:
    found = problems(tmp_path, with_sync("log_retention_days = 1.5"))

    assert found == ["sync.log_retention_days: expected an integer, found float"]


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    found = problems(tmp_path, f'logging = "debug"\n{VALID}')

    assert found == ['logging: expected a table ([logging]), found string']


def test_providers_written_as_a_single_table(tmp_path: Path) -> None:
    found = problems(tmp_path, '[providers]\nname = "x"\n')

    assert found == ["providers: expected an array of tables: write [[providers]], with two brackets"]


def test_providers_array_holding_something_else(tmp_path: Path) -> None:
    found = problems(tmp_path, 'providers = [1, "two"]\n')

    assert found == ["providers[0]: expected a table, found integer", "providers[1]: expected a table, found string"]


# -- values out of range ----------------------------------------------------------


def test_negative_interval(tmp_path: Path) -> None:
    found = problems(tmp_path, f"[schedule]\ninterval_seconds = -5\n{VALID}")

    assert found == ["schedule.interval_seconds: must be greater than 0, found -5"]


@pytest.mark.parametrize("fraction", ["1.5", "-0.1"])
def test_max_delete_fraction_outside_zero_to_one(tmp_path: Path, fraction: str) -> None:
    found = problems(tmp_path, with_sync(f"max_delete_fraction = {fraction}"))

    assert found == [f"sync.max_delete_fraction: must be between 0 and 1, found {fraction}"]


def test_unknown_conflict_policy_with_hint(tmp_path: Path) -> None:
    found = problems(tmp_path, with_sync('conflict = "lcoal"'))

    assert found == ['sync.conflict: "lcoal" is not one of local, remote, newest, manual (did you mean \'local\'?)']


def test_unknown_provider_conflict_policy(tmp_path: Path) -> None:
    found = problems(tmp_path, f'{VALID}\nconflict = "theirs"\n')

    assert found == ['providers[1].conflict: "theirs" is not one of local, remote, newest, manual']


def test_unknown_mode(tmp_path: Path) -> None:
    found = problems(tmp_path, f'{VALID}\nmode = "twoway"\n')

    assert found == ["providers[1].mode: \"twoway\" is not one of two-way, push, pull (did you mean 'two-way'?)"]


def test_unknown_provider_type(tmp_path: Path) -> None:
    text = '[[providers]]\nname = "x"\ntype = "twilio"\nbase_url = "https://x.example"\n'

    assert problems(tmp_path, text) == ['providers[0].type: "twilio" is not one of smsend, sendhub']


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("batch_size = 0", "providers[1].batch_size: must be between 1 and 1000, found 0"),
        ("batch_size = 1001", "providers[1].batch_size: must be between 1 and 1000, found 1001"),
        ("max_concurrency = 0", "providers[1].max_concurrency: must be at least 1, found 0"),
        ("requests_per_second = 0", "providers[1].requests_per_second: must be greater than 0, found 0"),
        ("timeout_seconds = -1.5", "providers[1].timeout_seconds: must be greater than 0, found -1.5"),
        ("timeout_seconds = inf", "providers[1].timeout_seconds: must be a finite number, found inf"),
        ('name = "  "', "providers[1].name: must not be empty"),
        ('base_url = "ftp://hub.example"', 'providers[1].base_url: must be an http:// or https:// URL, found "ftp:"'),
        ('base_url = "https://"', "providers[1].base_url: must name a host (https://host/…)"),
        ('base_url = "https://h:port/"', "providers[1].base_url: is not a valid URL"),
        ("tls_verify = 0", "providers[1].tls_verify: expected a boolean (true or false), found integer"),
    ],
)
def test_provider_values_out_of_range(tmp_path: Path, line: str, expected: str) -> None:
    assert problems(tmp_path, in_last_provider(line)) == [expected]


def in_last_provider(line: str) -> str:
    """VALID with ``line`` set in its last provider, replacing that key's line if there is one."""
    key = line.split("=")[0].strip()
    head, _, last = VALID.rpartition("[[providers]]")
    kept = [row for row in last.splitlines() if row.split("=")[0].strip() != key]
    return head + "[[providers]]" + "\n".join([*kept, line]) + "\n"


@pytest.mark.parametrize(
    ("section", "line", "expected"),
    [
        ("sync", "log_retention_days = 0", "sync.log_retention_days: must be at least 1, found 0"),
        ("sync", 'default_region = "XX"', 'sync.default_region: "XX" is not a region code phonenumbers knows (two letters, e.g. IT, US, GB)'),
        ("schedule", "interval_seconds = nan", "schedule.interval_seconds: must be a finite number, found nan"),
        ("logging", 'level = "verbose"', 'logging.level: "verbose" is not one of debug, info, warning, error'),
        ("logging", 'format = "JSON"', "logging.format: \"JSON\" is not one of auto, console, json (did you mean 'json'?)"),
        ("metrics", 'listen = "9464"', 'metrics.listen: must be "host:port" (e.g. "127.0.0.1:9464", "[::1]:9464"), found "9464"'),
        ("metrics", 'listen = "0.0.0.0:70000"', 'metrics.listen: port must be a number from 0 to 65535, found "70000"'),
        ("metrics", 'listen = "::1:9464"', 'metrics.listen: must be "host:port" (e.g. "127.0.0.1:9464", "[::1]:9464"), found "::1:9464"'),
    ],
)
def test_section_values_out_of_range(tmp_path: Path, section: str, line: str, expected: str) -> None:
    assert problems(tmp_path, f"[{section}]\n{line}\n{VALID}") == [expected]


# -- providers as a set -------------------------------------------------------------


def test_duplicate_provider_names_name_both_indexes(tmp_path: Path) -> None:
    third = '[[providers]]\nname = "SMS"\ntype = "sendhub"\nbase_url = "https://x.example"\nusername = "u"\napi_key = "k"\n'

    found = problems(tmp_path, VALID + third)

    assert found == ['providers[2].name: duplicate provider name "SMS" (also providers[0].name)']


def test_required_provider_keys_are_missing(tmp_path: Path) -> None:
    assert problems(tmp_path, "[[providers]]\n") == [
        "providers[0].name: missing",
        "providers[0].type: missing",
        "providers[0].base_url: missing",
    ]


# -- credentials per provider type -------------------------------------------------


def test_sendhub_without_api_key(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('api_key = "API-topsecret-2"', ""))

    assert found == ["providers[1].api_key: missing (sendhub needs username and api_key)"]


SMSEND_NEEDS = "smsend needs user_key and access_token, username and password, or user_key and session_key"


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ('user_key = "UK"', [f"providers[0].access_token: missing ({SMSEND_NEEDS})"]),
        ('username = "me"', [f"providers[0].password: missing ({SMSEND_NEEDS})"]),
        ('password = "pw"', [f"providers[0].username: missing ({SMSEND_NEEDS})"]),
        ('access_token = "t"', [f"providers[0].user_key: missing ({SMSEND_NEEDS})"]),
        ('session_key = "s"', [f"providers[0].user_key: missing ({SMSEND_NEEDS})"]),
        ("", [f"providers[0]: no credentials ({SMSEND_NEEDS})"]),
    ],
)
def test_smsend_with_an_incomplete_credential_set(tmp_path: Path, credentials: str, expected: list[str]) -> None:
    assert problems(tmp_path, f"{SMSEND}\n{credentials}\n") == expected


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ('user_key = "UK"\naccess_token = "t"', Credentials(CredentialSet.ACCESS_TOKEN, "UK", Secret("t"))),
        ('username = "me"\npassword = "pw"', Credentials(CredentialSet.PASSWORD, "me", Secret("pw"))),
        ('user_key = "UK"\nsession_key = "s"', Credentials(CredentialSet.SESSION_KEY, "UK", Secret("s"))),
    ],
)
def test_each_smsend_credential_set_loads(tmp_path: Path, credentials: str, expected: Credentials) -> None:
    assert load(tmp_path, f"{SMSEND}\n{credentials}\n").providers[0].credentials == expected


def test_sendhub_credentials_are_its_username_and_api_key(tmp_path: Path) -> None:
    assert load(tmp_path, VALID).providers[1].credentials == Credentials(
        CredentialSet.API_KEY, "me", Secret("API-topsecret-2"))


def test_settings_built_in_code_with_several_sets_sign_in_with_the_preferred_one() -> None:
    settings = ProviderSettings(name="sms", type="smsend", base_url="https://sms.example", user_key="UK",
                                session_key=Secret("s"), username="me", password=Secret("pw"))

    assert settings.credentials.kind is CredentialSet.PASSWORD


@pytest.mark.parametrize(
    ("provider_type", "given", "message"),
    [
        ("smsend", {"user_key": "UK"}, f"provider 'sms': {SMSEND_NEEDS}"),
        ("sendhub", {"username": "me", "password": Secret("pw")}, "provider 'sms': sendhub needs username and api_key"),
        ("fax", {}, "provider 'sms': 'fax' is not a provider type (smsend, sendhub)"),
    ],
)
def test_settings_without_a_complete_set_have_no_credentials(provider_type: str, given: dict, message: str) -> None:
    settings = ProviderSettings(name="sms", type=provider_type, base_url="https://sms.example", **given)

    with pytest.raises(ConfigError) as caught:
        settings.credentials
    assert caught.value.problems == [message]


def test_every_provider_type_has_credential_sets_and_a_client() -> None:
    from syncd.providers import build_provider

    assert tuple(CREDENTIAL_SETS) == PROVIDER_TYPES
    for provider_type, (preferred, *_) in CREDENTIAL_SETS.items():
        identity, secret = preferred.keys
        settings = ProviderSettings(name="p", type=provider_type, base_url="http://127.0.0.1:9",
                                    **{identity: "id", secret: Secret("s")})
        assert build_provider(settings).name == "p"


def test_config_imports_no_provider_client() -> None:
    # Config owns the provider vocabulary; the clients import config, never the other way round.
    code = "import sys, syncd.config; print(sorted(m for m in sys.modules if m.startswith('syncd.providers')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


def test_session_key_is_accepted_with_a_warning(tmp_path: Path) -> None:
    config = load(tmp_path, f'{SMSEND}\nuser_key = "UK"\nsession_key = "SK-topsecret-3"\n')

    assert config.providers[0].session_key == Secret("SK-topsecret-3")
    assert len(config.warnings) == 1
    warning = config.warnings[0]
    assert warning.startswith(f"{tmp_path / 'config.toml'}: providers[0].session_key: ")
    assert "expires after 5 idle minutes" in warning and "prefer access_token" in warning
    assert "SK-topsecret-3" not in warning


def test_a_credential_of_another_provider_type_is_an_error(tmp_path: Path) -> None:
    found = problems(tmp_path, f'{SMSEND}\nuser_key = "UK"\naccess_token = "t"\napi_key = "k"\n')

    assert found == [f"providers[0].api_key: not a smsend credential ({SMSEND_NEEDS})"]


def test_two_credential_sets_at_once_is_an_error(tmp_path: Path) -> None:
    found = problems(tmp_path, f'{SMSEND}\nuser_key = "UK"\naccess_token = "t"\nsession_key = "s"\n')

    assert found == [
        f"providers[0].session_key: cannot be combined with user_key + access_token: give one credential set ({SMSEND_NEEDS})"
    ]


def test_credential_rules_as_a_pure_function() -> None:
    assert credential_problems("sendhub", ["username", "api_key"]) == []
    assert credential_problems("sendhub", ["username", "api_key", "password"]) == [
        ("password", "not a sendhub credential (sendhub needs username and api_key)")
    ]


def test_tls_verify_off_is_warned_about(tmp_path: Path) -> None:
    config = load(tmp_path, f"{VALID}\ntls_verify = false\n")

    assert config.providers[1].tls_verify is False
    assert config.warnings == (f"{tmp_path / 'config.toml'}: providers[1].tls_verify: TLS verification is off for provider \"hub\"",)


# -- secrets from the environment and from files -----------------------------------


def test_secret_from_the_environment(tmp_path: Path) -> None:
    text = VALID.replace('"API-topsecret-2"', '{ env = "HUB_KEY" }').replace('"me"', '{ env = "HUB_USER" }')

    provider = load(tmp_path, text, {"HUB_KEY": "from-env", "HUB_USER": "alice"}).providers[1]

    assert provider.api_key.get() == "from-env" and provider.api_key.source == "env:HUB_KEY"
    assert provider.username == "alice"


def test_env_naming_an_unset_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', '{ env = "HUB_KEY" }'), {"OTHER": "x"})

    assert found == ["providers[1].api_key: environment variable HUB_KEY is not set"]


def test_env_naming_an_empty_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', '{ env = "HUB_KEY" }'), {"HUB_KEY": ""})

    assert found == ["providers[1].api_key: environment variable HUB_KEY is empty"]


def test_secret_from_a_file_relative_to_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "hub").write_text("from-file\n")
    text = VALID.replace('"API-topsecret-2"', '{ file = "creds/hub" }')

    provider = load(tmp_path, text).providers[1]

    assert provider.api_key.get() == "from-file"
    assert provider.api_key.source == "file:creds/hub"


def test_file_naming_a_missing_file(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', '{ file = "/run/credentials/none/hub" }'))

    assert found == ["providers[1].api_key: file /run/credentials/none/hub does not exist"]


def test_file_naming_a_directory(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()

    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', '{ file = "creds" }'))

    assert found == [f"providers[1].api_key: file creds ({tmp_path / 'creds'}) is a directory"]


def test_file_without_read_permission(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root from reading (see the directory case)")
    secret = tmp_path / "hub"
    secret.write_text("x")
    secret.chmod(0)

    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', f'{{ file = "{secret}" }}'))

    assert found == [f"providers[1].api_key: file {secret} cannot be read (permission denied)"]


def test_file_refused_by_the_operating_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission-denied path, simulated: root (as the tests run) can read a chmod 000 file."""
    secret = tmp_path / "hub"
    secret.write_text("x")
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object):
        if self == secret:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)

    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', f'{{ file = "{secret}" }}'))

    assert found == [f"providers[1].api_key: file {secret} cannot be read (permission denied)"]


def test_file_that_is_empty(tmp_path: Path) -> None:
    (tmp_path / "hub").write_text("\n")

    found = problems(tmp_path, VALID.replace('"API-topsecret-2"', f'{{ file = "{tmp_path / "hub"}" }}'))

    assert found == [f"providers[1].api_key: file {tmp_path / 'hub'} is empty"]


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ('{ env = "A", file = "b" }', 'providers[1].api_key: expected exactly one of { env = "VAR" } or { file = "PATH" }'),
        ('{ enc = "A" }', "providers[1].api_key.enc: unknown key (did you mean 'env'?); expected env or file"),
        ("{ env = 5 }", "providers[1].api_key.env: expected a string, found integer (the name of an environment variable)"),
        ("12345", 'providers[1].api_key: expected a string, { env = "VAR" } or { file = "PATH" }, found integer'),
        ('""', "providers[1].api_key: must not be empty"),
    ],
)
def test_malformed_secret_forms(tmp_path: Path, form: str, expected: str) -> None:
    assert problems(tmp_path, VALID.replace('"API-topsecret-2"', form)) == [expected]


# -- database URL ------------------------------------------------------------------


def test_database_url_sqlalchemy_cannot_parse(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('"sqlite:///syncd.db"', '"not a url"'))

    assert found == [
        "database.url: SQLAlchemy cannot parse this database URL "
        "(expected e.g. sqlite:///syncd.db or postgresql+psycopg://user@host/dbname)"
    ]


def test_database_url_with_an_unknown_driver(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('"sqlite:///syncd.db"', '"mongodb://h/db"'))

    assert found == ["database.url: SQLAlchemy has no database driver 'mongodb'"]


def test_database_url_message_never_echoes_the_url(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace('"sqlite:///syncd.db"', '"postgresql://u:pw-topsecret@h:port/db"'))

    assert len(found) == 1 and "pw-topsecret" not in found[0]


def test_database_url_from_the_environment_keeps_a_relative_sqlite_path(tmp_path: Path) -> None:
    text = VALID.replace('"sqlite:///syncd.db"', '{ env = "DB" }')

    assert load(tmp_path, text, {"DB": "sqlite:///data/syncd.db"}).database.url == "sqlite:///data/syncd.db"


# -- all at once, and secrecy -------------------------------------------------------


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = f"""
[schedule]
interval_seconds = -1
[sync]
conflict = "mine"
{SMSEND}
user_key = "UK"
{SENDHUB}
usernme = "me"
api_key = {{ env = "NOPE" }}
[[providers]]
name = "sms"
type = "sendhub"
base_url = "https://x.example"
username = "u"
api_key = "k"
"""
    found = problems(tmp_path, text)

    assert found == [
        "schedule.interval_seconds: must be greater than 0, found -1",
        'sync.conflict: "mine" is not one of local, remote, newest, manual',
        f"providers[0].access_token: missing ({SMSEND_NEEDS})",
        "providers[1].usernme: unknown key (did you mean 'username'?)",
        "providers[1].api_key: environment variable NOPE is not set",
        "providers[1].username: missing (sendhub needs username and api_key)",
        'providers[2].name: duplicate provider name "sms" (also providers[0].name)',
    ]


def test_format_config_error_prints_one_line_per_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, with_sync('conflict = "x"\nwhat = 1'))

    lines = format_config_error(caught.value).splitlines()

    assert len(lines) == 2
    assert all(line.startswith(f"config error: {tmp_path / 'config.toml'}: sync.") for line in lines)


def test_secrets_never_appear_in_repr_str_or_warnings(tmp_path: Path) -> None:
    text = VALID.replace('"AT-topsecret-1"', '"SK-topsecret-1"').replace("access_token", "session_key")
    text += "\ntls_verify = false\n"

    config = load(tmp_path, text)

    shown = " ".join([repr(config), str(config), *config.warnings, *map(repr, config.providers)])
    assert len(config.warnings) == 2
    for secret in ("SK-topsecret-1", "API-topsecret-2"):
        assert secret in config.secrets()
        assert secret not in shown


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = f"""
{SMSEND}
user_key = "UK"
password = "PW-topsecret-1"
access_token = "AT-topsecret-2"
acess_token = "AT-topsecret-3"
{SENDHUB}
username = "me"
api_key = 4242424242
session_key = "SK-topsecret-4"
"""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)

    shown = str(caught.value) + repr(caught.value)
    assert len(caught.value.problems) == 4
    for secret in ("PW-topsecret-1", "AT-topsecret-2", "AT-topsecret-3", "4242424242", "SK-topsecret-4"):
        assert secret not in shown


def test_parse_config_reads_text_directly() -> None:
    config = parse_config(VALID, path="/etc/syncd/config.toml", environ={})

    assert config.path == Path("/etc/syncd/config.toml")
    assert isinstance(config.providers[0], ProviderSettings)


# -- where the file is --------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and a stand-in for /etc/syncd/config.toml, both empty."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "etc").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG_PATH", tmp_path / "etc" / "config.toml")
    return tmp_path


def test_config_path_resolution_order(places: Path) -> None:
    explicit = write(places, "", "explicit.toml")
    from_env = write(places, "", "env.toml")
    system = write(places / "etc", "")

    assert resolve_config_path(None, environ={}) == system
    local = write(places / "cwd", "")
    assert resolve_config_path(None, environ={}) == Path("config.toml")
    assert local.is_file()
    assert resolve_config_path(None, environ={"SYNCD_CONFIG": str(from_env)}) == from_env
    assert resolve_config_path(str(explicit), environ={"SYNCD_CONFIG": str(from_env)}) == explicit


def test_no_config_file_anywhere_names_the_paths_tried(places: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config_path(None, environ={})

    (message,) = caught.value.problems
    assert "config.toml" in message and str(places / "etc" / "config.toml") in message


def test_an_explicit_path_that_does_not_exist_is_not_skipped(places: Path) -> None:
    write(places / "cwd", "")

    with pytest.raises(ConfigError) as caught:
        resolve_config_path(None, environ={"SYNCD_CONFIG": "/nowhere.toml"})

    assert caught.value.problems == ["/nowhere.toml: configuration file (from $SYNCD_CONFIG) does not exist"]


def test_config_module_imports_neither_httpx_nor_structlog() -> None:
    code = "import sys, syncd.config; print(sorted(m for m in ('httpx', 'structlog', 'sqlalchemy') if m in sys.modules))"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("written", "seconds"), [("3600", 3600.0), ('"90s"', 90.0), ('"30m"', 1800.0),
                                                   ('"12h"', 43200.0), ('"1d"', 86400.0), ('"1.5h"', 5400.0)])
def test_full_every_takes_seconds_or_a_duration(tmp_path: Path, written: str, seconds: float) -> None:
    assert load(tmp_path, with_sync(f"full_every = {written}")).sync.full_every == seconds


@pytest.mark.parametrize("written", ['"daily"', '"1w"', "0", '"-1h"', "true"])
def test_a_full_every_that_is_no_duration_is_refused_naming_the_key(tmp_path: Path, written: str) -> None:
    [problem] = problems(tmp_path, with_sync(f"full_every = {written}"))
    assert problem.startswith("sync.full_every: ")
