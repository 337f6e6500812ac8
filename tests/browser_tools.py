"""Helpers for the browser tests (test_browser.py, test_browser_hostile.py): Debian's Chromium, a private
JupyterLab server, screenshots; and for the tests of inert student content (test_inert_html.py, test_hostile.py): a
notebook rendered as formgrader renders it, the active markup a page still holds, and the text a reader sees.

Nothing here downloads a browser: Chromium comes from Debian's `chromium` package (installed with apt-get
when missing) and Playwright only drives it.
"""

from __future__ import annotations

import collections
import contextlib
import html.parser
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from student_env import private_env

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"

def ensure_chromium() -> Path:
    """/usr/bin/chromium, installed from Debian's archive when missing (apt-get update only if that fails)."""
    if CHROMIUM.exists():
        return CHROMIUM
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=1800).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(install, env=env, check=True, capture_output=True, timeout=1800)
    return CHROMIUM


AXE_VERSION = "4.14.1"
AXE_DIR = Path.home() / ".cache" / f"normalization-course-axe-{AXE_VERSION}"


def ensure_axe() -> Path:
    """axe-core's axe.min.js (Deque's accessibility checker, pinned), installed from npm's registry when missing."""
    script = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        if not shutil.which("npm"):  # Debian's npm, as Chromium comes from Debian
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "install", "-y", "npm"], env=env, check=True, capture_output=True, timeout=1800)
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(AXE_DIR),
                        f"axe-core@{AXE_VERSION}"], check=True, capture_output=True, timeout=600)
    return script


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab server started by start_lab."""

    process: subprocess.Popen
    port: int
    token: str
    log: Path
    runtime_dir: Path

    def url(self, path: str = "lab", **query: str) -> str:
        """The address of path on this server, with the token (and any other query parameters)."""
        params = urllib.parse.urlencode({**query, "token": self.token})
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?{params}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Stop the server's process group, then any kernel it left behind (found by its connection file)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        for pid in _processes_mentioning(str(self.runtime_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_mentioning(text: str) -> list[int]:
    """Ids of the processes whose command line contains text (kernels name their connection file in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _quiet_lab_settings(settings_dir: Path) -> None:
    """JupyterLab settings for a machine without internet: no news feed, no update check (no pop-ups)."""
    notification = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}\n')


