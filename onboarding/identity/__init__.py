"""IDs and proving who someone is: accounts, passwords, registration, login, web sessions, password
reset, SMS codes, two-step verification, PIN, rate limits, audit, account tokens and mail; their
pages."""
