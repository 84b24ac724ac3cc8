# Convenience targets; each calls the scripts the README documents.
.PHONY: setup run test test-slow lint bench readme image

setup:
	bash scripts/setup.sh

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

# The slow suites (root needed): the image build and its nspawn and qemu boots (~5 min).
test-slow: setup
	.venv/bin/pytest -q -m slow -p no:cacheprovider

# Build the appliance image (root needed); output in $(OUT), default /var/tmp/appliance-image.
OUT ?= /var/tmp/appliance-image
image: setup
	bash image/build.sh $(OUT)

lint: setup
	.venv/bin/ruff check appliance commands tests bench scripts
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/shell_startup.py
	.venv/bin/python bench/redirect.py
	.venv/bin/python bench/ha_failover.py --quick
	.venv/bin/python bench/client_failover.py
	.venv/bin/python bench/input_bounds.py

readme: setup
	.venv/bin/python scripts/gen_reference.py --write
