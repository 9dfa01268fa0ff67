"""Connection and subscription tokens, verified with real HS, RSA, EC and Ed25519 keys."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.auth.conftest import Keys
from tests.auth.helpers import NOW, SECRET, b64, b64json, claims, jwk_of, pem_public, sign
from tidings.auth.tokens import (
    SubscriptionGrant,
    TokenVerifier,
    VerificationKey,
    load_jwks,
    load_public_key_file,
    parse_grants,
)
from tidings.core.permissions import Capability, Credentials, NamespaceOptions, allowed
from tidings.exceptions import Forbidden, TokenExpired, Unauthorized
from tidings.settings import load_settings


def hs_verifier(**options: Any) -> TokenVerifier:
    return TokenVerifier(secret=SECRET, **options)


def rsa_verifier(keys: Keys, **options: Any) -> TokenVerifier:
    return TokenVerifier(keys=[VerificationKey.from_public_key(keys.rsa.public_key())], **options)


def refuse(verifier: TokenVerifier, token: str, match: str) -> Unauthorized:
    with pytest.raises(Unauthorized, match=match) as info:
        verifier.verify_connection_nowait(token, now=NOW)
    assert info.value.code == "unauthorized"
    assert info.value.http_status == 401
    return info.value


# ---------------------------------------------------------------------------------- accepted


def test_hs256_token_gives_credentials_with_user_grants_expiry_and_info() -> None:
    creds = hs_verifier().verify_connection_nowait(sign(claims(), SECRET), now=NOW)
    assert creds == Credentials(
        user="42",
        grants={
            "chat:*": frozenset({Capability.SUBSCRIBE, Capability.PUBLISH}),
            "news": frozenset({Capability.SUBSCRIBE}),
        },
        expires_at=NOW + 3600,
        info={"name": "Ann"},
    )


def test_credentials_from_a_token_feed_the_allowed_rule() -> None:
    creds = hs_verifier().verify_connection_nowait(sign(claims(), SECRET), now=NOW)
    private = NamespaceOptions(private=True, client_publish=False)
    assert allowed(Capability.PUBLISH, "chat:lobby", private, creds)
    assert not allowed(Capability.PUBLISH, "news", private, creds)
    assert not allowed(Capability.SUBSCRIBE, "other:x", private, creds)


def test_token_without_channels_claim_has_no_grants_and_may_have_empty_sub() -> None:
    token = sign(claims(sub="", channels=None, info=None), SECRET)
    creds = hs_verifier().verify_connection_nowait(token, now=NOW)
    assert creds.anonymous
    assert creds.grants == {}
    assert creds.info is None


def test_rs256_token_verifies_with_a_public_key_file(keys: Keys, rsa_pem_file: Path) -> None:
    verifier = TokenVerifier(keys=[load_public_key_file(rsa_pem_file)])
    creds = verifier.verify_connection_nowait(sign(claims(), keys.rsa, "RS256"), now=NOW)
    assert creds.user == "42"


def test_es256_token_verifies_with_a_public_key_file(keys: Keys, ec_pem_file: Path) -> None:
    verifier = TokenVerifier(keys=[load_public_key_file(ec_pem_file)])
    creds = verifier.verify_connection_nowait(sign(claims(), keys.ec, "ES256"), now=NOW)
    assert creds.user == "42"


def test_public_key_file_may_be_a_certificate(keys: Keys, tmp_path: Path) -> None:
    import datetime as dt

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(keys.rsa.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .sign(keys.rsa, hashes.SHA256())
    )
    path = tmp_path / "idp.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verifier = TokenVerifier(keys=[load_public_key_file(path)])
    assert verifier.verify_connection_nowait(sign(claims(), keys.rsa, "RS256"), now=NOW)


@pytest.mark.parametrize(("alg", "key_name"), [("PS256", "rsa"), ("ES384", "ec384"), ("EdDSA", "ed")])
def test_other_algorithms_verify_once_listed(keys: Keys, alg: str, key_name: str) -> None:
    private = getattr(keys, key_name)
    key = VerificationKey.from_public_key(private.public_key())
    token = sign(claims(), private, alg)
    refuse(TokenVerifier(keys=[key]), token, f"algorithm {alg} is not allowed")
    verifier = TokenVerifier(keys=[key], algorithms=[alg])
    assert verifier.verify_connection_nowait(token, now=NOW).user == "42"


def test_leeway_accepts_a_token_just_expired() -> None:
    token = sign(claims(exp=NOW - 5), SECRET)
    assert hs_verifier(leeway=10).verify_connection_nowait(token, now=NOW).user == "42"


def test_audience_and_issuer_are_accepted_when_they_match() -> None:
    verifier = hs_verifier(audience=["tidings", "other"], issuer="https://idp.test")
    token = sign(claims(aud=["x", "tidings"], iss="https://idp.test"), SECRET)
    assert verifier.verify_connection_nowait(token, now=NOW).user == "42"


def test_kid_selects_the_key_among_several_jwks_keys(keys: Keys) -> None:
    jwks = {"keys": [jwk_of(keys.rsa, "one"), jwk_of(keys.rsa2, "two"), jwk_of(keys.ec, "three")]}
    verifier = TokenVerifier(keys=load_jwks(json.dumps(jwks)))
    for private, kid, alg in [
        (keys.rsa, "one", "RS256"),
        (keys.rsa2, "two", "RS256"),
        (keys.ec, "three", "ES256"),
    ]:
        assert verifier.verify_connection_nowait(sign(claims(), private, alg, kid), now=NOW)
    refuse(verifier, sign(claims(), keys.rsa, "RS256", "two"), "signature does not verify")


def test_token_without_kid_is_tried_against_every_key_of_its_kind(keys: Keys) -> None:
    verifier = TokenVerifier(keys=load_jwks({"keys": [jwk_of(keys.rsa2), jwk_of(keys.rsa)]}))
    assert verifier.verify_connection_nowait(sign(claims(), keys.rsa, "RS256"), now=NOW)


def test_verifier_from_settings_uses_secret_and_auth_section(keys: Keys, rsa_pem_file: Path) -> None:
    settings = load_settings(
        token_secret=SECRET,
        auth={"public_key_file": str(rsa_pem_file), "audience": "tidings", "leeway": 2},
    )
    verifier = TokenVerifier.from_settings(settings)
    for token in (
        sign(claims(aud="tidings"), SECRET),
        sign(claims(aud="tidings"), keys.rsa, "RS256"),
    ):
        assert verifier.verify_connection_nowait(token, now=NOW).user == "42"
    refuse(verifier, sign(claims(), SECRET), '"aud" is required')


# ---------------------------------------------------------------------------------- refused


def _forged_hs256_with_public_key(keys: Keys) -> str:
    """The classic key confusion: HS256 'signed' with the RSA public key everyone has."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims())}"
    mac = hmac.new(pem_public(keys.rsa), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _unsigned(alg: str = "none") -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}."


