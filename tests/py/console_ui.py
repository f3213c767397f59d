"""The web console (`GET /ui`) in headless Chromium, driven by Selenium.

Usage:
  console_ui.py URL --proxy NAME --end-conn ID [--every-type-on P]
                [--screenshot PNG] [--linger S]
  console_ui.py URL --token TOKEN --proxy NAME

Debian's `chromium` + `chromium-driver`; a fresh profile each run (a cold
browser). Prints one JSON line per step ({"event": ...}) and exits 0 when
every step worked:

main mode
  loaded    navigation timing of the first load of URL (ms) and when the
            proxy list was first drawn (`ready_ms`)
  added     a `latency` toxic added through the form (latency 300, name
            ui-latency), seen in the toxics table
  edited    its jitter set to 7 through the Edit form
  removed   a second toxic (`duplicate`, ui-dup) added and removed
  every_type  with --every-type-on P: one toxic of every type of
            /toxic-types added through its form on P (only what the type
            needs filled in), then removed
  ended     the connection ID closed with the row's Close button; its row gone
  chart     the chart's point count, read twice 3 s apart
  requests  every URL the page requested (Chrome's performance log and the
            page's resource timing)
token mode
  token     the page asked for the token (a wrong one first, then TOKEN),
            then listed the proxies; after a reload it did not ask again
"""
import argparse
import json
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def browser(args):
    profile = tempfile.mkdtemp(prefix="wsfault-console-")
    options = webdriver.ChromeOptions()
    options.binary_location = args.binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-extensions", "--window-size=1280,900",
                 "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(args.driver), options=options)
    driver.set_page_load_timeout(20)
    return driver, profile


def wait(driver, what, check, limit=15):
    try:
        return WebDriverWait(driver, limit, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: check(d))
    except Exception as err:
        raise SystemExit(f"timed out waiting for {what}: {err!r}\n"
                         f"banner: {d_text(driver, 'banner')}\n"
                         f"form error: {d_text(driver, 'toxic-error')}")


def d_text(driver, element_id):
    try:
        return driver.find_element(By.ID, element_id).text
    except Exception:
        return None


