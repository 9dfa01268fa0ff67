"""Python clients of tidings."""