def _tampered_payload(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json(claims(sub='1', channels={'*': ['publish']}))}.{signature}"


def _tampered_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{flipped}{signature[1:]}"


def rejection_cases(keys: Keys) -> list[tuple[str, str, str]]:
    """(case, token, expected message fragment) against a verifier with SECRET and the RSA key."""

    def c(**overrides: Any) -> dict[str, Any]:
        return claims(**{"aud": "tidings", "iss": "https://idp.test", **overrides})

    good = sign(c(), SECRET)
    return [
        ("expired", sign(c(exp=NOW - 1), SECRET), "token expired at"),
        ("expiry is the boundary", sign(c(exp=NOW), SECRET), "token expired"),
        ("no exp", sign(c(exp=None), SECRET), '"exp" is required'),
        ("exp not a number", sign(c(exp="tomorrow"), SECRET), '"exp" must be a number'),
        ("not yet valid", sign(c(nbf=NOW + 60), SECRET), "not valid before"),
        ("no sub", sign(c(sub=None), SECRET), '"sub" is required'),
        ("sub not a string", sign(c(sub=42), SECRET), '"sub" must be a string'),
        ("wrong audience", sign(c(aud="someone-else"), SECRET), "audience"),
        ("wrong issuer", sign(c(iss="https://evil.test"), SECRET), "issuer"),
        ("tampered payload", _tampered_payload(good), "signature does not verify"),
        ("tampered signature", _tampered_signature(good), "signature does not verify"),
        ("wrong secret", sign(c(), SECRET + "x"), "signature does not verify"),
        ("alg none", _unsigned("none"), r"alg none"),
        ("alg None", _unsigned("None"), r"alg none"),
        ("alg NONE", _unsigned("NONE"), r"alg none"),
        (
            "hs256 with the rsa public key",
            _forged_hs256_with_public_key(keys),
            "signature does not verify",
        ),
        ("algorithm not listed", sign(c(), keys.rsa, "RS384"), "RS384 is not allowed"),
        ("signed by another rsa key", sign(c(), keys.rsa2, "RS256"), "signature does not verify"),
        ("garbage", "not-a-token", "malformed"),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.e30", "malformed"),
        ("empty", "", "missing token"),
        ("too long", "a" * 9000, "longer than"),
        (
            "bad grant capability",
            sign(c(channels={"chat:*": ["own"]}), SECRET),
            "unknown capability",
        ),
        (
            "bad grant pattern",
            sign(c(channels={"chat lobby": ["subscribe"]}), SECRET),
            "invalid pattern",
        ),
        ("grants not an object", sign(c(channels=["chat:*"]), SECRET), "must be an object"),
        (
            "grant caps not a list",
            sign(c(channels={"chat:*": "subscribe"}), SECRET),
            "must be a list",
        ),
        (
            "subscription token used to connect",
            sign(c(channels=None, channel="chat:1"), SECRET),
            "subscription token",
        ),
        ("payload not an object", _signed_raw(b"[1,2]"), "not a JSON object"),
        ("payload not json", _signed_raw(b"\xff{"), "malformed|not JSON"),
    ]