def one(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def click(driver, css, what):
    def attempt(d):
        el = one(d, css)
        if el is None:
            return False
        try:
            el.click()
            return True
        except StaleElementReferenceException:
            return False
    wait(driver, what, attempt)


def timings(driver):
    return driver.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        return {
          response_end_ms: nav.responseEnd,
          dom_content_loaded_ms: nav.domContentLoadedEventEnd,
          load_ms: nav.loadEventEnd,
          ready_ms: Number(document.body.dataset.ready || -1),
        };""")


def requested_urls(driver, origin):
    """Every URL requested for a document of `origin` (the console's pages;
    not the browser's own start page), whatever the URL's origin."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if (message.get("method") == "Network.requestWillBeSent"
                and params.get("documentURL", "").startswith(origin + "/")):
            urls.add(params["request"]["url"])
    page = driver.execute_script(
        "return performance.getEntries().filter(e => e.name && e.name.includes(':'))"
        ".map(e => e.name)")
    urls.update(u for u in page if "://" in u or u.startswith("data:"))
    return sorted(urls)


def add_toxic(driver, kind, name, attrs):
    click(driver, "#add-toxic", "the Add toxic button")
    Select(driver.find_element(By.ID, "toxic-type")).select_by_value(kind)
    for attr, value in attrs.items():
        field = wait(driver, f"the {attr} field", lambda d: one(d, f"#attr-{attr}"))
        field.clear()
        field.send_keys(str(value))
    driver.find_element(By.ID, "toxic-name").send_keys(name)
    driver.find_element(By.ID, "toxic-submit").click()
    return wait(driver, f"toxic {name} in the table",
                lambda d: one(d, f'#toxics tr[data-toxic="{name}"]'))


def origin_of(url):
    scheme, rest = url.split("://", 1)
    return scheme + "://" + rest.split("/", 1)[0]


def every_type(driver, proxy):
    """Adds (then removes) one toxic of every type through its generated form
    on `proxy`, filling only what /toxic-types says is needed."""
    click(driver, f'#proxy-list li[data-proxy="{proxy}"]', f"proxy {proxy}")
    wait(driver, "the proxy detail", lambda d: d.find_element(By.ID, "proxy-name").text == proxy)
    types = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = sessionStorage.getItem('wsfault.token');
        fetch('/toxic-types', {headers: token ? {Authorization: 'Bearer ' + token} : {}})
          .then(r => r.json()).then(done, e => done(String(e)));""")
    added = []
    for info in types:
        kind = info["type"]
        click(driver, "#add-toxic", "the Add toxic button")
        Select(driver.find_element(By.ID, "toxic-type")).select_by_value(kind)
        for a in info["attributes"]:
            if not (a["required"] or (a.get("one_of") or [None])[0] == a["name"]):
                continue
            field = wait(driver, f"{kind}.{a['name']}", lambda d: one(d, f"#attr-{a['name']}"))
            if a["kind"] in ("integer", "number"):
                field.send_keys(str(max(a["min"], 1) if a["kind"] == "integer" else a["min"]))
            elif a["kind"] == "choice":
                Select(field).select_by_value(a["choices"][0])
            else:
                field.send_keys("x")
        name = f"form-{kind}"
        driver.find_element(By.ID, "toxic-name").send_keys(name)
        driver.find_element(By.ID, "toxic-submit").click()
        wait(driver, f"toxic {name} in the table",
             lambda d: one(d, f'#toxics tr[data-toxic="{name}"]'))
        click(driver, f'#toxics tr[data-toxic="{name}"] button[data-action="remove"]', "Remove")
        wait(driver, f"{name} gone", lambda d: one(d, f'#toxics tr[data-toxic="{name}"]') is None)
        added.append(kind)
    emit("every_type", proxy=proxy, types=added)


def main_mode(driver, args):
    driver.get_log("performance")  # the browser's start page, not ours
    started = time.monotonic()
    driver.get(args.url)
    wait(driver, "the proxy list", lambda d: d.execute_script("return document.body.dataset.ready"))
    emit("loaded", wall_ms=round((time.monotonic() - started) * 1000), **timings(driver))

    click(driver, f'#proxy-list li[data-proxy="{args.proxy}"]', f"proxy {args.proxy}")
    wait(driver, "the proxy detail", lambda d: d.find_element(By.ID, "proxy-name").text == args.proxy)
    # The type list comes from /toxic-types.
    types = [o.get_attribute("value") for o in
             Select(driver.find_element(By.ID, "toxic-type")).options]

    row = add_toxic(driver, "latency", "ui-latency", {"latency": 300})
    emit("added", row=row.text, types=types)

    click(driver, '#toxics tr[data-toxic="ui-latency"] button[data-action="edit"]', "Edit")
    jitter = wait(driver, "the jitter field", lambda d: one(d, "#attr-jitter"))
    jitter.clear()
    jitter.send_keys("7")
    driver.find_element(By.ID, "toxic-submit").click()
    row = wait(driver, "jitter=7 in the table", lambda d: (
        (r := one(d, '#toxics tr[data-toxic="ui-latency"]')) and "jitter=7" in r.text and r))
    emit("edited", row=row.text)

    add_toxic(driver, "duplicate", "ui-dup", {})
    click(driver, '#toxics tr[data-toxic="ui-dup"] button[data-action="remove"]', "Remove")
    wait(driver, "ui-dup gone", lambda d: one(d, '#toxics tr[data-toxic="ui-dup"]') is None)
    emit("removed", name="ui-dup")

    if args.every_type_on:
        every_type(driver, args.every_type_on)
        click(driver, f'#proxy-list li[data-proxy="{args.proxy}"]', f"proxy {args.proxy}")
        wait(driver, "the proxy detail",
             lambda d: d.find_element(By.ID, "proxy-name").text == args.proxy)

    conn = f'#connections tr[data-conn-id="{args.end_conn}"]'
    row = wait(driver, f"connection {args.end_conn}", lambda d: one(d, conn))
    shown = row.text
    click(driver, f'{conn} button[data-action="close"]', "Close")
    wait(driver, f"connection {args.end_conn} gone", lambda d: one(d, conn) is None)
    emit("ended", id=args.end_conn, row=shown)

    points = lambda: int(driver.find_element(By.ID, "chart").get_attribute("data-points"))
    first = points()
    time.sleep(3)
    second = points()
    emit("chart", first=first, second=second)

    if args.screenshot:
        time.sleep(args.linger)
        # With the form of a type open, as /toxic-types builds it.
        click(driver, "#add-toxic", "the Add toxic button")
        Select(driver.find_element(By.ID, "toxic-type")).select_by_value("rate_limit")
        wait(driver, "the rate_limit form", lambda d: one(d, "#attr-messages_per_second"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, height + 140)
        time.sleep(1.2)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(args.screenshot)
        emit("screenshot", path=args.screenshot, height=height)

    emit("requests", urls=requested_urls(driver, origin_of(args.url)))


def token_mode(driver, args):
    driver.get_log("performance")  # the browser's start page, not ours
    driver.get(args.url)
    dialog_open = lambda d: d.execute_script("return document.getElementById('token-dialog').open")
    wait(driver, "the token dialog", dialog_open)
    listed_before = len(driver.find_elements(By.CSS_SELECTOR, "#proxy-list li"))
    field = driver.find_element(By.ID, "token-input")
    field.send_keys("wrong-" + args.token)
    driver.find_element(By.ID, "token-submit").click()
    # Refused: asked again, saying so.
    wait(driver, "the dialog again", lambda d: dialog_open(d) and "refused" in d_text(d, "token-why"))
    field = driver.find_element(By.ID, "token-input")
    field.send_keys(args.token)
    driver.find_element(By.ID, "token-submit").click()
    wait(driver, f"proxy {args.proxy} listed",
         lambda d: one(d, f'#proxy-list li[data-proxy="{args.proxy}"]'))
    stored = driver.execute_script("return sessionStorage.getItem('wsfault.token')")
    driver.refresh()
    wait(driver, "the proxy list after a reload",
         lambda d: one(d, f'#proxy-list li[data-proxy="{args.proxy}"]'))
    emit("token", listed_before=listed_before, stored=stored,
         asked_after_reload=bool(dialog_open(driver)),
         urls=requested_urls(driver, origin_of(args.url)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("--proxy", required=True)
    p.add_argument("--end-conn", type=int)
    p.add_argument("--every-type-on", metavar="PROXY",
                   help="add and remove a toxic of every type through the form on PROXY")
    p.add_argument("--token")
    p.add_argument("--screenshot")
    p.add_argument("--linger", type=float, default=0.0,
                   help="seconds to wait before the screenshot (more chart)")
    p.add_argument("--driver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    p.add_argument("--binary", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args()
    driver, profile = browser(args)
    try:
        if args.token:
            token_mode(driver, args)
        else:
            main_mode(driver, args)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