def start_lab(bin_dir: Path, root: Path, state: Path, *, timeout: float = 180, **env_extra: str) -> Lab:
    """Start `bin_dir/jupyter lab` serving root (also its working folder, where nbgrader looks for its config)
    on a free port with a random token, its HOME and Jupyter folders under state; return once /api/status
    answers. The caller stops it (Lab.stop)."""
    home = state / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = private_env(bin_dir, home, **env_extra)
    _quiet_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    port, token = free_port(), secrets.token_hex(16)
    command = [
        str(bin_dir / "jupyter"), "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",  # jupyter_server 2's name (ServerApp.token is deprecated)
        f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
        # Offline: no update check, and the extension manager does not ask PyPI for anything.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # the test machines run as root; jupyter_server refuses that unless told
        command.append("--ServerApp.allow_root=True")
    log = state / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    lab = Lab(process, port, token, log, Path(env["JUPYTER_RUNTIME_DIR"]))
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{lab.log_tail()}")
            try:
                with urllib.request.urlopen(lab.url("api/status"), timeout=5) as answer:
                    if answer.status == 200:
                        return lab
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")
            time.sleep(0.25)
    except BaseException:
        lab.stop()
        raise


def screenshot(page, name: str) -> Path:
    """A full-page PNG of page, saved as test-artifacts/browser/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def screenshot_on_failure(page, name: str) -> Iterator[None]:
    """Any failure inside becomes an AssertionError that names a screenshot of the page at that moment
    (test-artifacts/browser/<name>.png); Playwright's page dump (its aria snapshot) is left out of the message."""
    try:
        yield
    except Exception as error:  # AssertionError, Playwright's TimeoutError, ...
        try:
            where = f"screenshot of the page: {screenshot(page, name)}"
        except Exception as shot_error:  # noqa: BLE001 - the page may be gone
            where = f"(no screenshot: {shot_error})"
        message = str(error).split("\nAria snapshot:", 1)[0].rstrip()
        raise AssertionError(f"{message}\n{where}").with_traceback(error.__traceback__) from None


def formgrader_html(path: Path, template: str = "formgrade") -> str:
    """The page nbgrader 0.9.6's formgrader serves for the autograded notebook at `path` (its SubmissionHandler:
    nbconvert's HTMLExporter with nbgrader's `formgrade` template and the resources the handler passes); another
    nbconvert template (`lab`, `classic`) with `template`."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.template_name = template
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": "normalization", "notebook_id": path.stem, "submission_id": "1", "index": 0,
                 "total": 1, "base_url": "", "student": "student", "last_name": None, "first_name": None,
                 "notebook_path": str(path)}
    with warnings.catch_warnings():  # a record bundle alone "is not able to be represented": data, never shown
        warnings.filterwarnings("ignore", message="Your element with mimetype", category=UserWarning)
        page, _ = HTMLExporter(config=config).from_filename(str(path), resources=resources)
    return page


class _Active(html.parser.HTMLParser):
    """Collects, for active_content, what in a page would run a payload or fetch from its listener."""

    RAW = ("script", "style")  # elements whose content the browser runs or applies

    def __init__(self, marks: tuple[str, ...]) -> None:
        super().__init__(convert_charrefs=True)
        self.marks, self.found, self.raw = marks, [], ""

    def _marked(self, text: str) -> bool:
        return any(mark in text for mark in self.marks)

    def handle_starttag(self, tag, attrs) -> None:
        for name, value in attrs:
            if value and self._marked(value):
                self.found.append(f"<{tag} {name}={value[:80]!r}>")
        self.raw = tag if tag in self.RAW else ""

    def handle_endtag(self, tag) -> None:
        self.raw = ""

    def handle_data(self, data) -> None:
        if self.raw and self._marked(data):
            self.found.append(f"<{self.raw}>{data.strip()[:80]}")


def active_content(page: str, *marks: str) -> list[str]:
    """The tags of `page` whose attributes (an event handler, a javascript: link, a URL fetched as the page loads,
    an iframe's srcdoc) or whose script/style content carry one of `marks` (the payloads' marker, their
    listener's address). Text that merely shows a mark (a student's code, escaped) is not active."""
    parser = _Active(marks)
    parser.feed(page)
    parser.close()
    return parser.found


def page_parts(page: str) -> list[str]:
    """The pieces of text a reader sees in `page` (script and style content left out), as they are."""
    class Text(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts, self.skip = [], False

        def handle_starttag(self, tag, attrs) -> None:
            self.skip = tag in ("script", "style")

        def handle_endtag(self, tag) -> None:
            self.skip = False

        def handle_data(self, data) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return parser.parts


def page_text(page: str) -> str:
    """The text a reader sees in `page`, whitespace collapsed."""
    return " ".join(" ".join(page_parts(page)).split())


@contextlib.contextmanager
def chromium_browser():
    """One headless Chromium (Debian's), driven by Playwright. Root needs --no-sandbox; a container's small
    /dev/shm (Docker gives 64 MiB) would crash a tab without --disable-dev-shm-usage."""
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable),
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


# Attributes whose URL the browser fetches as the page loads (a link's href waits for a click).
FETCHED = {"src", "srcset", "data", "poster", "background", "action", "formaction", "xlink:href"}
ACTIVE_TAGS = {"script", "iframe", "frame", "object", "embed", "applet", "form", "base", "link", "meta", "style",
               "svg", "math", "template"}


def active_elements(page: str) -> collections.Counter:
    """What in `page` can run script, frame another page or fetch, counted by kind: active elements (script,
    iframe, object, embed, form, base, link, meta, style, svg...), event-handler attributes, javascript: and
    data:text/html URLs, URLs fetched as the page loads (other than data: images), CSS url(). A page's own
    (its template's scripts and stylesheets) are counted too: compare with the same template's page for an
    honest notebook (Counter subtraction leaves what the student's content added)."""
    found: collections.Counter = collections.Counter()

    class Parser(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs) -> None:
            if tag in ACTIVE_TAGS:
                found[f"<{tag}>"] += 1
            for name, value in attrs:
                value = (value or "").strip()
                if name.startswith("on"):
                    found[f"{name}= attribute"] += 1
                if re.match(r"(?i)(javascript|vbscript):|data:text/html", value):
                    found[f"{name}= script URL"] += 1
                if (name in FETCHED or (tag == "link" and name == "href")) and value \
                        and not re.match(r"(?i)data:image/", value):
                    found[f"<{tag} {name}=> fetched"] += 1
                if name == "style" and "url(" in value.lower():
                    found["style= url()"] += 1

    parser = Parser(convert_charrefs=True)
    parser.feed(page)
    parser.close()
    return found
