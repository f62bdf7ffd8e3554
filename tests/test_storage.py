from __future__ import annotations

from pathlib import Path

import pytest

from mmray import storage
from mmray.errors import StorageAccessDeniedError
from mmray.s3_client import MULTIPART_THRESHOLD_BYTES
from tests.support.seaweedfs import ACCESS_KEY


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    bucket: str = request.getfixturevalue("s3_env")
    return storage.join(bucket, "prefix")


def test_put_get_exists_list(root: str) -> None:
    storage.write_bytes(storage.join(root, "a", "one.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "a", "b", "two.txt"), "zwei")
    assert storage.read_bytes(storage.join(root, "a", "one.bin")) == b"\x00\x01"
    assert storage.read_text(storage.join(root, "a", "b", "two.txt")) == "zwei"
    assert storage.exists(storage.join(root, "a", "one.bin"))
    assert storage.exists(storage.join(root, "a"))
    assert not storage.exists(storage.join(root, "nothing"))
    listed = [storage.relative_to(u, root) for u in storage.list_files(root)]
    assert listed == ["a/b/two.txt", "a/one.bin"]
    assert storage.list_files(storage.join(root, "empty")) == []


def test_missing_object_is_a_clear_error(root: str) -> None:
    with pytest.raises(storage.StorageNotFoundError, match=r"missing\.txt"):
        storage.read_bytes(storage.join(root, "missing.txt"))


def test_failed_atomic_write_leaves_nothing_and_keeps_old_content(root: str) -> None:
    target = storage.join(root, "model.bin")
    with pytest.raises(RuntimeError), storage.atomic_output(target) as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert not storage.exists(target)
    assert storage.list_files(root) == []

    storage.write_bytes(target, b"complete v1")
    with pytest.raises(RuntimeError), storage.atomic_output(target) as staged:
        staged.write_bytes(b"partial v2")
        raise RuntimeError("crash while writing")
    assert storage.read_bytes(target) == b"complete v1"
    assert [storage.relative_to(u, root) for u in storage.list_files(root)] == ["model.bin"]


def test_local_atomic_write_never_shows_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with storage.atomic_output(target) as staged:
        staged.write_bytes(b"x" * 1000)
        assert not target.exists()
        assert staged.parent == target.parent
    assert target.read_bytes() == b"x" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_directory_upload_download_round_trip(root: str, tmp_path: Path) -> None:
    source = tmp_path / "bundle"
    (source / "nested" / "deeper").mkdir(parents=True)
    files = {
        "weights.pt": b"w" * 5000,
        "config.yaml": b"kind: train\n",
        "nested/deeper/tokenizer.json": b"{}",
    }
    for name, content in files.items():
        (source / name).write_bytes(content)
    written = storage.upload_dir(source, storage.join(root, "bundle"))
    assert len(written) == 3
    back = tmp_path / "back"
    storage.download_dir(storage.join(root, "bundle"), back)
    assert {p.relative_to(back).as_posix(): p.read_bytes() for p in back.rglob("*") if p.is_file()} == files
    with storage.local_copy(storage.join(root, "bundle", "config.yaml")) as local:
        assert local.read_bytes() == b"kind: train\n"
    storage.delete_tree(storage.join(root, "bundle"))
    assert not storage.exists(storage.join(root, "bundle"))


def test_a_published_directory_replaces_the_old_one_its_manifest_uploaded_last(root: str, tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in ("a.bin", "bundle.json", "z.bin"):
        (staged / name).write_bytes(name.encode())
    uploaded = storage.upload_dir(staged, storage.join(root, "uploaded"), last="bundle.json")
    assert [uri.rsplit("/", 1)[-1] for uri in uploaded] == ["a.bin", "z.bin", "bundle.json"]

    target = storage.join(root, "published")
    storage.publish_dir(staged, target, last="bundle.json")
    (staged / "a.bin").write_bytes(b"new")
    storage.publish_dir(staged, target, last="bundle.json")
    assert storage.read_bytes(storage.join(target, "a.bin")) == b"new"
    assert sorted(uri.rsplit("/", 1)[-1] for uri in storage.list_files(target)) == ["a.bin", "bundle.json", "z.bin"]
    if not storage.is_s3(root):
        assert sorted(p.name for p in Path(root).iterdir()) == ["published", "uploaded"], "nothing staged is left"


@pytest.mark.parametrize("key", ["/tmp/planted.txt", "../../planted.txt", "a/../../planted.txt", "a//b.txt", "./a"])
def test_a_listed_key_that_would_land_outside_the_download_directory_is_refused(tmp_path: Path, key: str) -> None:
    # S3 stores such keys as given (SeaweedFS normalises them, so a bucket listing them is not made here)
    with pytest.raises(storage.StorageError, match=r"s3://b/bundle: the key .* is not a plain relative path"):
        storage.local_target(tmp_path / "down", key, "s3://b/bundle")
    assert storage.local_target(tmp_path / "down", "nested/model.safetensors", "s3://b/bundle") == (
        tmp_path / "down" / "nested" / "model.safetensors"
    )


def test_download_of_missing_directory_fails(root: str, tmp_path: Path) -> None:
    with pytest.raises(storage.StorageNotFoundError):
        storage.download_dir(storage.join(root, "absent"), tmp_path / "x")


def test_wrong_secret_is_refused(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = storage.join(s3_env, "secret.txt")
    storage.write_text(uri, "classified")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageAccessDeniedError, match="S3 refused the request"):
        storage.read_text(uri)
    with pytest.raises(StorageAccessDeniedError):
        storage.write_text(storage.join(s3_env, "other.txt"), "x")


def test_unknown_access_key_is_refused(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "X" + ACCESS_KEY)
    with pytest.raises(StorageAccessDeniedError, match="InvalidAccessKeyId"):
        storage.list_files(s3_env)


def test_missing_bucket(s3_env: str) -> None:
    with pytest.raises(storage.StorageNotFoundError):
        storage.read_bytes("s3://mmray-no-such-bucket-anywhere/x")


def test_an_s3_write_conditional_on_a_version_is_refused_once_another_writer_changed_it(s3_env: str) -> None:
    uri = storage.join(s3_env, "registry.json")
    assert storage.read_versioned(uri) is None
    assert storage.write_bytes_if(uri, b"first", None)
    assert not storage.write_bytes_if(uri, b"second", None), "only where there was none"
    content, version = storage.read_versioned(uri) or (b"", "")
    assert content == b"first"
    assert storage.write_bytes_if(uri, b"third", version)
    assert not storage.write_bytes_if(uri, b"stale", version), "changed since the version read"
    storage.delete(uri)
    assert not storage.write_bytes_if(uri, b"gone", version), "removed since the version read"
    assert storage.read_versioned(uri) is None


def test_s3_uri_parsing() -> None:
    assert storage.split_s3("s3://bucket/a/b.txt") == ("bucket", "a/b.txt")
    assert storage.join("s3://bucket/a", "b", "c.txt") == "s3://bucket/a/b/c.txt"
    with pytest.raises(storage.StorageError, match="names no bucket"):
        storage.split_s3("s3:///key")


def test_an_endpoint_that_never_answers_fails_within_the_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import threading
    import time

    from mmray.errors import StorageError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("MMRAY_S3_READ_TIMEOUT", "0.5")
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match=r"did not answer \(ReadTimeoutError; 3 tries.*0.5 s to read"):
            storage.read_text("s3://silent-bucket/any.json")
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()
    assert time.monotonic() - started < 20


def test_a_file_above_the_multipart_threshold_uploads_in_parts_and_reads_back(s3_env: str, tmp_path: Path) -> None:
    import hashlib

    size = MULTIPART_THRESHOLD_BYTES * 2 + 12345
    data = hashlib.sha256(b"seed").digest() * (size // 32 + 1)
    local = tmp_path / "big.bin"
    local.write_bytes(data[:size])
    uri = f"{s3_env}/big/weights.bin"
    storage.upload_file(local, uri)
    info = storage.s3_object_info(uri)
    assert info["size"] == size
    assert info["etag"].endswith("-3"), "uploaded in 3 parts: a multipart ETag ends in -<parts>"
    assert storage.read_bytes(uri) == data[:size]
