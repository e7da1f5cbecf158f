"""The look every page shares (issue 16 §5), set once for the whole app rather than element by element:

- colours: white text on a coloured button, badge or chip and coloured text on the dark page both at
  least 4.5:1 (WCAG AA). One colour cannot do both, so the brand colours are dark enough for white
  text and, on the dark page, text in a brand colour (a flat button, a link, a log line) takes a
  lighter tone of it;
- the smallest text is 13 px (Quasar's `size=sm` buttons are 10 px, its badges and `text-xs` 12 px);
- every control at least 32 px high: buttons, chips, checkboxes, the header's links, a label that
  acts on a click (`hh-clickable`, widgets.activates), which shows a focus ring when the keyboard
  reaches it;
- layout utilities: the few Tailwind-named classes the pages use (`w-full`, `gap-2`, `text-sm`…),
  defined here in NiceGUI's `utilities` layer instead of running Tailwind's in-browser compiler,
  which cost every page load ~50 ms of main-thread time (bench/dashboard.py). A class not defined
  here nor by Quasar does nothing; tests/ui/test_look.py fails on one;
- scrolling regions are reachable by keyboard and Quasar's progress bars are named (a small script:
  both are elements Quasar makes, out of reach of props).

tests/browser/test_accessibility.py checks every page against axe-core and these rules.
"""

from __future__ import annotations

from typing import Final

from nicegui import app, ui

# Backgrounds with white text on them (a button, a badge, a toast): ≥ 4.5:1 (primary 5.8, positive 5.1,
# negative 6.4, info 5.4). Warning stays light: white text on it turns black.
BRAND: Final = {"primary": "#2566b0", "positive": "#1e7e34", "negative": "#c10015", "info": "#0e7490"}
# The same colours as text on the dark page and its cards (#121212 … #2a2a2a): ≥ 6.2:1.
ON_DARK: Final = {"primary": "#8ab4f8", "positive": "#6fdc8c", "negative": "#ff8a80", "info": "#31ccec"}
MIN_CONTROL_PX: Final = 32
MIN_TEXT_PX: Final = 13

# In NiceGUI's `overrides` layer: Quasar's `.text-primary { color: … !important }` is in its last layer
# (quasar_importants), and an !important rule in an earlier layer wins over one in a later layer.
LOOK_CSS: Final = (
    "@layer overrides { :root {"
    + "".join(f" --hh-{name}-text: {colour};" for name, colour in ON_DARK.items())
    + " }"
    + "".join(f" .body--dark .text-{name} {{ color: var(--hh-{name}-text) !important; }}" for name in ON_DARK)
    + f"""
.bg-warning.text-white {{ color: #000 !important; }}
.q-btn {{ font-size: 14px !important; min-height: {MIN_CONTROL_PX}px !important; }}
.q-btn--round, .q-btn--dense.q-btn--round {{ min-width: {MIN_CONTROL_PX}px !important; }}
.text-xs, .text-caption, .q-badge, .q-field__bottom {{ font-size: {MIN_TEXT_PX}px !important; line-height: 1.3; }}
.q-chip {{ height: auto; min-height: {MIN_CONTROL_PX}px; }}
.q-checkbox, .q-toggle, .q-radio {{ min-height: {MIN_CONTROL_PX}px; min-width: {MIN_CONTROL_PX}px; }}
.q-header a, .hh-clickable {{ display: inline-flex; align-items: center; min-height: {MIN_CONTROL_PX}px; }}
.hh-clickable:focus-visible {{ outline: 2px solid var(--hh-primary-text); outline-offset: 2px; border-radius: 4px; }}
}}"""
)

_REM: Final = 0.25  # Tailwind's spacing unit: `gap-2` is 0.5rem
_GAPS: Final = (0, 1, 2, 3, 4, 6)
_PADDINGS: Final = (0, 2, 3, 4)
_WIDTHS: Final = (40, 48, 64, 72, 96)
_TEXT: Final = {"sm": (0.875, 1.25), "base": (1, 1.5), "lg": (1.125, 1.75), "xl": (1.25, 1.75)}