def _signed_raw(payload: bytes) -> str:
    signing_input = f"{b64json({'alg': 'HS256'})}.{b64(payload)}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_every_rejection_is_unauthorized_with_the_same_code_and_a_clear_message(
    keys: Keys,
) -> None:
    verifier = TokenVerifier(
        secret=SECRET,
        keys=[VerificationKey.from_public_key(keys.rsa.public_key())],
        audience="tidings",
        issuer="https://idp.test",
    )
    seen_codes = set()
    for case, token, match in rejection_cases(keys):
        with pytest.raises(Unauthorized, match=match) as info:
            verifier.verify_connection_nowait(token, now=NOW)
        seen_codes.add((info.value.code, info.value.http_status))
        assert info.value.to_dict()["error"]["code"] == "unauthorized", case
    assert seen_codes == {("unauthorized", 401)}


def test_expired_token_raises_token_expired_which_is_unauthorized() -> None:
    with pytest.raises(TokenExpired, match="get a new token") as info:
        hs_verifier().verify_connection_nowait(sign(claims(exp=NOW - 1), SECRET), now=NOW)
    assert isinstance(info.value, Unauthorized)
    assert info.value.code == "unauthorized"


def test_expiry_is_checked_only_after_the_signature() -> None:
    forged = sign(claims(exp=NOW - 1), "another-secret-that-is-long-enough-000000")
    error = refuse(hs_verifier(), forged, "signature does not verify")
    assert not isinstance(error, TokenExpired)


def test_hs256_forged_with_the_rsa_public_key_is_refused_when_only_rsa_is_configured(
    keys: Keys,
) -> None:
    refuse(rsa_verifier(keys), _forged_hs256_with_public_key(keys), "no key configured for HS256")


