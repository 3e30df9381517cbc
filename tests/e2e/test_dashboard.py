"""The dashboard in a real headless Chromium (Debian's), driven by Playwright: upload a clip,
watch its bar reach 100 %, see the before/after stills, download the result."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from shared.config import Settings
from tests.clips import make_clip, make_planted_clip
from tests.conftest import OUTPUT, make_key

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root needs --no-sandbox; the rest keep it off a network it cannot reach.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def test_upload_watch_progress_and_download(
    browser: Browser, api_url: str, worker: str, settings: Settings, tmp_path: Path
) -> None:
    key = make_key(settings, "browser")
    clip = make_clip(tmp_path / "arrival.mp4", width=64, height=48, fps=24, seconds=3, audio="aac")
    page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page.goto(api_url)
    page.fill("#key-input", key)
    page.click("#save-key")
    expect(page.locator("#submit")).to_be_visible()

    page.set_input_files("#file", str(clip.path))
    page.select_option("select[name=upscaler]", "lanczos")
    page.select_option("select[name=interpolator]", "blend")
    page.fill("input[name=fps]", "30")
    page.click("#upload-btn")
    expect(page.locator("#upload-status")).to_contain_text("Uploaded", timeout=30_000)
    assert page.eval_on_selector("#upload-progress", "e => e.value") == 1

    job = page.locator(".job").first
    expect(job.locator(".name")).to_have_text("arrival.mp4")
    # Each card says what it is: the date, and the options with the job's id.
    expect(job.locator(".options")).to_contain_text("×2 · lanczos · blend · 30 fps · auto")
    expect(job.locator(".options")).to_contain_text("id ")
    expect(job.locator(".when")).not_to_be_empty()
    widths = set()
    for _ in range(600):
        widths.add(job.locator(".fill").evaluate("e => e.style.width"))
        if job.locator(".status").inner_text() in ("succeeded", "failed"):
            break
        # No empty before/after box while the job works.
        assert not job.locator(".compare").is_visible()
        page.wait_for_timeout(200)
    expect(job.locator(".status")).to_have_text("succeeded")
    expect(job.locator(".fill")).to_have_attribute("style", "width: 100%;")
    expect(job.locator(".detail")).to_contain_text("100 %")
    # The before/after stills load from presigned URLs.
    expect(job.locator(".compare")).to_be_visible(timeout=10_000)
    for which in (".before", ".after"):
        page.wait_for_function(
            "s => document.querySelector(s).naturalWidth > 0", arg=f".job {which}"
        )
    after_width = job.locator(".after").evaluate("e => e.naturalWidth")
    before_width = job.locator(".before").evaluate("e => e.naturalWidth")
    assert (before_width, after_width) == (64, 128)
    _check_the_wipe(page, job)

    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

    with page.expect_download() as download_info:
        job.locator(".download").click()
    saved = tmp_path / "restored.mp4"
    download_info.value.save_as(saved)
    with av.open(str(saved)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (128, 96)
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video)) == 90

    # Readable on a phone: nothing overflows a 390-px-wide screen.
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 390
    page.screenshot(path=str(OUTPUT / "dashboard-phone.png"), full_page=True)
    page.close()


def _drag_wipe(page: Page, job: Locator, fraction: float) -> np.ndarray:
    """Drag the wipe's handle to ``fraction`` of its width; the frames as they look then."""
    job.locator(".wipe").scroll_into_view_if_needed()
    box = job.locator(".wipe").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=8)
    page.mouse.up()
    shot = job.locator(".frames").screenshot()
    return cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR).astype(int)


def _check_the_wipe(page: Page, job: Locator) -> None:
    """The wipe shows the source left of its handle and the restored frame right of it."""
    before = _drag_wipe(page, job, 1.0)  # all the way right: the source only
    after = _drag_wipe(page, job, 0.0)  # all the way left: the restored frame only
    half = _drag_wipe(page, job, 0.5)
    middle = half.shape[1] // 2
    margin = 4  # the handle lands within a few pixels of the middle
    # Left of the handle the source, right of it the restored frame (the clip's edge is
    # drawn with a pixel or two of anti-aliasing, hence the small tolerance).
    left = np.abs(half[:, : middle - margin] - before[:, : middle - margin]).mean()
    right = np.abs(half[:, middle + margin :] - after[:, middle + margin :]).mean()
    apart = np.abs(before - after).mean()
    assert apart > 0.5, "the source and the restored still look the same"
    assert left < apart / 20 and right < apart / 20, (left, right, apart)
    # A click zooms in on the picture, another zooms out.
    job.locator(".frames").click()
    expect(job.locator(".frames")).to_have_class("frames zoomed")
    job.locator(".frames").click()
    expect(job.locator(".frames")).to_have_class("frames")


