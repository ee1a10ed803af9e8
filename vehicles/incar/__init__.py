"""The in-car API (SPEC §3.7): each vehicle an OAuth client of its own, device login (RFC 8628) with the
security PIN, rotating refresh tokens, what the car reads, remote functions authorised with the PIN,
pairing a car without an order."""
