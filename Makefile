# Convenience targets; each calls the scripts the README documents.
.PHONY: setup run test test-slow lint bench readme

setup:
	bash scripts/setup.sh

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

test-slow: setup
	.venv/bin/pytest -q -m slow

lint: setup
	.venv/bin/ruff check appliance commands tests bench scripts
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/shell_startup.py
	.venv/bin/python bench/redirect.py

readme: setup
	.venv/bin/python scripts/gen_reference.py --write
