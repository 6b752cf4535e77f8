"""Known corpora: where each comes from, where it lives on disk, and fetching it safely.

A fetch streams the download through `fsutil.atomic_write` (a hidden temp file beside the
destination; a zip first goes to a nameless temp file), checks its size and sha256, unpacks the
zip member if the corpus comes zipped, then fsyncs and renames. So a failed, corrupt or
interrupted fetch leaves nothing half-written behind and never touches a file that is already
there. Corpora live in the user's data folder (`$XDG_DATA_HOME/charrnn/corpora`) unless
`$CHARRNN_DATA_DIR` (or an explicit folder) says otherwise, and each URL can be pointed at a
mirror with `$CHARRNN_URL_<NAME>`.

Library code: it raises CharRNNError kinds and reports progress through a callback. No torch.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from charrnn import __version__
from charrnn.errors import DataError, FetchError
from charrnn.fsutil import atomic_write

DIR_ENV = "CHARRNN_DATA_DIR"
CHUNK = 1 << 20
TIMEOUT_S = 60.0

# on_progress(stage, done, total): stage is "download", "unpack" or "verify"; done is bytes so
# far (0 when a stage starts); total is the bytes expected, or None when unknown.
ProgressFn = Callable[[str, int, Optional[int]], None]



@dataclass(frozen=True)
class CorpusSpec:
    """One known corpus: the file we end up with, and how to get and check it."""

    name: str
    url: str
    filename: str            # written under the corpora folder
    size: int                # bytes of that file
    sha256: Optional[str]    # of that file, where known
    description: str
    license: str
    source: str              # where to read about it
    member: Optional[str] = None          # zip member to unpack; None: the download is the file
    archive_size: Optional[int] = None    # bytes of the zip, where known
    archive_sha256: Optional[str] = None

    @property
    def url_env(self) -> str:
        """The environment variable that overrides the URL (a mirror, or a local server)."""
        return "CHARRNN_URL_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    @property
    def download_url(self) -> str:
        return os.environ.get(self.url_env) or self.url

    @property
    def download_size(self) -> Optional[int]:
        return self.archive_size if self.member else self.size

    @property
    def download_sha256(self) -> Optional[str]:
        return self.archive_sha256 if self.member else self.sha256


_WIKIPEDIA = "Wikipedia text (CC BY-SA 3.0 / GFDL), via Matt Mahoney's Large Text Compression " \
             "Benchmark"
_MAHONEY = "http://mattmahoney.net/dc/textdata.html"

CORPORA: dict[str, CorpusSpec] = {spec.name: spec for spec in (
    CorpusSpec(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
            "input.txt",
        filename="tinyshakespeare.txt", size=1_115_394,
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        description="40,000 lines from Shakespeare's plays: char-rnn's classic demo corpus",
        license="public-domain text, collected by Andrej Karpathy for char-rnn",
        source="https://github.com/karpathy/char-rnn"),
    CorpusSpec(
        name="enwik8", url="http://mattmahoney.net/dc/enwik8.zip",
        filename="enwik8", size=100_000_000,
        sha256="2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
        member="enwik8", archive_size=36_445_475,
        archive_sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
        description="first 100 MB of an English Wikipedia XML dump (2006): the standard "
                    "character-level benchmark (bits per character)",
        license=_WIKIPEDIA, source=_MAHONEY),
    CorpusSpec(
        name="text8", url="http://mattmahoney.net/dc/text8.zip",
        filename="text8", size=100_000_000,
        sha256="6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
        member="text8", archive_size=31_344_016,
        archive_sha256="a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
        description="100 MB of Wikipedia cleaned to lower-case letters and spaces",
        license=_WIKIPEDIA, source=_MAHONEY),
)}


@dataclass
class FetchResult:
    """What a fetch did: `downloaded` is False when a valid copy was already there."""

    name: str
    path: Path
    size: int
    downloaded: bool
    sha256_checked: bool
    replaced: Optional[str] = None  # why a copy already there was not valid, if there was one


# ---------------------------------------------------------------------------- lookup

def known_names() -> list[str]:
    return sorted(CORPORA)


def get_spec(name: str) -> CorpusSpec:
    """The spec of a known corpus; an unknown name is a DataError that lists the known ones."""
    spec = CORPORA.get(name) or CORPORA.get(name.strip().lower())
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name.lower(), known_names(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise DataError(f"unknown corpus {name!r}{hint}: known corpora are "
                    f"{', '.join(known_names())} (see charrnn data list)")


def corpora_dir(to: str | os.PathLike | None = None) -> Path:
    """Where corpora live: `to`, else $CHARRNN_DATA_DIR, else the user's data folder
    ($XDG_DATA_HOME/charrnn/corpora, by default ~/.local/share/charrnn/corpora), the same
    whatever folder charrnn runs in."""
    if to not in (None, ""):
        return Path(to).expanduser()
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "charrnn" / "corpora"


def corpus_path(name: str) -> Path:
    """The file of a downloaded corpus, for configs that say `data.corpus: NAME`.

    Only the size is checked here (cheap for 100 MB files); `charrnn data get` checks more.
    """
    spec = get_spec(name)
    root = corpora_dir()
    path = root / spec.filename
    where = f"looked in {root}" + ("" if os.environ.get(DIR_ENV) else
                                   f"; set {DIR_ENV} if you keep corpora elsewhere")
    if not path.is_file():
        raise DataError(f"corpus {spec.name} is not downloaded yet ({where}): run "
                        f"`charrnn data get {spec.name}` first")
    size = path.stat().st_size
    if size != spec.size:
        raise DataError(f"{path} is incomplete or corrupt ({size:,} bytes, expected "
                        f"{spec.size:,}): run `charrnn data get {spec.name}` to fetch it again")
    return path


def check_file(path: Path, spec: CorpusSpec,
               on_progress: ProgressFn | None = None) -> Optional[str]:
    """Why `path` is not a valid copy of the corpus, or None when it is."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "it is missing"
    if size != spec.size:
        return f"it has {size:,} bytes, expected {spec.size:,}"
    if spec.sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            _copy(fh, None, digest, "verify", size, on_progress)
        if digest.hexdigest() != spec.sha256:
            return f"its sha256 is {digest.hexdigest()}, expected {spec.sha256}"
    return None


