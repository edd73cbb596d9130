"""Load the exporter-toolkit ``--web.config.file`` (TLS, basic auth, response headers)."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.config import inputs, yamlfile
from exporter.errors import ConfigError
from exporter.config.yamlfile import field_name, show

# The file format is prometheus/exporter-toolkit's docs/web-configuration.md, so that one web
# config file works for node_exporter, blackbox_exporter and this exporter alike.

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)

# Python's ssl module cannot ask for a client certificate without verifying it, so the two
# Go modes that accept any certificate verify it here (against client_ca_file or the system
# CAs): stricter than exporter-toolkit, never looser.
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,  # old name exporter-toolkit still accepts
}

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# exporter-toolkit lets only these headers be configured, and pins the values of two of them
# (None = any value); keeping the same list keeps one file valid for every exporter.
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}
_HTTP_KEYS = {"headers"}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
# Keys exporter-toolkit knows but this exporter does not implement: named as such rather
# than as "unknown", so a file copied from node_exporter gets a useful message.
_UNSUPPORTED = {
    "": {"rate_limit"},
    "tls_server_config": {"cert", "key", "client_ca", "client_allowed_sans", "cipher_suites",
                          "prefer_server_cipher_suites", "curve_preferences"},
    "http_server_config": {"http2"},
}

# Builds the one-line ConfigError for (field path, problem).
_Fail = Callable[[str, str], ConfigError]

# $2a$/$2b$/$2y$, two-digit cost (ASCII: \d would take "١٠" too, and serve would crash on
# it), 22 characters of salt and 31 of hash (bcrypt's base64).
_BCRYPT_RE = re.compile(r"\$2[aby]\$([0-9]{2})\$([./A-Za-z0-9]{22})[./A-Za-z0-9]{31}", re.ASCII)
# The salt is 16 bytes in 22 base64 characters: the last one carries 2 bits and 4 zero bits,
# so it is one of these four. bcrypt refuses any other salt, and with it every password.
BCRYPT_SALT_LAST = ".Oeu"
MIN_BCRYPT_COST = 4  # bcrypt's own minimum
# bcrypt allows up to 31, but every check doubles with the cost: 10 takes ~0.07 s on a small
# VM, 16 ~5 s, 31 days. Above 16 one login is a denial of service.
MAX_BCRYPT_COST = 16
# Certificate and CA files are read under exporter.config.inputs' rule first (a regular file, not a
# FIFO or a device), within this size: a large CA bundle is a few hundred KB.
MAX_CERTIFICATE_BYTES = 4 << 20


@dataclass(frozen=True)
class TLSServerConfig:
    """The ``tls_server_config`` section, with file paths made absolute."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"


@dataclass(frozen=True)
class WebConfig:
    """A validated web config file; an empty file means plain HTTP without auth."""

    path: str = ""
    tls: TLSServerConfig | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # user -> bcrypt hash; kept out of repr so configs can be logged.
    basic_auth_users: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the server-side TLS context, or None when TLS is not configured."""
        tls = self.tls
        if tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[tls.min_version]
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
        # Loading the certificate alone first tells a bad cert_file from a bad key_file,
        # which OpenSSL's single "PEM lib" error for load_cert_chain does not.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=tls.cert_file)
        except (OSError, ssl.SSLError) as exc:
            raise self._error("tls_server_config.cert_file",
                              f"cannot load certificate {tls.cert_file}: {_reason(exc)}") from exc
        try:
            # A password callback that returns nothing makes an encrypted key fail here
            # instead of OpenSSL prompting on the terminal of a daemon.
            ctx.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
        except (OSError, ssl.SSLError) as exc:
            raise self._error("tls_server_config.key_file",
                              f"cannot load private key {tls.key_file} for "
                              f"{tls.cert_file}: {_reason(exc)}") from exc
        mode = _VERIFY_MODES[tls.client_auth_type]
        if mode != ssl.CERT_NONE:
            try:
                if tls.client_ca_file is not None:
                    ctx.load_verify_locations(cafile=tls.client_ca_file)
                else:
                    ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            except (OSError, ssl.SSLError) as exc:
                raise self._error("tls_server_config.client_ca_file",
                                  f"cannot load CA certificates {tls.client_ca_file}: "
                                  f"{_reason(exc)}") from exc
            ctx.verify_mode = mode
        return ctx

    def _error(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"error parsing web config file: {self.path}: {where}: {problem}")


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file, including loading its certificate and key."""

    def fail(where: str, problem: str) -> ConfigError:
        prefix = f"error parsing web config file: {path}: "
        return ConfigError(prefix + (f"{where}: {problem}" if where else problem))

    try:
        raw = yamlfile.read(path)
    except OSError as exc:
        raise fail("", f"cannot read file: {exc.strerror or exc}") from None
    except yamlfile.YAMLFileError as exc:
        raise fail("", str(exc)) from None
    if raw is None:
        raw = {}  # an empty file is valid upstream: plain HTTP, no auth
    if not isinstance(raw, dict):
        raise fail("", f"top level must be a mapping, got {_type_name(raw)}")
    _check_keys(raw, "", _TOP_KEYS, fail)

    base = os.path.dirname(os.path.abspath(path))
    tls = _parse_tls(_section(raw, "tls_server_config", fail), base, fail)
    headers = _parse_headers(_section(raw, "http_server_config", fail), fail)
    users = _parse_users(raw.get("basic_auth_users"), fail)
    config = WebConfig(path=path, tls=tls, headers=MappingProxyType(headers),
                       basic_auth_users=MappingProxyType(users))
    config.ssl_context()  # a bad certificate or key is a config error now, not at first scrape
    return config


