"""Validation messages that are shown on buyer pages but defined in ``onboarding/core/fields.py``.

``clean_name`` in ``onboarding/core/fields.py`` raises these fixed messages as ``FieldError``s, and the
buyer's pages (``create_id.html``) show them through ``_(message)``. ``onboarding/core/fields.py`` is shared
with the machine API and does not mark them, so they are listed here, inside ``N_()``, for extraction
into the catalogues. Keep each one byte-identical to its source; tests/test_i18n.py checks that.

``clean_email`` marks its own messages (``EMAIL_*`` in ``fields.py``). ``clean_country`` only produces
messages with a value in them (f-strings), which no catalogue entry can match, so it is not listed.
"""

from __future__ import annotations

from onboarding.core.i18n import N_

VEHICLE_SERVICE_MESSAGES: tuple[str, ...] = (
    # onboarding.core.fields.clean_name
    N_("Must not be empty."),
    N_("At most 100 characters."),
    N_("Contains characters that are not used in names."),
)
