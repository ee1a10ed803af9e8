"""Foundation: settings, database, clock, crypto, languages, errors, logging, field rules, market
scope."""
