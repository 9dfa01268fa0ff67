import tidings


def test_public_names_are_pinned():
    assert sorted(tidings.__all__) == sorted([
        "Gap", "Node", "Position", "Publication", "Settings", "__version__", "create_app",
        "load_settings",
    ])
    for name in tidings.__all__:
        assert getattr(tidings, name) is not None
