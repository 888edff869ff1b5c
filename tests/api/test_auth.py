"""Where the API token comes from (`load_or_create_token`) and how the header is compared."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rollwise.api.auth import is_authorized, load_or_create_token, read_token_file
from rollwise.model import ValidationFailed


def test_given_token_wins_over_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("from-file\n")
    monkeypatch.setenv("ROLLWISE_TOKEN", "from-env")
    assert load_or_create_token(tmp_path, "given") == ("given", None)
    assert load_or_create_token(tmp_path, None) == ("from-env", None)
    monkeypatch.delenv("ROLLWISE_TOKEN")
    assert load_or_create_token(tmp_path, None) == ("from-file", tmp_path / "token")


def test_a_missing_file_is_generated_private_and_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLWISE_TOKEN", raising=False)
    data = tmp_path / "new-dir"
    token, path = load_or_create_token(data, None)
    assert path == data / "token" and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token_file(data) == token
    assert load_or_create_token(data, None) == (token, path)


def test_empty_tokens_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationFailed, match="--token"):
        load_or_create_token(tmp_path, "  ")
    monkeypatch.delenv("ROLLWISE_TOKEN", raising=False)
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ValidationFailed, match="empty or unreadable"):
        load_or_create_token(tmp_path, None)


@pytest.mark.parametrize(
    ("header", "ok"),
    [("Bearer s3cret", True), ("bearer s3cret", True), ("Bearer  s3cret ", True), ("Bearer s3cre", False),
     ("Bearer s3cret2", False), ("Basic s3cret", False), ("s3cret", False), ("", False), (None, False),
     ("Bearer ", False), ("Bearer sécret", False)],
)
def test_header_check(header: str | None, ok: bool) -> None:
    assert is_authorized(header, "s3cret") is ok