def test_hs256_forged_with_the_public_key_is_refused_even_if_hs256_is_the_only_algorithm(
    keys: Keys,
) -> None:
    verifier = rsa_verifier(keys, algorithms=["HS256"])
    refuse(verifier, _forged_hs256_with_public_key(keys), "no key configured for HS256")


def test_rsa_token_is_refused_by_a_verifier_holding_only_an_ec_key(keys: Keys) -> None:
    verifier = TokenVerifier(keys=[VerificationKey.from_public_key(keys.ec.public_key())])
    refuse(verifier, sign(claims(), keys.rsa, "RS256"), "no key configured for RS256")


def test_a_key_embedded_in_the_token_header_is_ignored(keys: Keys) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = {"alg": "RS256", "jwk": jwk_of(attacker), "jku": "https://evil.test/jwks"}
    from jwt import PyJWS

    token = PyJWS().encode(json.dumps(claims()).encode(), attacker, "RS256", headers=header)
    refuse(rsa_verifier(keys), token, "signature does not verify")


def test_a_jwk_pinned_to_one_algorithm_refuses_another(keys: Keys) -> None:
    verifier = TokenVerifier(
        keys=load_jwks({"keys": [jwk_of(keys.rsa, "k", alg="RS256")]}),
        algorithms=["RS256", "PS256"],
    )
    assert verifier.verify_connection_nowait(sign(claims(), keys.rsa, "RS256", "k"), now=NOW)
    refuse(verifier, sign(claims(), keys.rsa, "PS256", "k"), "no key")


def test_unknown_kid_is_refused_naming_it(keys: Keys) -> None:
    verifier = TokenVerifier(keys=load_jwks({"keys": [jwk_of(keys.rsa, "one")]}))
    refuse(verifier, sign(claims(), keys.rsa, "RS256", "nine"), "no key with kid 'nine'")


def test_audience_in_token_is_refused_when_none_is_configured() -> None:
    refuse(hs_verifier(), sign(claims(aud="tidings"), SECRET), "none is configured")


def test_missing_issuer_is_refused_when_one_is_configured() -> None:
    refuse(hs_verifier(issuer="https://idp.test"), sign(claims(), SECRET), '"iss" is required')


def test_a_verifier_without_keys_refuses_everything() -> None:
    verifier = TokenVerifier()
    assert not verifier.configured
    refuse(verifier, sign(claims(), SECRET), "no key configured for HS256")


# -------------------------------------------------------------------------------- key loading


def test_jwks_skips_symmetric_keys_so_they_cannot_sign_tokens() -> None:
    oct_key = {"kty": "oct", "kid": "s", "k": b64(SECRET.encode())}
    verifier = TokenVerifier(keys=load_jwks({"keys": [oct_key]}))
    assert load_jwks({"keys": [oct_key]}) == []
    refuse(verifier, sign(claims(), SECRET), "no key configured for HS256")


def test_jwks_skips_encryption_and_broken_keys_and_keeps_the_rest(keys: Keys) -> None:
    doc = {
        "keys": [
            jwk_of(keys.rsa, "enc", use="enc"),
            {"kty": "RSA", "kid": "broken"},
            "nonsense",
            jwk_of(keys.ec, "good"),
        ]
    }
    assert [k.kid for k in load_jwks(doc)] == ["good"]


@pytest.mark.parametrize("document", ["{", "[]", '{"keys": {}}'])
def test_a_document_that_is_not_a_jwks_is_an_error(document: str) -> None:
    with pytest.raises(ValueError, match=r"JSON|JWKS"):
        load_jwks(document)


