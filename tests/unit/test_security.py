"""Standard Webhooks signing and verification, bearer tokens, secret files and masking."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import webhooks
from common.secrets import SecretFileError, mask_uri, read_secret_file, secret_names
from common.settings import SECRET_VARIABLES, uses_tls
from common.webhooks import SignatureRejected, new_secret, parse_secret, sign, verify
from producer.callback import CallbackRejected
from producer.signatures import CallbackAuth
from tester.signing import CallbackSigner
from tests.support import config_table

pytestmark = pytest.mark.unit

KEY = b"k" * 24
OTHER_KEY = b"o" * 24
NOW = 1_800_000_000
BODY = b'{"object_ids":[1,2,3]}'
TOLERANCE = 300.0


def signed(body: bytes = BODY, key: bytes = KEY, timestamp: int = NOW) -> dict[str, str]:
    return sign([key], "msg_1", timestamp, body)


def check(headers: dict[str, str], body: bytes = BODY, keys: tuple[bytes, ...] = (KEY,)) -> None:
    verify(keys, headers, body, now=NOW, tolerance=TOLERANCE)


def rejected_code(headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureRejected) as caught:
        check(headers, body)
    return caught.value.error


def test_a_valid_signature_verifies() -> None:
    check(signed())


def test_the_known_answer_of_the_standard_webhooks_spec() -> None:
    # The example from the Standard Webhooks specification (and Svix's libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    verify([parse_secret(secret)], headers, body, now=1614265330, tolerance=TOLERANCE)


@pytest.mark.parametrize(
    "missing", [webhooks.ID_HEADER, webhooks.TIMESTAMP_HEADER, webhooks.SIGNATURE_HEADER]
)
def test_a_missing_header_fails(missing: str) -> None:
    headers = signed()
    del headers[missing]
    assert rejected_code(headers) == "missing_signature"


def test_bad_base64_fails() -> None:
    assert rejected_code({**signed(), "webhook-signature": "v1,not*base64!"}) == (
        "invalid_signature"
    )


def test_a_wrong_secret_fails() -> None:
    assert rejected_code(signed(key=OTHER_KEY)) == "invalid_signature"


def test_a_body_changed_by_one_byte_fails() -> None:
    headers = signed()
    changed = BODY.replace(b"3", b"4")
    assert len(changed) == len(BODY)
    assert rejected_code(headers, changed) == "invalid_signature"


@pytest.mark.parametrize("offset", [-TOLERANCE - 1, TOLERANCE + 1])
def test_a_timestamp_outside_the_window_fails_on_both_sides(offset: float) -> None:
    assert rejected_code(signed(timestamp=NOW + int(offset))) == "stale_timestamp"


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_a_timestamp_at_the_edge_of_the_window_passes(offset: float) -> None:
    check(signed(timestamp=NOW + int(offset)))


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "", "١٢٣"])
def test_a_malformed_timestamp_fails(value: str) -> None:
    code = rejected_code({**signed(), "webhook-timestamp": value})
    assert code in {"invalid_timestamp", "missing_signature"}


def test_an_unknown_version_prefix_fails() -> None:
    headers = signed()
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    assert rejected_code(headers) == "unsupported_signature"


def test_a_signature_signed_for_another_id_or_timestamp_fails() -> None:
    headers = signed()
    assert rejected_code({**headers, "webhook-id": "msg_2"}) == "invalid_signature"
    assert rejected_code({**headers, "webhook-timestamp": str(NOW + 1)}) == "invalid_signature"


def test_rotation_two_secrets_accepted_at_once() -> None:
    keys = (KEY, OTHER_KEY)
    check(signed(key=KEY), keys=keys)
    check(signed(key=OTHER_KEY), keys=keys)
    # A sender in the middle of a rotation signs with both; one match is enough.
    both = sign([b"x" * 24, OTHER_KEY], "msg_1", NOW, BODY)
    assert len(both["webhook-signature"].split()) == 2
    check(both, keys=keys)
    with pytest.raises(SignatureRejected):
        check(signed(key=b"z" * 24), keys=keys)


def test_unknown_versions_are_skipped_when_a_v1_signature_follows() -> None:
    headers = signed()
    headers["webhook-signature"] = "v2,abc " + headers["webhook-signature"]
    check(headers)


@given(body=st.binary(max_size=2048), data=st.data())
def test_sign_and_verify_agree_and_any_single_byte_change_fails(
    body: bytes, data: st.DataObject
) -> None:
    headers = sign([KEY], "msg_p", NOW, body)
    verify([KEY], headers, body, now=NOW, tolerance=TOLERANCE)
    if body:
        index = data.draw(st.integers(0, len(body) - 1), label="index")
        delta = data.draw(st.integers(1, 255), label="delta")
        changed = bytearray(body)
        changed[index] = (changed[index] + delta) % 256
        with pytest.raises(SignatureRejected):
            verify([KEY], headers, bytes(changed), now=NOW, tolerance=TOLERANCE)
    extra = data.draw(st.integers(0, 255), label="appended")
    with pytest.raises(SignatureRejected):
        verify([KEY], headers, body + bytes([extra]), now=NOW, tolerance=TOLERANCE)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("k" * 32, "must start with"),
        ("whsec_***", "whsec_<base64>"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 16 bytes"),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match="signing secret") as caught:
        parse_secret(secret)
    assert why in str(caught.value)
    assert secret not in str(caught.value)


def test_a_new_secret_round_trips() -> None:
    key = os.urandom(32)
    assert parse_secret(new_secret(key)) == key


def test_producer_auth_answers_401_with_a_reason() -> None:
    auth = CallbackAuth((KEY,), tolerance=TOLERANCE, clock=lambda: NOW)
    auth.check(signed(), BODY)
    with pytest.raises(CallbackRejected) as caught:
        auth.check({}, BODY)
    assert (caught.value.status, caught.value.error) == (401, "missing_signature")
    with pytest.raises(CallbackRejected) as caught:
        auth.check(signed(), BODY + b" ")
    assert (caught.value.status, caught.value.error) == (401, "invalid_signature")


def test_bearer_token_mode() -> None:
    auth = CallbackAuth(bearer_token="s3cret-token")
    auth.check({"authorization": "Bearer s3cret-token"}, BODY)
    auth.check({"authorization": "bearer s3cret-token"}, BODY)
    for header in [None, "", "Bearer wrong", "Basic s3cret-token", "Bearer s3cret-token2"]:
        headers = {} if header is None else {"authorization": header}
        with pytest.raises(CallbackRejected) as caught:
            auth.check(headers, BODY)
        assert caught.value.status == 401


def test_both_modes_set_require_both() -> None:
    auth = CallbackAuth((KEY,), "tok", TOLERANCE, clock=lambda: NOW)
    auth.check({**signed(), "authorization": "Bearer tok"}, BODY)
    with pytest.raises(CallbackRejected):
        auth.check(signed(), BODY)
    with pytest.raises(CallbackRejected):
        auth.check({"authorization": "Bearer tok"}, BODY)


def test_off_by_default() -> None:
    assert not CallbackAuth().enabled
    assert CallbackSigner().headers(BODY) == {}


def test_the_tester_signs_what_the_producer_verifies() -> None:
    signer = CallbackSigner((KEY, OTHER_KEY), "tok", clock=lambda: NOW)
    headers = signer.headers(BODY)
    # Only the first (newest) key signs.
    assert len(headers["webhook-signature"].split()) == 1
    CallbackAuth((KEY,), "tok", TOLERANCE, clock=lambda: NOW).check(
        {k.lower(): v for k, v in headers.items()}, BODY
    )
    assert signer.headers(BODY)["webhook-id"] != headers["webhook-id"]


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("amqp://user:pa%40ss@host:5672/", "amqp://user:***@host:5672/"),
        (
            "amqps://u:p@a:5671/v,amqps://u:p@b:5671/v",
            "amqps://u:***@a:5671/v,amqps://u:***@b:5671/v",
        ),
        ("amqp://host/", "amqp://host/"),
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_uris_are_masked(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


def test_a_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("pa ss\n")
    assert read_secret_file("X_FILE", str(path)) == "pa ss"


def test_a_missing_secret_file_names_the_variable_and_path(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=r"^X_FILE: cannot read '.*nope'"):
        read_secret_file("X_FILE", str(tmp_path / "nope"))


def test_every_secret_setting_is_masked_in_configuration_errors() -> None:
    import importlib

    declared = set()
    for _, module, name in config_table.MODELS:
        declared |= set(secret_names(getattr(importlib.import_module(module), name)))
    assert declared == SECRET_VARIABLES


# --- settings: NAME_FILE, TLS files, masking -------------------------------------------------

PRODUCER_ENV = {"AMQP_URI": "amqp://u:plain-pass@h:5672/", "QUEUE_NAME": "q"}
ROUTINE_ENV = {"POSTGRES_HOST": "h", "POSTGRES_DB": "d", "POSTGRES_USER": "u"}


def load_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: type, env: dict[str, str]
) -> object:
    from common.settings import load_settings

    monkeypatch.chdir(tmp_path)  # no .env here
    for name in [*SECRET_VARIABLES, *(f"{v}_FILE" for v in SECRET_VARIABLES)]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(model, "svc")


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("variable", "value", "attribute"),
    [
        ("AMQP_URI", "amqp://u:from-file@h:5672/", "amqp_uri"),
        ("CALLBACK_SIGNING_SECRETS", f"{new_secret(KEY)} {new_secret(OTHER_KEY)}", "signing_keys"),
        ("CALLBACK_BEARER_TOKEN", "token-from-file", "callback_bearer_token"),
    ],
)
def test_each_producer_secret_may_come_from_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, attribute: str
) -> None:
    from producer.settings import ProducerSettings

    env = {**PRODUCER_ENV, f"{variable}_FILE": secret_file(tmp_path, "s", value)}
    settings = load_in(monkeypatch, tmp_path, ProducerSettings, env)
    expected: object = value
    if attribute == "signing_keys":
        expected = (KEY, OTHER_KEY)
    assert getattr(settings, attribute) == expected


def test_postgres_password_from_its_file_and_the_file_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from routine.settings import RoutineSettings

    env = {
        **ROUTINE_ENV,
        "POSTGRES_PASSWORD": "from-env",
        "POSTGRES_PASSWORD_FILE": secret_file(tmp_path, "pg", "from file"),
    }
    settings = load_in(monkeypatch, tmp_path, RoutineSettings, env)
    assert settings.postgres_password == "from file"  # type: ignore[attr-defined]


def test_a_file_named_in_dotenv_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from routine.settings import RoutineSettings

    path = secret_file(tmp_path, "pg", "dotenv-file")
    (tmp_path / ".env").write_text(f"POSTGRES_PASSWORD_FILE={path}\n")
    settings = load_in(monkeypatch, tmp_path, RoutineSettings, ROUTINE_ENV)
    assert settings.postgres_password == "dotenv-file"  # type: ignore[attr-defined]


def test_secrets_stay_out_of_the_settings_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from producer.settings import ProducerSettings

    env = {**PRODUCER_ENV, "CALLBACK_BEARER_TOKEN": "tok-secret-123"}
    settings = load_in(monkeypatch, tmp_path, ProducerSettings, env)
    assert "plain-pass" not in repr(settings)
    assert "tok-secret-123" not in repr(settings)
    assert settings.amqp_uri_masked == "amqp://u:***@h:5672/"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AMQP_URI": "http://u:leaked-pass@h/"}, "AMQP_URI: String should match pattern"),
        ({"CALLBACK_SIGNING_SECRETS": "whsec_leaked***"}, "CALLBACK_SIGNING_SECRETS: a signing"),
        ({"AMQP_TLS_CA": "/etc/hostname"}, "need an amqps:// AMQP_URI"),
        (
            {"AMQP_URI": "amqps://u:leaked-pass@h/", "AMQP_TLS_CA": "/nonexistent/ca.pem"},
            "AMQP_TLS_CA: no such file '/nonexistent/ca.pem'",
        ),
        (
            {"AMQP_URI": "amqps://u:leaked-pass@h/", "AMQP_TLS_CA": "/etc/hostname"},
            "is not a usable PEM file",
        ),
        *(
            ({"AMQP_URI": nodes}, "must use TLS, or none")
            for nodes in (
                "amqps://u:leaked-pass@a/,amqp://u:leaked-pass@b/",
                "amqp://u:leaked-pass@a/,amqps://u:leaked-pass@b/",
                "amqps://u:leaked-pass@a/,amqps://u:leaked-pass@b/,amqp://u:leaked-pass@c/",
            )
        ),
    ],
)
def test_configuration_errors_name_the_setting_and_never_echo_a_secret(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str,
) -> None:
    from producer.settings import ProducerSettings

    with pytest.raises(SystemExit) as exited:
        load_in(monkeypatch, tmp_path, ProducerSettings, {**PRODUCER_ENV, **env})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert expected in err
    assert "leaked" not in err
    assert "plain-pass" not in err


@pytest.mark.parametrize(
    ("nodes", "secure"),
    [
        (["amqps://u:p@a/"], True),
        (["amqps://u:p@a/", "amqps://u:p@b/", "AMQPS://u:p@c/"], True),
        (["amqp://u:p@a/", "amqp://u:p@b/"], False),
        (["amqps://u:p@a/", "amqp://u:p@b/"], None),
        (["amqp://u:p@a/", "amqps://u:p@b/"], None),
        (["amqps://u:p@a/", "amqps://u:p@b/", "amqp://u:p@c/"], None),
    ],
)
def test_tls_is_decided_by_every_node_and_a_mix_is_refused(
    nodes: list[str], secure: bool | None
) -> None:
    if secure is None:
        with pytest.raises(ValueError, match=r"^AMQP_URI mixes amqp:// and amqps:// nodes"):
            uses_tls(nodes)
    else:
        assert uses_tls(nodes) is secure


def test_a_list_of_amqps_nodes_gets_one_tls_context(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ssl

    from producer.settings import ProducerSettings

    nodes = "amqps://u:p@a:5671/,amqps://u:p@b:5671/"
    settings = load_in(monkeypatch, tmp_path, ProducerSettings, {**PRODUCER_ENV, "AMQP_URI": nodes})
    assert isinstance(settings.amqp_ssl_context(), ssl.SSLContext)  # type: ignore[attr-defined]
    nodes = "amqp://u:p@a/,amqp://u:p@b/"
    settings = load_in(monkeypatch, tmp_path, ProducerSettings, {**PRODUCER_ENV, "AMQP_URI": nodes})
    assert settings.amqp_ssl_context() is None  # type: ignore[attr-defined]


def test_postgres_sslmode_is_checked_and_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl

    from routine.settings import RoutineSettings

    settings = load_in(monkeypatch, tmp_path, RoutineSettings, ROUTINE_ENV)
    assert settings.postgres_ssl() == "prefer", "unchanged default"  # type: ignore[attr-defined]
    settings = load_in(
        monkeypatch, tmp_path, RoutineSettings, {**ROUTINE_ENV, "POSTGRES_SSLMODE": "verify-full"}
    )
    context = settings.postgres_ssl()  # type: ignore[attr-defined]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(SystemExit):
        load_in(
            monkeypatch, tmp_path, RoutineSettings, {**ROUTINE_ENV, "POSTGRES_SSLMODE": "always"}
        )
    assert "POSTGRES_SSLMODE" in capsys.readouterr().err


def test_a_missing_secret_setting_mentions_its_file_variant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from producer.settings import ProducerSettings

    with pytest.raises(SystemExit):
        load_in(monkeypatch, tmp_path, ProducerSettings, {"QUEUE_NAME": "q"})
    err = capsys.readouterr().err
    assert "AMQP_URI is required but not set (nor AMQP_URI_FILE)" in err
