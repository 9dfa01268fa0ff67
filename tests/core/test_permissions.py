from __future__ import annotations

import pytest

from tidings.core.permissions import (
    ANONYMOUS,
    Capability,
    Credentials,
    NamespaceOptions,
    Namespaces,
    allowed,
)

SUB, PUB, PRES, HIST = (Capability.SUBSCRIBE, Capability.PUBLISH, Capability.PRESENCE, Capability.HISTORY)
ALICE = Credentials(user="alice")


def grant(pattern: str, *caps: Capability, user: str = "alice") -> Credentials:
    return Credentials(user=user, grants={pattern: frozenset(caps)})


def test_namespaces_use_the_channels_own_namespace_options():
    chat = NamespaceOptions(client_publish=True)
    namespaces = Namespaces({"chat": chat})
    assert namespaces.for_channel("chat:lobby") is chat


def test_namespaces_fall_back_to_a_configured_default_namespace():
    default = NamespaceOptions(public=False)
    namespaces = Namespaces({"default": default})
    assert namespaces.for_channel("news:today") is default
    assert namespaces.for_channel("lobby") is default


def test_namespaces_fall_back_to_the_built_in_default():
    namespaces = Namespaces()
    assert namespaces.for_channel("news:today") == NamespaceOptions()


def test_anonymous_credentials_are_anonymous():
    assert ANONYMOUS.anonymous
    assert not ALICE.anonymous


def test_granted_matches_patterns_and_capabilities():
    creds = grant("chat:*", SUB, HIST)
    assert creds.granted(SUB, "chat:lobby")
    assert not creds.granted(PUB, "chat:lobby")
    assert not creds.granted(SUB, "news:today")


@pytest.mark.parametrize(
    ("options", "creds", "capability", "expected"),
    [
        # public namespace: anonymous clients may read, publish only with client_publish
        (NamespaceOptions(), ANONYMOUS, SUB, True),
        (NamespaceOptions(), ANONYMOUS, PUB, False),
        (NamespaceOptions(client_publish=True), ANONYMOUS, PUB, True),
        (NamespaceOptions(), ANONYMOUS, HIST, True),
        # presence needs the option, history a size above zero — even with a grant
        (NamespaceOptions(), ANONYMOUS, PRES, False),
        (NamespaceOptions(presence=True), ANONYMOUS, PRES, True),
        (NamespaceOptions(), grant("*", PRES), PRES, False),
        (NamespaceOptions(history_size=0), ANONYMOUS, HIST, False),
        (NamespaceOptions(history_size=0), grant("*", HIST), HIST, False),
        # not public: authenticated clients only
        (NamespaceOptions(public=False), ANONYMOUS, SUB, False),
        (NamespaceOptions(public=False), ALICE, SUB, True),
        (NamespaceOptions(public=False, client_publish=True), ANONYMOUS, PUB, False),
        (NamespaceOptions(public=False, client_publish=True), ALICE, PUB, True),
        # private: only grants count; a subscribe grant opens the reads
        (NamespaceOptions(private=True), ALICE, SUB, False),
        (NamespaceOptions(private=True), grant("chat:*", SUB), SUB, True),
        (NamespaceOptions(private=True, presence=True), grant("chat:*", SUB), PRES, True),
        (NamespaceOptions(private=True), grant("chat:*", SUB), HIST, True),
        (NamespaceOptions(private=True, client_publish=True), grant("chat:*", SUB), PUB, False),
        (NamespaceOptions(private=True), grant("chat:*", PUB), PUB, True),
        (NamespaceOptions(private=True), grant("news:*", SUB), SUB, False),
        # a grant opens a capability the namespace keeps closed
        (NamespaceOptions(public=False), grant("chat:lobby", SUB, user=""), SUB, True),
        (NamespaceOptions(), grant("chat:*", PUB), PUB, True),
    ],
)
def test_allowed_follows_the_decision_rule(
    options: NamespaceOptions, creds: Credentials, capability: Capability, expected: bool
):
    assert allowed(capability, "chat:lobby", options, creds) is expected
