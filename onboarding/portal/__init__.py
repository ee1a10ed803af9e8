"""The staff portal (SPEC §3.8): dealer and market staff accounts, their orders, and support."""
