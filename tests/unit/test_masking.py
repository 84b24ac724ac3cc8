import pytest

from appliance.masking import MASK, mask_line, printable

SECRETS = {"db_pass"}
FLAGS = {"db_pass", "db_host", "db_user", "yes"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("redirect --db_pass s3cret --yes", f"redirect --db_pass {MASK} --yes"),
        ("redirect --db-pass s3cret", f"redirect --db-pass {MASK}"),
        ("redirect --db_pass=s3cret", f"redirect --db_pass={MASK}"),
        ("redirect --db_pass 'a b c' --db_host h", f"redirect --db_pass {MASK} --db_host h"),
        ("redirect --db_pass \"a 'b\" x", f"redirect --db_pass {MASK} x"),
        ("redirect --db_pas s3cret", f"redirect --db_pas {MASK}"),  # misspelt: nearest flag is secret
        ("x --password hunter2", f"x --password {MASK}"),  # looks like a secret
        ("x --api-token t0k", f"x --api-token {MASK}"),
        ("redirect --db_pass 'unterminated secret", f"redirect --db_pass {MASK}"),
        ("redirect --db_pass", "redirect --db_pass"),
        ("redirect --db_pass --yes", f"redirect --db_pass {MASK}"),  # the parser reads --yes as the value
        ("x --password --yes", "x --password --yes"),
        ("system get hostname", "system get hostname"),
        ("redirect --db_user admin --db_host 10.0.0.1", "redirect --db_user admin --db_host 10.0.0.1"),
    ],
)
def test_mask_line(line, expected):
    assert mask_line(line, SECRETS, FLAGS) == expected


@pytest.mark.parametrize("secret", ["p@ss w0rd", "a'b\"c", "x=y", "ü∂ß", "-", "--not-a-flag-value"])
def test_secret_never_survives(secret):
    from shlex import quote

    line = f"redirect --db_host h --db_pass {quote(secret)} --yes"
    assert mask_line(line, SECRETS, FLAGS) == f"redirect --db_host h --db_pass {MASK} --yes"


def test_printable_escapes_control_characters():
    assert printable("a\nb\x1b[31m") == "a\\x0ab\\x1b[31m"
