"""Draw the app's icons: icons/icon.svg and the PNGs (192, 512, maskable 512) from one geometry.

Run with any Python that has Pillow (the project's .venv has it):
``.venv/bin/python web/tools/make_icons.py``. The outputs are committed (a few KB), so
setup does not need to run this.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ICONS = Path(__file__).resolve().parent.parent / "icons"
BLUE, WHITE, AMBER = "#1f4e8c", "#ffffff", "#e69f00"
BUBBLE = (96, 128, 416, 352)  # speech bubble box on a 512 grid
TAIL = [(176, 340), (256, 340), (160, 420)]
BARS = [(186, 56), (226, 120), (266, 168), (306, 96), (346, 48)]  # (x centre, height)
BAR_W = 24


def svg() -> str:
    """The icon as SVG (the same shapes the PNGs are drawn with)."""
    x0, y0, x1, y1 = BUBBLE
    bars = "".join(
        f'<rect x="{x - BAR_W // 2}" y="{240 - h // 2}" width="{BAR_W}" height="{h}" '
        f'rx="{BAR_W // 2}" fill="{AMBER}"/>'
        for x, h in BARS
    )
    tail = " ".join(f"{x},{y}" for x, y in TAIL)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 512">'
        f'<rect width="512" height="512" rx="112" fill="{BLUE}"/>'
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" rx="48" fill="{WHITE}"/>'
        f'<polygon points="{tail}" fill="{WHITE}"/>{bars}</svg>\n'
    )


def png(size: int, maskable: bool = False) -> Image.Image:
    """The icon at ``size`` px; ``maskable``: full-bleed background, shapes in the safe zone."""
    big = 2048  # drawn large, then scaled down: smooth edges
    s = big / 512
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if maskable:
        d.rectangle((0, 0, big, big), fill=BLUE)
    else:
        d.rounded_rectangle((0, 0, big - 1, big - 1), radius=112 * s, fill=BLUE)
    k = 0.8 if maskable else 1.0  # the maskable safe zone is the central 80 %

    def p(x: float, y: float) -> tuple[float, float]:
        return (256 + (x - 256) * k) * s, (256 + (y - 256) * k) * s

    x0, y0, x1, y1 = BUBBLE
    d.rounded_rectangle((*p(x0, y0), *p(x1, y1)), radius=48 * s * k, fill=WHITE)
    d.polygon([p(x, y) for x, y in TAIL], fill=WHITE)
    for x, h in BARS:
        box = (*p(x - BAR_W / 2, 240 - h / 2), *p(x + BAR_W / 2, 240 + h / 2))
        d.rounded_rectangle(box, radius=BAR_W / 2 * s * k, fill=AMBER)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    """Write the icons."""
    ICONS.mkdir(exist_ok=True)
    (ICONS / "icon.svg").write_text(svg())
    png(192).save(ICONS / "icon-192.png", optimize=True)
    png(512).save(ICONS / "icon-512.png", optimize=True)
    png(512, maskable=True).save(ICONS / "icon-maskable-512.png", optimize=True)


if __name__ == "__main__":
    main()
