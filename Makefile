# aftercall: `make demo` and `make test` set themselves up on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := sox festival festvox-us-slt-hts festvox-kallpc16k
SYSTEM_STAMP := $(VENV)/.system

.PHONY: demo test venv system-deps quality sample-audio clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

# sox is the reference the G.711 decoder is tested against; festival voices make the test calls.
$(SYSTEM_STAMP): $(STAMP)
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $@

system-deps: $(SYSTEM_STAMP)

demo: $(STAMP)
	$(BIN)/aftercall summarise samples/demo_call.wav --format text

test: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/python -m pytest -q

# Quality figures on the public sets in ../shared/data (docs/quality.md).
quality: $(STAMP)
	$(BIN)/python scripts/quality_report.py

sample-audio: $(SYSTEM_STAMP)
	$(BIN)/python scripts/make_call_audio.py samples/demo_call.json --out samples/demo_call.wav

clean:
	rm -rf $(VENV) build *.egg-info services/*.egg-info .pytest_cache
