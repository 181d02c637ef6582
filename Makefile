# The two commands of the README: `make demo` and `make test`. Each installs what it needs first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := openjdk-17-jdk-headless maven chromium openclipart-png

.PHONY: install system-packages python-packages launcher backbone demo test lint

install: system-packages python-packages launcher backbone

# Debian packages: Java and Maven for the OpenSearch launcher, chromium for browser tests,
# openclipart-png for the public-domain sample images.
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

python-packages: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

launcher:
	$(PY) -m smarttags stack build

backbone:
	$(PY) -m smarttags backbone build

lint:
	$(VENV)/bin/ruff check plugin tests bench scheduler lambda
	$(VENV)/bin/ruff format --check plugin tests bench scheduler lambda
	$(VENV)/bin/mypy

demo: install
	$(PY) -m smarttags demo

test: install lint
	$(VENV)/bin/pytest -p no:cacheprovider -ra