def list_corpora(to: str | os.PathLike | None = None) -> list[dict]:
    """Every known corpus with its facts and whether it is downloaded (judged by size)."""
    root = corpora_dir(to)
    rows = []
    for name in known_names():
        spec = CORPORA[name]
        path = root / spec.filename
        size = path.stat().st_size if path.is_file() else None
        status = "missing" if size is None else "downloaded" if size == spec.size \
            else "incomplete"
        row = {k: v for k, v in asdict(spec).items() if k != "url"}
        row.update(url=spec.download_url, url_env=spec.url_env, download_size=spec.download_size,
                   path=str(path), downloaded=status == "downloaded", status=status)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- fetching

def fetch(name: str, to: str | os.PathLike | None = None, *, force: bool = False,
          on_progress: ProgressFn | None = None) -> FetchResult:
    """Download, verify and (if zipped) unpack a known corpus into the corpora folder.

    A valid copy already there is kept and nothing is downloaded, unless `force`. The new file
    replaces the old one only once it is complete and verified.
    """
    spec = get_spec(name)
    root = corpora_dir(to)
    dest = root / spec.filename
    replaced = None
    if dest.exists():
        replaced = check_file(dest, spec, on_progress)
        if replaced is None and not force:
            return FetchResult(spec.name, dest, spec.size, downloaded=False,
                               sha256_checked=bool(spec.sha256))
        replaced = replaced or "a fresh download was forced"
    made_root = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the corpora folder {root}: {exc.strerror}") from exc

    done = False
    try:
        _check_space(root, spec)
        try:
            with atomic_write(dest) as out:
                if spec.member:  # the zip goes to a nameless temp file, gone on any exit
                    with tempfile.TemporaryFile(dir=root) as archive:
                        _download(spec, archive, on_progress)
                        _unpack(spec, archive, out, on_progress)
                else:
                    _download(spec, out, on_progress)
        except OSError as exc:
            raise FetchError(f"cannot write {dest}: {exc.strerror or exc}") from None
        done = True
    finally:
        if made_root and not done:
            try:
                root.rmdir()  # only if still empty
            except OSError:
                pass
    return FetchResult(spec.name, dest, spec.size, downloaded=True,
                       sha256_checked=bool(spec.sha256), replaced=replaced)


def _check_space(root: Path, spec: CorpusSpec) -> None:
    need = (spec.download_size or 0) + (spec.size if spec.member else 0)
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return
    if free < need:
        raise FetchError(f"not enough disk space in {root} for {spec.name}: need "
                         f"{need / 1e6:,.1f} MB, {free / 1e6:,.1f} MB free (free some space, or "
                         f"choose another folder with --to or {DIR_ENV})")


