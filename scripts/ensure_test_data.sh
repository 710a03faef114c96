#!/usr/bin/env bash
# Installs the data the tests read from Debian's packages when the machine lacks it and we may install
# (root). Elsewhere the tests that need it skip with a message saying what is missing.
set -u
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's dataset-fashion-mnist for the tests"
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) ||
   echo "could not install dataset-fashion-mnist; its tests will skip"
fi
exit 0
