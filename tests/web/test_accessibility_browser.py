"""WCAG 2.2 AA on every page (issue 11, item 10): axe-core, from the npm registry, run in headless
Chromium on each page of ``test_small_screens_browser`` in each of the four languages, fails on any violation; and the
skip link and the focus ring, which axe does not judge, checked directly."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.browser_support import missing_for_browser_tests
from tests.conftest import Database
from tests.web.test_small_screens_browser import ALL_PAGES, LANGS, SQLITE, render_page

pytestmark = pytest.mark.browser

AXE_VERSION = "4"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture(scope="session")
def axe_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """axe.min.js from the npm registry (``npm pack``), fetched once per session."""
    npm = shutil.which("npm")
    if npm is None:
        missing_for_browser_tests("npm (Node.js) is needed to fetch axe-core for the accessibility tests")
    folder = tmp_path_factory.mktemp("axe-core")
    packed = subprocess.run(
        [npm, "pack", f"axe-core@{AXE_VERSION}", "--silent"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    archive = folder / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        member = tar.getmember("package/axe.min.js")
        extracted = tar.extractfile(member)
        assert extracted is not None
        script = folder / "axe.min.js"
        script.write_bytes(extracted.read())
    return script


# Each visible text field's border colour against white: WCAG's contrast ratio.
BORDER_CONTRAST = """() => {
    const lum = c => {
        const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(Number).map(v => v / 255)
            .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    return [...document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]), select, textarea')]
        .map(e => [e.id || e.name, (1.05) / (lum(getComputedStyle(e).borderTopColor) + 0.05)]);
}"""


def violations(page: Any, axe_script: Path) -> list[str]:
    page.add_script_tag(path=str(axe_script))
    found: list[dict[str, Any]] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}}).then(r => r.violations)", TAGS
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at " + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in found
    ]


@SQLITE
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", list(ALL_PAGES))
def test_every_page_passes_axe(
    page: Any,
    axe_script: Path,
    db: Database,
    reference: None,
    settings: Any,
    client: TestClient,
    api_headers: dict[str, str],
    name: str,
    lang: str,
) -> None:
    page.set_content(render_page(name, lang, db, settings, client, api_headers))
    assert violations(page, axe_script) == [], (name, lang)
    # What axe leaves out: labels that tell fields apart, and field borders one can see (1.4.11).
    labels = page.evaluate("[...document.querySelectorAll('label')].map(l => l.textContent.trim())")
    assert len(labels) == len(set(labels)), (name, lang, labels)
    for field, ratio in page.evaluate(BORDER_CONTRAST):
        assert ratio >= 3, (name, lang, field, ratio)


@SQLITE
def test_the_skip_link_shows_on_focus_and_leads_to_the_content(
    page: Any, db: Database, reference: None, settings: Any, client: TestClient, api_headers: dict[str, str]
) -> None:
    page.set_content(render_page("login", "en", db, settings, client, api_headers))
    skip = page.get_by_role("link", name="Skip to main content")
    box = skip.bounding_box()
    assert box is None or box["y"] + box["height"] <= 0  # out of sight until focused
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0 and box["height"] > 10
    assert skip.get_attribute("href") == "#main"
    assert page.locator("main#main").count() == 1


@SQLITE
def test_the_phone_field_looks_like_the_other_fields(
    page: Any, db: Database, reference: None, settings: Any, client: TestClient, api_headers: dict[str, str]
) -> None:
    page.set_content(render_page("account: security", "en", db, settings, client, api_headers))
    look = "e => { const s = getComputedStyle(e); return [s.width, s.borderTopWidth, s.paddingTop]; }"
    phone = page.locator("input[type=tel]").evaluate(look)
    # A text field put beside it, in the same form, is what the phone field should look like.
    page.locator("input[type=tel]").evaluate(
        "e => { const t = document.createElement('input'); t.type = 'text'; t.id = 'beside'; e.after(t); }"
    )
    text = page.locator("#beside").evaluate(look)
    assert phone == text
    assert phone[1] == "1px" and phone[2] != "0px", phone


@SQLITE
def test_the_dark_buttons_have_a_visible_focus_ring(
    page: Any, db: Database, reference: None, settings: Any, client: TestClient, api_headers: dict[str, str]
) -> None:
    page.set_content(render_page("login", "en", db, settings, client, api_headers))
    button = page.get_by_role("button", name="Log in")
    button.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focused from the keyboard: :focus-visible
    style = button.evaluate(
        "b => { const s = getComputedStyle(b); return [s.outlineStyle, s.outlineWidth, s.outlineColor,"
        " s.outlineOffset]; }"
    )
    assert style[0] == "solid" and float(style[1].rstrip("px")) >= 2, style
    # A dark ring set off from the dark button by a white gap (the offset), on a white page.
    assert style[2] == "rgb(29, 29, 27)" and float(style[3].rstrip("px")) >= 2, style
