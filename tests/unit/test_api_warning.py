"""Warning headers (karpor.kube.warning)."""

from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.warning import MAX_WARNING, warning_header


def test_kube_form():
    assert warning_header('cluster "a" is unhealthy: a\\b') == (
        b"warning",
        b'299 - "cluster \\"a\\" is unhealthy: a\\\\b"',
    )


def test_an_ellipsis_stays_readable():
    assert warning_header("cut\u2026 \u00e9")[1] == b'299 - "cut... ?"'


@given(st.text())
def test_any_text_makes_a_safe_header_value(text):
    name, value = warning_header(text)
    assert name == b"warning"
    assert value.startswith(b'299 - "') and value.endswith(b'"')
    assert all(0x20 <= b <= 0x7E for b in value)  # no CR/LF, ASCII only
    assert len(value) <= 2 * MAX_WARNING + 10