def _download(spec: CorpusSpec, out: BinaryIO, on_progress: ProgressFn | None) -> None:
    """Stream the download into `out`, checking length, size and sha256 on the way."""
    url = spec.download_url
    what = f"the download of {spec.name} from {url}"
    mirror = f" (it comes from ${spec.url_env})" if os.environ.get(spec.url_env) else ""
    request = urllib.request.Request(url, headers={"User-Agent": f"charrnn/{__version__}"})
    expected = spec.download_size
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if expected is not None and length is not None and length != expected:
                raise FetchError(f"{what} would be {length:,} bytes, expected {expected:,}: the "
                                 f"server offers a different or truncated file{mirror}")
            got = _copy(response, out, digest, "download", expected or length, on_progress,
                        limit=expected, what=what)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"cannot download {spec.name}: {url} answered HTTP {exc.code} "
                         f"{exc.reason}{mirror}") from None
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, OSError):  # "unknown url type", "no host given"
            raise DataError(f"cannot download {spec.name}: bad URL {url!r} ({exc.reason})"
                            f"{mirror}") from None
        reason = exc.reason.strerror or exc.reason
        raise FetchError(f"cannot download {spec.name} from {url}: {reason} (check the "
                         f"network connection, or point ${spec.url_env} at a mirror)") from None
    except (socket.timeout, TimeoutError):
        raise FetchError(f"{what} timed out after {TIMEOUT_S:.0f} s without data: try again "
                         f"later") from None
    except http.client.HTTPException as exc:
        raise FetchError(f"{what} failed: {type(exc).__name__} {exc} (the connection "
                         f"dropped: try again)") from None
    except ValueError as exc:  # a URL that urllib cannot use
        raise DataError(f"cannot download {spec.name}: bad URL {url!r} ({exc})"
                        f"{mirror}") from None
    except OSError as exc:
        raise FetchError(f"{what} failed: {exc.strerror or exc}"
                         f"{' (' + exc.filename + ')' if exc.filename else ''}") from None
    if length is not None and got != length:
        raise FetchError(f"{what} is incomplete: got {got:,} of {length:,} bytes (the "
                         f"connection dropped: try again)")
    if expected is not None and got != expected:
        raise FetchError(f"{what} has {got:,} bytes, expected {expected:,}: the file is "
                         f"truncated or not the right one{mirror}")
    known = spec.download_sha256
    if known and digest.hexdigest() != known:
        raise FetchError(f"{what} is corrupt: its sha256 is {digest.hexdigest()}, expected "
                         f"{known}{mirror}")


def _unpack(spec: CorpusSpec, archive: BinaryIO, out: BinaryIO,
            on_progress: ProgressFn | None) -> None:
    """Extract the corpus member of a downloaded zip into `out` and verify it."""
    what = f"the archive of {spec.name} from {spec.download_url}"
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(spec.member)
            except KeyError:
                names = ", ".join(zf.namelist()[:5]) or "nothing"
                raise FetchError(f"{what} has no member {spec.member!r} (it holds: "
                                 f"{names})") from None
            if info.file_size != spec.size:
                raise FetchError(f"{what} holds {spec.member!r} of {info.file_size:,} bytes, "
                                 f"expected {spec.size:,}: it is not the right file")
            with zf.open(info) as src:
                got = _copy(src, out, digest, "unpack", spec.size, on_progress,
                            limit=spec.size, what=what)
    except FetchError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise FetchError(f"{what} is not a valid zip archive ({exc}): the download is "
                         f"corrupt; try again") from None
    except OSError as exc:
        raise FetchError(f"cannot unpack {spec.name}: {exc.strerror or exc}") from None
    if got != spec.size:
        raise FetchError(f"{what} unpacked to {got:,} bytes, expected {spec.size:,}: the "
                         f"archive is corrupt; try again")
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        raise FetchError(f"{spec.member} from {what} is corrupt: its sha256 is "
                         f"{digest.hexdigest()}, expected {spec.sha256}")


def _copy(src: BinaryIO, out: BinaryIO | None, digest, stage: str, total: Optional[int],
          on_progress: ProgressFn | None, *, limit: Optional[int] = None,
          what: str = "") -> int:
    """Copy in chunks, hashing and reporting progress. Returns the bytes copied."""
    done = 0
    if on_progress:
        on_progress(stage, 0, total)
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        done += len(chunk)
        if limit is not None and done > limit:
            raise FetchError(f"{what} is larger than the expected {limit:,} bytes: it is not "
                             f"the right file")
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        if on_progress:
            on_progress(stage, done, total)
    return done


