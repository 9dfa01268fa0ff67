import tidings


def test_public_names_are_pinned():
    assert sorted(tidings.__all__) == sorted(
        [
            "AsyncServerAPI",
            "Client",
            "Gap",
            "Node",
            "Position",
            "Publication",
            "ServerAPI",
            "Settings",
            "SyncClient",
            "__version__",
            "create_app",
            "load_settings",
        ]
    )
    for name in tidings.__all__:
        assert getattr(tidings, name) is not None
