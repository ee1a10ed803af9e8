"""The machine API: API keys, order-system and reference-data endpoints."""
