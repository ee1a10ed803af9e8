"""The charging service (SPEC §3.6): contracts with eMAIDs, charging cards and their delivery, and the
OCPI 2.2.1 Tokens module (eMSP) that tells charge-point operators which cards are valid."""
