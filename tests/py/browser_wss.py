"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium.

Usage: browser_wss.py URL [--spki HASH] [--driver PATH] [--binary PATH]

Opens URL (a page of page_echo_server.py, through the proxy), waits up to
20 s for <pre id="result"> to hold JSON, and prints one JSON line:
  {"event":"result","result":{...the page's JSON...},"title":"..."}
--spki trusts exactly the certificate whose SubjectPublicKeyInfo has this
base64 SHA-256 (Chromium's --ignore-certificate-errors-spki-list), which is
how a self-signed proxy certificate is trusted without a system CA.
"""
import argparse
import json
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("--spki")
    p.add_argument("--driver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    p.add_argument("--binary", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args()

    profile = tempfile.mkdtemp(prefix="wsfault-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = args.binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if args.spki:
        options.add_argument(f"--ignore-certificate-errors-spki-list={args.spki}")
    driver = webdriver.Chrome(service=Service(args.driver), options=options)
    try:
        driver.set_page_load_timeout(20)
        driver.get(args.url)
        pre = driver.find_element(By.ID, "result")
        WebDriverWait(driver, 20).until(lambda d: pre.text.startswith("{"))
        print(json.dumps({"event": "result", "result": json.loads(pre.text), "title": driver.title}),
              flush=True)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
