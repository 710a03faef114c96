#!/usr/bin/env bash
# Installs the browser the dashboard's tests drive (tests/e2e/test_browser.py) from Debian's packages when the
# machine lacks it and we may install (root): headless Chromium and the chromedriver of the same version.
# Elsewhere those tests skip with a message saying what is missing.
set -u
missing() { [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; }
if missing && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium and chromium-driver for the browser tests"
  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) ||
   echo "could not install chromium and chromium-driver; the browser tests will skip"
fi
exit 0