def _parse_tls(section: dict[str, Any], base: str, fail: _Fail) -> TLSServerConfig | None:
    _check_keys(section, "tls_server_config", _TLS_KEYS, fail)
    values: dict[str, str] = {}
    for key, value in section.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise fail(f"tls_server_config.{key}",
                       f"must be a string, got {_type_name(value)}")
        if value != "":
            values[key] = value
    if not values.keys() & {"cert_file", "key_file", "client_ca_file", "client_auth_type"}:
        return None  # like exporter-toolkit: only versions set (or nothing) means no TLS
    if "cert_file" not in values or "key_file" not in values:
        raise fail("tls_server_config", "cert_file and key_file must both be set")
    for key in ("cert_file", "key_file", "client_ca_file"):
        if key in values:
            # Relative paths are relative to the web config file, as in exporter-toolkit.
            values[key] = os.path.join(base, values[key])
            problem = _certificate_file_problem(values[key])
            if problem:
                raise fail(f"tls_server_config.{key}", problem)
    auth = values.get("client_auth_type", "NoClientCert")
    if auth not in _VERIFY_MODES:
        raise fail("tls_server_config.client_auth_type",
                   f"must be one of {', '.join(CLIENT_AUTH_TYPES)}, got {show(auth)}")
    if "client_ca_file" in values and auth == "NoClientCert":
        raise fail("tls_server_config.client_ca_file",
                   "set but client_auth_type is NoClientCert (client certificates would "
                   "never be checked)")
    for key in ("min_version", "max_version"):
        if key in values and values[key] not in TLS_VERSIONS:
            raise fail(f"tls_server_config.{key}",
                       f"must be one of {', '.join(TLS_VERSIONS)}, got {show(values[key])}")
    tls = TLSServerConfig(**values)
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        raise fail("tls_server_config",
                   f"min_version {tls.min_version} is above max_version {tls.max_version}")
    return tls


def _parse_headers(section: dict[str, Any], fail: _Fail) -> dict[str, str]:
    _check_keys(section, "http_server_config", _HTTP_KEYS, fail)
    headers = section.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise fail("http_server_config.headers",
                   f"must be a mapping, got {_type_name(headers)}")
    result: dict[str, str] = {}
    for name, value in headers.items():
        where = f"http_server_config.headers.{field_name(name)}"
        if name not in ALLOWED_HEADERS:
            raise fail(where, "header can not be configured (allowed: "
                       + ", ".join(ALLOWED_HEADERS) + ")")
        if value is None or value == "":
            continue  # blank means unset, as documented upstream
        if not isinstance(value, str):
            raise fail(where, f"must be a string, got {_type_name(value)}")
        # A CR or LF would let the config inject extra headers or split the response.
        if any(c in value for c in "\r\n\0"):
            raise fail(where, "must not contain line breaks")
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value not in allowed:
            raise fail(where, f"must be one of {', '.join(allowed)}, got {show(value)}")
        result[name] = value
    return result


def _parse_users(users: Any, fail: _Fail) -> dict[str, str]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        raise fail("basic_auth_users", f"must be a mapping, got {_type_name(users)}")
    result: dict[str, str] = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or user == "":
            raise fail("basic_auth_users", f"user names must be non-empty strings, got {show(user)}")
        where = f"basic_auth_users.{field_name(user)}"
        # HTTP Basic splits "user:password" at the first colon, so this user could never log in.
        if ":" in user:
            raise fail(where, "user name must not contain ':'")
        match = _BCRYPT_RE.fullmatch(hashed) if isinstance(hashed, str) else None
        if match is None or int(match.group(1)) < MIN_BCRYPT_COST:
            raise fail(where, "not a bcrypt hash")
        if match.group(2)[-1] not in BCRYPT_SALT_LAST:
            raise fail(where, f"not a bcrypt hash: the salt's last character must be one of "
                              f"{' '.join(BCRYPT_SALT_LAST)} (bcrypt would refuse every password)")
        if int(match.group(1)) > MAX_BCRYPT_COST:
            raise fail(where, f"bcrypt cost {int(match.group(1))} is above {MAX_BCRYPT_COST}: every password "
                              f"check doubles with the cost (16 already takes seconds); hash it again at "
                              f"{MIN_BCRYPT_COST}-{MAX_BCRYPT_COST}")
        result[user] = hashed
    return result


def _certificate_file_problem(path: str) -> str:
    """Why ``path`` cannot be a certificate or key file, or "" (ssl then parses it)."""
    try:
        inputs.read_bytes(path, MAX_CERTIFICATE_BYTES)
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except inputs.InputError as exc:
        return f"{path}: {exc}"
    return ""


def _section(raw: dict[str, Any], key: str, fail: _Fail) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"must be a mapping, got {_type_name(value)}")
    return value


def _check_keys(section: dict[Any, Any], where: str, allowed: set[str], fail: _Fail) -> None:
    for key in section:
        if key in allowed:
            continue
        field_path = f"{where}.{field_name(key)}" if where else field_name(key)
        if key in _UNSUPPORTED.get(where, ()):
            raise fail(field_path, "not supported by this exporter")
        raise fail(field_path, "unknown field")


def _type_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
             float: "number"}
    return names.get(type(value), type(value).__name__)


def _reason(exc: BaseException) -> str:
    """One line for an OSError/SSLError, without the errno/library noise repeated."""
    if isinstance(exc, ssl.SSLError):
        # Drop the "(_ssl.c:4154)" suffix: it names a CPython source line, not the problem.
        text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.args[-1] if exc.args else exc))
        if text == "[SSL] PEM lib":
            return "no PEM private key found (encrypted keys are not supported)"
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
