"""One JSON reader for run folders, bundles, datasets and reports: typed one-line errors that
name the file, never echo its contents (a provenance file may hold a patient's name)."""

from __future__ import annotations

import pytest

from medseg.errors import BundleError, ConfigError, InputError
from medseg.io.jsonfile import read_json_object


def test_reads_an_object(tmp_path):
    f = tmp_path / "run" / "spec.json"
    f.parent.mkdir()
    f.write_text('{"a": [1, 2], "b": {"c": "d"}}', encoding="utf-8")
    assert read_json_object(f, error=ConfigError) == {"a": [1, 2], "b": {"c": "d"}}


@pytest.mark.parametrize(("content", "expected"), [
    (b'{"PatientName": "DOE^JANE",\n  "x": }', "run/spec.json is not valid JSON (line 2); regenerate it"),
    (b'["DOE^JANE"]', "run/spec.json is not a JSON object; regenerate it"),
    (b'{"PatientName": "M\xfcller"}', "run/spec.json cannot be read (UnicodeDecodeError); regenerate it"),
])
def test_bad_files_give_one_line_without_the_contents(tmp_path, content, expected):
    f = tmp_path / "run" / "spec.json"
    f.parent.mkdir()
    f.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_json_object(f, error=InputError, hint="regenerate it")
    assert str(info.value) == expected
    assert "DOE" not in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is None and (info.value.__suppress_context__ or info.value.__context__ is None)


def test_missing_file_message_and_callers_keep_their_error_types(tmp_path):
    with pytest.raises(ConfigError, match=r"^run/x.json is missing$"):
        read_json_object(tmp_path / "run" / "x.json", error=ConfigError)
    from medseg.bundle.load import read_configs

    (tmp_path / "b" / "configs").mkdir(parents=True)
    with pytest.raises(BundleError, match="^bundle b lacks configs/metadata.json$"):
        read_configs(tmp_path / "b")
    (tmp_path / "b" / "configs" / "metadata.json").write_text("[]")
    with pytest.raises(BundleError, match="^configs/metadata.json of bundle b is not a JSON object$"):
        read_configs(tmp_path / "b", names=("metadata.json",))
