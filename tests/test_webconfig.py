"""Tests for exporter.config.webconfig: the exporter-toolkit web config file and its TLS context."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import bcrypt
import pytest
from conftest import key_pem, self_signed_pem
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.errors import ConfigError
from exporter.config.webconfig import WebConfig, load_web_config

TESTDATA = Path(__file__).parent / "testdata" / "web"

# Expected message per file in testdata/web; {path} is the file, {dir} its directory, which
# also holds server.crt/server.key (a matching pair), other.key and junk.pem (not PEM).
INVALID: dict[str, str] = {
    "invalid-yaml-syntax.yml":
        "{path}: line 2: invalid YAML: expected ',' or ']', but got '<stream end>'",
    "invalid-top-level-list.yml": "{path}: top level must be a mapping, got list",
    "invalid-not-utf8.yml": "{path}: not UTF-8 text: invalid start byte at byte 35",
    "invalid-duplicate-user.yml": "{path}: line 3: invalid YAML: duplicate key 'alice'",
    "invalid-deep-nesting.yml": "{path}: line 1: invalid YAML: nested more than 32 levels deep",
    "invalid-unknown-top-level-key.yml": "{path}: tls_config: unknown field",
    "invalid-unknown-tls-key.yml": "{path}: tls_server_config.certfile: unknown field",
    "invalid-unsupported-tls-key.yml":
        "{path}: tls_server_config.cipher_suites: not supported by this exporter",
    "invalid-unsupported-rate-limit.yml": "{path}: rate_limit: not supported by this exporter",
    "invalid-unsupported-http2.yml":
        "{path}: http_server_config.http2: not supported by this exporter",
    "invalid-tls-not-mapping.yml": "{path}: tls_server_config: must be a mapping, got string",  # "yes": a string in YAML 1.2
    "invalid-cert-without-key.yml":
        "{path}: tls_server_config: cert_file and key_file must both be set",
    "invalid-client-auth-without-cert.yml":
        "{path}: tls_server_config: cert_file and key_file must both be set",
    "invalid-cert-file-not-string.yml":
        "{path}: tls_server_config.cert_file: must be a string, got integer",
    "invalid-cert-file-missing.yml":
        "{path}: tls_server_config.cert_file: file not found: {dir}/missing.crt",
    "invalid-client-auth-type.yml":
        "{path}: tls_server_config.client_auth_type: must be one of NoClientCert, "
        "RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, "
        "RequireAndVerifyClientCert, got 'Always'",
    "invalid-client-ca-without-client-auth.yml":
        "{path}: tls_server_config.client_ca_file: set but client_auth_type is NoClientCert "
        "(client certificates would never be checked)",
    "invalid-min-version.yml":
        "{path}: tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13, "
        "got 'TLS14'",
    "invalid-min-above-max.yml":
        "{path}: tls_server_config: min_version TLS13 is above max_version TLS12",
    "invalid-cert-not-pem.yml":
        "{path}: tls_server_config.cert_file: cannot load certificate {dir}/junk.pem: "
        "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found",
    "invalid-key-not-pem.yml":
        "{path}: tls_server_config.key_file: cannot load private key {dir}/junk.pem for "
        "{dir}/server.crt: no PEM private key found (encrypted keys are not supported)",
    "invalid-key-mismatch.yml":
        "{path}: tls_server_config.key_file: cannot load private key {dir}/other.key for "
        "{dir}/server.crt: [X509: KEY_VALUES_MISMATCH] key values mismatch",
    "invalid-basic-auth-plaintext.yml": "{path}: basic_auth_users.alice: not a bcrypt hash",
    # issue 17's reproductions: each passed --config.check, then serve crashed or never listened
    "invalid-basic-auth-cost-digits.yml": "{path}: basic_auth_users.alice: not a bcrypt hash",
    "invalid-basic-auth-cost-31.yml":
        "{path}: basic_auth_users.alice: bcrypt cost 31 is above 16: every password check doubles with "
        "the cost (16 already takes seconds); hash it again at 4-16",
    "invalid-basic-auth-trailing-newline.yml": "{path}: basic_auth_users.alice: not a bcrypt hash",
    "invalid-basic-auth-salt-character.yml":
        "{path}: basic_auth_users.alice: not a bcrypt hash: the salt's last character must be one of . O e u "
        "(bcrypt would refuse every password)",
    "invalid-cert-file-device.yml":
        "{path}: tls_server_config.cert_file: /dev/null: not a regular file (a character device)",
    "invalid-basic-auth-not-mapping.yml":
        "{path}: basic_auth_users: must be a mapping, got list",
    "invalid-basic-auth-user-colon.yml":
        "{path}: basic_auth_users.alice:admin: user name must not contain ':'",
    "invalid-header-not-allowed.yml":
        "{path}: http_server_config.headers.X-Powered-By: header can not be configured "
        "(allowed: Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, "
        "X-XSS-Protection, Content-Security-Policy)",
    "invalid-header-value.yml":
        "{path}: http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin, "
        "got 'allow'",
    "invalid-headers-not-mapping.yml":
        "{path}: http_server_config.headers: must be a mapping, got list",
}


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A matching server.crt/server.key, an unrelated other.key and a junk.pem."""
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "server.crt": self_signed_pem(key),
        "server.key": key_pem(key),
        "other.key": key_pem(ec.generate_private_key(ec.SECP256R1())),
        "junk.pem": b"this is not PEM\n",
    }


@pytest.fixture
def config_dir(tmp_path: Path, pem_files: dict[str, bytes]) -> Path:
    for name, data in pem_files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def _write(config_dir: Path, text: str, name: str = "web.yml") -> str:
    path = config_dir / name
    path.write_text(text)
    return str(path)


