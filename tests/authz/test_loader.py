"""Config errors name the file, the line and the key, and suggest what was meant."""

from pathlib import Path

import pytest

from authz.errors import ConfigError
from authz.loader import load_auth_settings
from tests.support.tokens import SigningKey, jwks

GOOD = """\
auth:
  issuers:
    - issuer: https://issuer.test
      audiences: [doma-api]
      jwks_url: https://issuer.test/jwks.json
  claims_to_headers:
    sub: x-user-id
  bypass:
    - /api/v1/*/health
"""


def write(tmp_path: Path, text: str, name: str = "routes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_auth_settings(path)
    return caught.value


def test_good_config_loads(tmp_path):
    settings = load_auth_settings(write(tmp_path, GOOD))
    assert settings.issuers[0].algorithms == ("RS256",)
    assert settings.identity_headers == ("x-user-id",)


def test_unknown_key_names_line_and_suggests(tmp_path):
    error = error_of(write(tmp_path, GOOD.replace("audiences:", "audience:")))
    assert (error.line, error.column) == (4, 7)
    assert "unknown key 'audience'" in error.message and "did you mean 'audiences'" in error.message
    assert str(error).startswith(f"{tmp_path / 'routes.yaml'}:4:7: ")


def test_bad_url_is_refused(tmp_path):
    error = error_of(write(tmp_path, GOOD.replace("https://issuer.test/jwks.json", "ftp://x/jwks")))
    assert error.line == 5 and "jwks_url must be an http" in error.message


def test_missing_issuer_is_refused(tmp_path):
    error = error_of(
        write(
            tmp_path,
            GOOD.replace("    - issuer: https://issuer.test\n      audiences", "    - audiences"),
        )
    )
    assert "missing required key 'issuer'" in error.message and error.line == 3


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_symmetric_and_none_algorithms_are_refused(tmp_path, algorithm):
    text = GOOD.replace("      jwks_url", f"      algorithms: [{algorithm}]\n      jwks_url")
    error = error_of(write(tmp_path, text))
    assert error.line == 5 and "not allowed" in error.message


def test_two_key_sources_are_refused(tmp_path):
    text = GOOD.replace("      jwks_url", "      jwks_file: keys.json\n      jwks_url")
    assert "exactly one key source" in error_of(write(tmp_path, text)).message


def test_bad_bypass_glob_is_refused(tmp_path):
    error = error_of(write(tmp_path, GOOD.replace("/api/v1/*/health", "/api/v1/he*")))
    assert error.line == 9 and "must stand alone" in error.message


@pytest.mark.parametrize(
    "header",
    ["authorization", "keep-alive", "trailer", "proxy-connection", "x-forwarded-for",
     "forwarded", "x-request-id", "x-real-ip"],
)  # fmt: skip
def test_identity_header_cannot_be_a_credential_a_hop_field_or_one_the_edge_sets(tmp_path, header):
    error = error_of(write(tmp_path, GOOD.replace("x-user-id", header)))
    assert error.line == 7 and "reserved" in error.message


def test_leeway_is_bounded(tmp_path):
    text = GOOD.replace("      jwks_url", "      leeway_seconds: 3600\n      jwks_url")
    assert "at most 300" in error_of(write(tmp_path, text)).message


def test_yaml_syntax_error_has_a_line(tmp_path):
    error = error_of(write(tmp_path, GOOD + "  bypass: [\n"))
    assert error.line > 0


def test_unreadable_jwks_file_is_refused(tmp_path):
    text = GOOD.replace("jwks_url: https://issuer.test/jwks.json", "jwks_file: missing.json")
    error = error_of(write(tmp_path, text))
    assert error.line == 5 and "cannot read jwks_file" in error.message


def test_jwks_file_is_relative_to_the_routes_file(tmp_path):
    (tmp_path / "keys.json").write_bytes(jwks(SigningKey()))
    text = GOOD.replace("jwks_url: https://issuer.test/jwks.json", "jwks_file: keys.json")
    settings = load_auth_settings(write(tmp_path, text))
    assert settings.issuers[0].keys.location == str(tmp_path / "keys.json")


def test_directory_with_two_auth_sections_is_refused(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    error = error_of(tmp_path)
    assert error.file.endswith("b.yaml") and "a second 'auth:' section" in error.message


def test_an_empty_auth_section_is_named_as_such(tmp_path):
    error = error_of(write(tmp_path, "layers: [edge]\nauth:\n"))
    assert (error.line, error.message) == (2, "the auth: section is empty (it needs issuers)")


def test_directory_merges_other_sections(tmp_path):
    write(tmp_path, GOOD, "auth.yaml")
    write(tmp_path, "domains: []\n", "scan.yaml")
    assert load_auth_settings(tmp_path).issuers[0].issuer == "https://issuer.test"


def test_unknown_top_level_key_is_refused(tmp_path):
    error = error_of(write(tmp_path, "aut:\n  issuers: []\n"))
    assert "did you mean 'auth'" in error.message


def test_shipped_routes_load():
    settings = load_auth_settings(Path(__file__).parents[2] / "routes")
    assert "/api/v1/*/health" in settings.bypass


def test_a_claim_mapped_twice_is_refused(tmp_path):
    text = GOOD.replace("    sub: x-user-id\n", "    sub: x-user-id\n    sub: x-other\n")
    error = error_of(write(tmp_path, text))
    assert str(error).endswith("routes.yaml:8:5: duplicate key 'sub' (first at line 7)")