# In the `utilities` layer: after Quasar's own (.row, .q-card …) and before `overrides`, as Tailwind's were;
# and the one piece of Tailwind's reset the pages relied on (no margins on p and pre: NiceGUI's Quasar
# layer reverts Quasar's margins to the `base` layer's).
UTILITY_CSS: Final = (
    "@layer utilities {"
    + "".join(f" .gap-{n} {{ gap: {n * _REM}rem; }}" for n in _GAPS)
    + "".join(f" .p-{n} {{ padding: {n * _REM}rem; }}" for n in _PADDINGS)
    + "".join(f" .w-{n} {{ width: {n * _REM}rem; }}" for n in _WIDTHS)
    + "".join(f" .text-{k} {{ font-size: {f}rem; line-height: {h}rem; }}" for k, (f, h) in _TEXT.items())
    + """
.gap-x-4 { column-gap: 1rem; } .gap-y-1 { row-gap: 0.25rem; }
.px-0 { padding-left: 0; padding-right: 0; } .py-1 { padding-top: 0.25rem; padding-bottom: 0.25rem; }
.pt-2 { padding-top: 0.5rem; } .ml-5 { margin-left: 1.25rem; }
.w-full { width: 100%; } .h-full { height: 100%; } .h-56 { height: 14rem; } .min-w-0 { min-width: 0; }
.max-w-full { max-width: 100%; } .max-w-md { max-width: 28rem; } .max-w-3xl { max-width: 48rem; }
.grow { flex-grow: 1; } .shrink-0 { flex-shrink: 0; }
.font-bold { font-weight: 700; } .no-underline { text-decoration: none; }
.whitespace-pre-wrap { white-space: pre-wrap; } .cursor-pointer { cursor: pointer; }
.hh-chart { width: 100%; } @media (min-width: 640px) { .hh-chart { width: 24rem; } }
.hh-side-panel { width: min(40rem, 100vw); }
}
@layer base { blockquote, dd, dl, figure, h1, h2, h3, h4, h5, h6, hr, p, pre { margin: 0; } }"""
)

# Quasar's scroll areas (ui.log) and a code block that scrolls sideways take the keyboard's focus, so a
# keyboard can scroll them; a progress bar and ui.code's copy button have a name; a menu's items are
# menu items (Quasar makes them list items). For what is added later too (at most once a frame).
LOOK_SCRIPT: Final = """<script>
(() => {
  let queued = false;
  const fix = () => {
    queued = false;
    const scrolling = '.q-scrollarea__container, .nicegui-code > .nicegui-markdown';
    for (const e of document.querySelectorAll(scrolling)) if (!e.hasAttribute('tabindex')) e.tabIndex = 0;
    for (const e of document.querySelectorAll('[role="progressbar"]:not([aria-label])'))
      e.setAttribute('aria-label', 'loading');
    for (const e of document.querySelectorAll('.q-menu .q-item[role="listitem"]')) e.setAttribute('role', 'menuitem');
    for (const e of document.querySelectorAll('.nicegui-code-copy:not([aria-label])'))
      e.setAttribute('aria-label', 'copy');
  };
  const later = () => { if (!queued) { queued = true; requestAnimationFrame(fix); } };
  document.addEventListener('DOMContentLoaded', () => {
    new MutationObserver(later).observe(document.body, {childList: true, subtree: true});
    later();
  });
})();
</script>"""


def apply_look() -> None:
    """Set the shared look for every page (the app's colours, its CSS and script); once per app."""
    app.colors(**BRAND)
    ui.add_css(UTILITY_CSS + LOOK_CSS, shared=True)
    ui.add_body_html(LOOK_SCRIPT, shared=True)
