"""Hypothesis strategies for core values."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from tidings.core.position import EPOCH_ALPHABET, Position

CHANNEL_CHARS = string.ascii_letters + string.digits + "_.:@/=-"

channels = st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=200)
epochs = st.text(alphabet="".join(sorted(EPOCH_ALPHABET)), min_size=1, max_size=64)
offsets = st.integers(min_value=0, max_value=10**18 - 1)
positions = st.builds(Position, epochs, offsets)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