def test_public_key_file_refuses_a_private_key(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(
        keys.rsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="private key"):
        load_public_key_file(path)


def test_public_key_file_refuses_a_small_rsa_key(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "small.pem"
    path.write_bytes(pem_public(small))
    with pytest.raises(ValueError, match="too small"):
        load_public_key_file(path)


def test_public_key_file_refuses_what_is_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a PEM"):
        load_public_key_file(path)


def test_unknown_algorithms_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="none"):
        TokenVerifier(secret=SECRET, algorithms=["HS256", "none"])


def test_settings_refuse_alg_none_in_the_allow_list() -> None:
    from tidings.settings import SettingsError

    with pytest.raises(SettingsError, match=r"auth\.algorithms"):
        load_settings(auth={"algorithms": ["none"]})


def test_grants_round_trip_through_the_claim() -> None:
    from tidings.auth.tokens import grants_to_claim

    grants = parse_grants({"a:*": ["history", "subscribe"]})
    assert parse_grants(grants_to_claim(grants)) == grants
    assert parse_grants(None) == {}


# ------------------------------------------------------------------------- subscription tokens


def sub_claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "42", "channel": "room:7", "exp": NOW + 60, "info": "Ann"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_subscription_token_grants_reading_its_one_channel(keys: Keys) -> None:
    verifier = TokenVerifier(secret=SECRET, keys=[VerificationKey.from_public_key(keys.ec.public_key())])
    for token in (sign(sub_claims(), SECRET), sign(sub_claims(), keys.ec, "ES256")):
        grant = verifier.verify_subscription_nowait(token, channel="room:7", user="42", now=NOW)
        assert grant == SubscriptionGrant("42", "room:7", NOW + 60, "Ann")
        creds = grant.credentials()
        private = NamespaceOptions(private=True, presence=True)
        assert allowed(Capability.SUBSCRIBE, "room:7", private, creds)
        assert allowed(Capability.HISTORY, "room:7", private, creds)
        assert not allowed(Capability.PUBLISH, "room:7", private, creds)
        assert not allowed(Capability.SUBSCRIBE, "room:8", private, creds)


def test_subscription_token_for_another_channel_or_user_is_forbidden() -> None:
    token = sign(sub_claims(), SECRET)
    with pytest.raises(Forbidden, match="for channel 'room:7', not 'room:8'"):
        hs_verifier().verify_subscription_nowait(token, channel="room:8", user="42", now=NOW)
    with pytest.raises(Forbidden, match="another user"):
        hs_verifier().verify_subscription_nowait(token, channel="room:7", user="43", now=NOW)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (sub_claims(exp=NOW - 1), "expired"),
        (sub_claims(channel=None), 'need a "channel" claim'),
        (sub_claims(channel="bad channel"), "not a channel name"),
        (sub_claims(channels={"*": ["subscribe"]}), 'must not carry "channels"'),
        (sub_claims(sub=None), '"sub" is required'),
    ],
)
def test_invalid_subscription_tokens_are_unauthorized(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(Unauthorized, match=match):
        hs_verifier().verify_subscription_nowait(sign(payload, SECRET), channel="room:7", user="42", now=NOW)


def test_a_connection_token_is_not_a_subscription_token() -> None:
    with pytest.raises(Unauthorized, match='need a "channel" claim'):
        hs_verifier().verify_subscription_nowait(sign(claims(), SECRET), channel="room:7", user="42", now=NOW)


def test_expired_subscription_token_raises_token_expired() -> None:
    with pytest.raises(TokenExpired):
        hs_verifier().verify_subscription_nowait(
            sign(sub_claims(exp=NOW), SECRET), channel="room:7", user="42", now=NOW
        )


async def test_async_verification_without_jwks_url_matches_nowait() -> None:
    verifier = hs_verifier()
    creds = await verifier.verify_connection(sign(claims(), SECRET), now=NOW)
    assert creds.user == "42"
    grant = await verifier.verify_subscription(
        sign(sub_claims(), SECRET), channel="room:7", user="42", now=NOW
    )
    assert grant.channel == "room:7"


def test_short_secret_is_accepted_without_a_warning_per_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # settings allow 16-character secrets; PyJWT would warn on every verification (an error
    # under filterwarnings=error); the verifier logs once instead.
    short = "0123456789abcdef"
    verifier = TokenVerifier(secret=short)
    assert "at least 32" in caplog.text
    assert verifier.verify_connection_nowait(sign(claims(), short), now=NOW).user == "42"
