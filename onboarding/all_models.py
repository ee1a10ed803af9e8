"""Imports every package's tables, so string foreign keys (``"accounts.id"``) resolve whatever a
process imported first. Entry points (app, CLI, Alembic) import this module."""

from __future__ import annotations

import notifications.models
import onboarding.models
import vehicles.models

TABLE_MODULES = (notifications.models, onboarding.models, vehicles.models)
