#!/usr/bin/env bash
# Installs the browser the dashboard's tests drive (tests/e2e/test_browser.py) from Debian's packages when the
# machine lacks it: headless Chromium and the chromedriver of the same version. `make test` stops here when
# they cannot be installed, so the browser tests never skip unnoticed in CI; DCGAN_ALLOW_NO_BROWSER=1 lets a
# machine without them (no root, no apt) run the rest, and those tests then skip with a message.
set -u
missing() { [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; }
if missing && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium and chromium-driver for the browser tests"
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)
fi
if missing; then
  echo "chromium and chromium-driver are missing and could not be installed (apt-get as root);" \
       "install them, or set DCGAN_ALLOW_NO_BROWSER=1 to skip the browser tests" >&2
  [ "${DCGAN_ALLOW_NO_BROWSER:-}" = 1 ] || exit 1
fi
exit 0
