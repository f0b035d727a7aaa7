from authz.paths import normalize


def test_clean_path_is_unchanged_and_not_ambiguous():
    path = normalize("/api/v1/scan/results?page=2")
    assert (path.path, path.query, path.ambiguous, path.invalid) == ("/api/v1/scan/results", "page=2", None, None)