def test_a_wrong_key_is_refused_in_the_page(browser: Browser, api_url: str) -> None:
    page = browser.new_page()
    page.goto(api_url)
    page.fill("#key-input", "lum_not-a-key")
    page.click("#save-key")
    expect(page.locator("#key-error")).to_contain_text("unknown or revoked API key")
    expect(page.locator("#submit")).to_be_hidden()
    page.close()


def test_api_docs_render_without_the_internet(browser: Browser, api_url: str) -> None:
    # This machine reaches no CDN: Swagger UI draws only if its scripts are ours.
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(api_url) else outside.append(r.url))
    page.goto(f"{api_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Lumière")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert outside == []
    page.close()


def _preview_from_the_form(page: Page, clip: Path, interpolator: str) -> None:
    page.set_input_files("#file", str(clip))
    page.select_option("select[name=upscaler]", "lanczos")
    page.select_option("select[name=interpolator]", interpolator)
    page.fill("input[name=fps]", "48")
    page.fill("input[name=scale]", "1")
    if not page.locator("details.more").evaluate("d => d.open"):
        page.click("details.more summary")
    for part in ("degrain", "deflicker", "dust", "stabilise", "deinterlace"):
        page.select_option(f"select[name={part}]", "off")
    page.click("#preview-btn")
    expect(page.locator("#upload-status")).to_contain_text("Uploaded", timeout=30_000)


def test_previews_side_by_side_the_whole_film_and_the_report(
    browser: Browser, api_url: str, worker: str, settings: Settings, tmp_path: Path
) -> None:
    key = make_key(settings, "previews")
    clip = make_planted_clip(tmp_path / "planted.mp4")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(api_url)
    page.fill("#key-input", key)
    page.click("#save-key")
    _preview_from_the_form(page, clip, "motion")
    _preview_from_the_form(page, clip, "blend")
    cards = page.locator(".job")
    expect(cards).to_have_count(2)
    for k in range(2):
        expect(cards.nth(k).locator(".status")).to_have_text("succeeded", timeout=120_000)
        expect(cards.nth(k).locator(".options")).to_contain_text(
            "preview of 2 s from 0 s"
        )  # all of the 2 s film
    # Each preview plays in its card, and the two play side by side, in step.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.job video.clip')].every(v => v.readyState >= 1)"
    )
    assert abs(cards.first.locator("video.clip").evaluate("v => v.duration") - 2) < 0.1
    compare = page.locator("#compare-section")
    expect(compare).to_be_visible(timeout=10_000)
    expect(compare.locator("video")).to_have_count(2)
    page.click("#play-together")
    page.wait_for_timeout(600)
    times = compare.locator("video").evaluate_all("vs => vs.map(v => [v.paused, v.currentTime])")
    assert all(not paused for paused, _ in times) and abs(times[0][1] - times[1][1]) < 0.2, times

    # The motion preview's report: the planted cut, the cadence, the occluded moment.
    motion = cards.filter(has_text="motion · 48 fps")
    motion.locator("button.report").click()
    report = page.locator("#report")
    expect(report).to_be_visible()
    expect(report.locator(".facts")).to_contain_text("1 cut: 1.01 s")
    expect(report.locator(".facts")).to_contain_text("cadence 2:1 (from 16 fps)")
    expect(report.locator(".moments figure")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('#report .moments img').naturalWidth > 0")
    points = report.locator("svg.confidence polyline").get_attribute("points") or ""
    assert len(points.split()) > 40  # a point per made frame
    expect(report.locator(".stages tbody tr").first).to_be_visible()
    # Two shots, the second from the cut.
    expect(report.locator(".shots tbody tr")).to_have_count(2)
    expect(report.locator(".shots tbody tr").nth(1).locator("td").first).to_have_text("1.01 s")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard-previews-report.png"), full_page=True)

    # And the whole film with those settings, from the same upload.
    motion.locator("button.whole").click()
    expect(cards).to_have_count(3)
    expect(cards.first.locator(".options")).not_to_contain_text("preview")
    expect(cards.first.locator(".status")).to_have_text("succeeded", timeout=120_000)
    page.close()
