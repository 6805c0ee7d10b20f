"""The generated references: docs/config.md and docs/redaction.md are what the code says, every key is described."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from aftercall.config import Config
from aftercall.core.config import Section, setting
from aftercall.reference import (PAGES, config_reference, config_sections, field_comments, redaction_reference,
                                 regex_alternatives)
from conftest import ROOT

DOCS = ROOT / "docs"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_committed_reference_is_the_generated_one(name):
    committed = (DOCS / name).read_text(encoding="utf-8") if (DOCS / name).is_file() else ""
    assert committed == PAGES[name](), f"docs/{name} is stale: run `make docs` and commit it"


def test_every_key_of_every_section_is_in_its_section_with_a_description():
    text = config_reference()
    chunks = dict(re.findall(r"^## \[(\w+)\]\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL))
    assert list(chunks) == [f.name for f in dataclasses.fields(Config)]
    for field in dataclasses.fields(Config):
        for key in dataclasses.fields(field.default_factory):
            assert f"\n| `{key.name}` |" in chunks[field.name], f"{field.name}.{key.name} is not in docs/config.md"
    undescribed = [f"{section.name}.{key.name}" for section in config_sections() for key in section.keys
                   if not key.description.strip()]
    assert not undescribed, f"add a comment above each of these fields, then `make docs`: {', '.join(undescribed)}"


def test_a_key_shows_its_type_default_range_and_comment():
    text = config_reference()
    assert ("| `beam_size` | integer | `5` | 1 to 10 | The embedded recogniser's beam search width: wider can be more "
            "accurate, and is slower. |") in text
    assert "| `backend` | string | `\"embedded\"` | `\"embedded\"`, `\"riva\"` |" in text
    assert "| `roles` | list of strings | `[\"agent\", \"customer\"]` |" in text
    assert "| `cues` | table | `{}` |" in text and "| `vad` | true/false | `true` |" in text
    assert "Renamed: `mono_speaker` is now asr.mono" in text
    assert "Environment: `AFTERCALL_ASR_SERVER__<KEY>`." in text
    # A "|" in a comment would end the table cell.
    assert "agent=label:L\\|aor:REGEX\\|first\\|second" in text


@dataclass(frozen=True)
class _Commented(Section):
    """A section for the comment reader."""

    # Two lines
    # of comment.
    first: int = setting(1, between=(0, 2))

    # A comment with a blank line after it describes nothing.

    second: str = "# not a comment"
    third: bool = False  # a trailing comment is no description


def test_a_fields_comment_is_the_comment_block_directly_above_it():
    assert field_comments(_Commented) == {"first": "Two lines of comment.", "second": "", "third": ""}


def test_regex_alternatives_split_only_at_the_top_level():
    assert regex_alternatives(r"a|b(?:c|d)|[|\]]e|\|f|[]|]g") == ["a", r"b(?:c|d)", r"[|\]]e", r"\|f", "[]|]g"]


def test_the_redaction_reference_shows_every_type_and_every_shipped_cue():
    from aftercall.redact.rules import ALWAYS_ON, RULES

    text = redaction_reference()
    for rule in RULES:
        row = f"| `{rule.kind}` | `{rule.placeholder}` | {rule.found_by} | {'yes' if rule.cues else 'no'} | "
        assert row + ("no" if rule.kind in ALWAYS_ON else "yes") in text
    assert "- `security (?:code|number|digits|bit)`" in text and "- `\\bref\\b`" in text
    assert "| `PERSON` | `NAME` |" in text


def test_the_entry_point_writes_the_pages_and_check_names_a_stale_one(tmp_path):
    def reference(*args):
        return subprocess.run([sys.executable, "-m", "aftercall.reference", *args, str(tmp_path)],
                              capture_output=True, text=True, timeout=120)

    missing = reference("--check")
    assert missing.returncode == 1 and "config.md is stale: run `make docs`" in missing.stderr
    assert not (tmp_path / "config.md").exists()
    assert reference().returncode == 0
    assert (tmp_path / "config.md").read_text() == config_reference()
    assert (tmp_path / "redaction.md").read_text() == redaction_reference()
    assert reference("--check").returncode == 0
    (tmp_path / "redaction.md").write_text("edited by hand\n")
    stale = reference("--check")
    assert stale.returncode == 1 and "redaction.md is stale: run `make docs`" in stale.stderr
    assert "config.md" not in stale.stderr


def test_the_example_site_config_in_the_docs_loads(tmp_path):
    """docs/configuration.md's example is a config the appliance accepts, as written."""
    from aftercall.config import load_config

    example = re.search(r"```toml\n(.*?)```", (DOCS / "configuration.md").read_text(encoding="utf-8"), re.DOTALL)
    path = tmp_path / "site.toml"
    path.write_text(example.group(1), encoding="utf-8")
    config = load_config(path, environ={})
    assert config.access.pbx == ("pbx-1.site",) and config.crm.endpoints and config.redact.cues["NHS_NUMBER"]