def test_every_invalid_testdata_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in TESTDATA.glob("invalid-*.yml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_web_config_fails_with_one_line_naming_file_field_and_problem(
        name: str, config_dir: Path) -> None:
    path = config_dir / name
    shutil.copy(TESTDATA / name, path)
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    expected = "error parsing web config file: " + INVALID[name].format(
        path=path, dir=config_dir)
    assert str(info.value) == expected
    assert "\n" not in str(info.value)


def test_missing_web_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=r"^error parsing web config file: .*/nope\.yml: "
                                          r"cannot read file: No such file or directory$"):
        load_web_config(str(path))


def test_empty_web_config_means_plain_http_without_auth(config_dir: Path) -> None:
    config = load_web_config(_write(config_dir, ""))
    assert config.tls is None
    assert config.ssl_context() is None
    assert dict(config.basic_auth_users) == {}
    assert dict(config.headers) == {}


def test_tls_versions_alone_do_not_enable_tls(config_dir: Path) -> None:
    # Same as exporter-toolkit: TLS is on only when a certificate or client auth is set.
    config = load_web_config(_write(config_dir, "tls_server_config:\n  min_version: TLS13\n"))
    assert config.tls is None


def test_relative_paths_are_resolved_against_the_config_file_directory(
        config_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_web_config(_write(
        config_dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"))
    assert config.tls is not None
    assert config.tls.cert_file == str(config_dir / "server.crt")
    assert config.tls.key_file == str(config_dir / "server.key")


def test_ssl_context_applies_versions_and_client_verification(config_dir: Path) -> None:
    config = load_web_config(_write(config_dir, """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: server.crt
  min_version: TLS13
"""))
    ctx = config.ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509"] == 1  # client_ca_file, not the system CAs


@pytest.mark.parametrize(("auth_type", "mode"), [
    ("NoClientCert", ssl.CERT_NONE),
    ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
    # Python cannot accept a client certificate unverified, so these verify it (stricter).
    ("RequestClientCert", ssl.CERT_OPTIONAL),
    ("RequireAnyClientCert", ssl.CERT_REQUIRED),
])
def test_client_auth_type_maps_to_ssl_verify_mode(
        auth_type: str, mode: ssl.VerifyMode, config_dir: Path) -> None:
    ca = "" if auth_type == "NoClientCert" else "  client_ca_file: server.crt\n"
    config = load_web_config(_write(config_dir, (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"  client_auth_type: {auth_type}\n{ca}")))
    ctx = config.ssl_context()
    assert ctx is not None
    assert ctx.verify_mode == mode
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default


def test_ssl_context_reports_a_certificate_broken_after_loading(config_dir: Path) -> None:
    config = load_web_config(_write(
        config_dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"))
    (config_dir / "server.crt").write_text("gone bad\n")
    with pytest.raises(ConfigError, match=r"^error parsing web config file: .*web\.yml: "
                                          r"tls_server_config\.cert_file: cannot load "):
        config.ssl_context()


def test_basic_auth_headers_and_blank_header_values(config_dir: Path) -> None:
    alice = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    # htpasswd writes $2y$ hashes; exporter-toolkit accepts them, so must we.
    bob = "$2y$" + bcrypt.hashpw(b"other", bcrypt.gensalt(4)).decode()[4:]
    config = load_web_config(_write(config_dir, f"""
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Content-Security-Policy: ""
basic_auth_users:
  alice: {alice}
  bob: {bob}
"""))
    assert dict(config.basic_auth_users) == {"alice": alice, "bob": bob}
    assert dict(config.headers) == {"X-Frame-Options": "deny",
                                    "X-Content-Type-Options": "nosniff"}


def test_the_check_accepts_a_hash_exactly_when_bcrypt_does(config_dir: Path) -> None:
    """Every character of bcrypt's alphabet at every place of the salt and the hash: a hash
    that passes --config.check is one bcrypt can check a password against."""
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    for place in range(len("$2b$04$"), len(hashed)):
        for character in alphabet:
            variant = hashed[:place] + character + hashed[place + 1:]
            try:
                bcrypt.checkpw(b"secret", variant.encode())
                bcrypt_accepts = True
            except ValueError:
                bcrypt_accepts = False
            try:
                load_web_config(_write(config_dir, f"basic_auth_users:\n  alice: '{variant}'\n"))
                checked = True
            except ConfigError:
                checked = False
            assert checked == bcrypt_accepts, variant


def test_repr_does_not_show_password_hashes(config_dir: Path) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    config = load_web_config(_write(config_dir, f"basic_auth_users:\n  alice: {hashed}\n"))
    assert hashed not in repr(config)


def test_web_config_is_immutable() -> None:
    config = WebConfig()
    with pytest.raises(AttributeError):
        config.tls = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.headers["X-Frame-Options"] = "deny"  # type: ignore[index]


def test_a_fifo_as_certificate_is_refused_instead_of_blocking(config_dir: Path) -> None:
    fifo = config_dir / "server.fifo"
    os.mkfifo(fifo)
    path = _write(config_dir, f"tls_server_config:\n  cert_file: {fifo}\n  key_file: server.key\n")
    with pytest.raises(ConfigError, match=r"cert_file: .*server\.fifo: not a regular file \(a FIFO\)$"):
        load_web_config(path)


def test_a_directory_as_key_is_named_as_such(config_dir: Path) -> None:
    (config_dir / "keys").mkdir()
    path = _write(config_dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: keys\n")
    with pytest.raises(ConfigError, match=r"key_file: .*/keys: not a regular file \(a directory\)$"):
        load_web_config(path)
