#!/usr/bin/env bash
# Re-extract the translatable strings and merge them into the de, sv and nb catalogues.
#
#   scripts/update-translations.sh
#
# 1. Extracts every marked string (``_()`` in templates, ``N_()``/``gettext_()`` in Python) into
#    onboarding/core/locale/messages.pot, using the map in babel.cfg.
# 2. Runs ``pybabel update`` for each language (a missing catalogue is created with ``pybabel init``).
#
# New or changed strings then arrive in the .po files with an empty or "fuzzy" msgstr. Translate each
# one and delete the "#, fuzzy" flag: tests/core/test_i18n.py fails until every string has a non-fuzzy
# translation in every language with the same %(name)s placeholders as the English. Nothing needs
# compiling; onboarding/i18n.py compiles the .po files in memory (.mo files are not committed).
set -euo pipefail

cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
LOCALE_DIR=onboarding/core/locale
POT="$LOCALE_DIR/messages.pot"
LANGUAGES=(de sv nb)

mkdir -p "$LOCALE_DIR"

"$PYBABEL" --quiet extract \
    --mapping-file=babel.cfg \
    --sort-by-file \
    --width=110 \
    --project="onboarding" \
    --version="0.1.0" \
    --copyright-holder="onboarding authors" \
    --output-file="$POT" \
    .

for lang in "${LANGUAGES[@]}"; do
    if [[ -f "$LOCALE_DIR/$lang/LC_MESSAGES/messages.po" ]]; then
        "$PYBABEL" --quiet update --input-file="$POT" --output-dir="$LOCALE_DIR" --locale="$lang" \
            --width=110 --ignore-obsolete
    else
        "$PYBABEL" --quiet init --input-file="$POT" --output-dir="$LOCALE_DIR" --locale="$lang" --width=110
    fi
done

echo "Updated $POT and the ${LANGUAGES[*]} catalogues; now translate any new or fuzzy entries."
