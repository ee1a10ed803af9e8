"""Outbox, email and SMS senders, message templates, the support directory."""
