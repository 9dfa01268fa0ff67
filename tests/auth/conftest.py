"""Real keys, generated once per session; settings isolated from the caller's environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from tests.auth.helpers import pem_public


@dataclass(frozen=True)
class Keys:
    rsa: RSAPrivateKey
    rsa2: RSAPrivateKey
    ec: EllipticCurvePrivateKey
    ec384: EllipticCurvePrivateKey
    ed: Ed25519PrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa2=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
    )


@pytest.fixture
def rsa_pem_file(keys: Keys, tmp_path: Path) -> Path:
    path = tmp_path / "rsa.pub.pem"
    path.write_bytes(pem_public(keys.rsa))
    return path


@pytest.fixture
def ec_pem_file(keys: Keys, tmp_path: Path) -> Path:
    path = tmp_path / "ec.pub.pem"
    path.write_bytes(pem_public(keys.ec))
    return path


@pytest.fixture(autouse=True)
def _no_tidings_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read TIDINGS_* variables: keep the caller's environment out of these tests."""
    for name in list(os.environ):
        if name.startswith("TIDINGS_"):
            monkeypatch.delenv(name)
