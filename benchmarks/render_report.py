"""Render an eebench report to a PNG screenshot, as a reader sees it in a browser.

    python benchmarks/render_report.py RUN [RUN_B] [--out report.png] [--width 1400] [--height 8000]

Builds the report of the run (or the comparison of two runs) into a temporary folder, or uses
``RUN/report/report.html`` when given ``--existing``, and screenshots the page with headless
Chromium (``apt-get install chromium``; ``--browser`` names another binary). Look at the PNG:
every figure and the opening answer should read without zooming.

Not a benchmark (asv imports the module and finds no ``time_``/``track_`` function in it): a
script anyone can repeat.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser(name: str | None) -> str:
    """The browser binary to use; a clear error naming what to install when none is found."""
    for candidate in (name,) if name else BROWSERS:
        path = shutil.which(candidate)
        if path:
            return path
    raise SystemExit(
        f"render_report: no browser found (looked for {name or ', '.join(BROWSERS)}); install one, "
        "e.g. 'apt-get install -y chromium', or pass --browser PATH"
    )


def screenshot(html: Path, png: Path, browser: str, width: int, height: int) -> None:
    """Headless screenshot of ``html`` into ``png`` (Chromium's own renderer, no network)."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={png.resolve()}",
        f"--window-size={width},{height}",
        html.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not png.exists():
        raise SystemExit(
            f"render_report: {browser} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="one run folder, or two to compare")
    parser.add_argument("--out", default="report.png", help="PNG to write (default: report.png)")
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels")
    parser.add_argument("--height", type=int, default=8000, help="window height in pixels")
    parser.add_argument("--browser", default=None, help="browser binary (default: chromium)")
    parser.add_argument(
        "--existing",
        action="store_true",
        help="screenshot RUN/report/report.html as it is instead of building the report",
    )
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    out = Path(args.out)
    if args.existing:
        html = Path(args.runs[0]) / "report" / "report.html"
        if not html.exists():
            raise SystemExit(f"render_report: {html} does not exist; drop --existing to build it")
        screenshot(html, out, browser, args.width, args.height)
    else:
        from eebench.report import build_report

        with tempfile.TemporaryDirectory(prefix="eebench-report-") as tmp:
            files = build_report(args.runs, Path(tmp) / "report")
            screenshot(files.html, out, browser, args.width, args.height)
            for name, why in files.missing.items():
                print(f"not shown: {name}: {why}")
    print(f"wrote {out} ({args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
