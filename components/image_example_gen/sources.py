"""Finding the images of a data root: layouts, listing, skipping and fingerprinting.

Three layouts are understood (`detect_layout` picks one when the config says `auto`):
  class_folders  root/<class>/**/<file>. The class is the top folder; deeper folders only
                 organize files (root/cat/2023/a.jpg is a "cat"). Files directly under
                 root are skipped (`not_in_class_folder`).
  pre_split      root/{train, validation|valid|val|eval, test}/<class>/**/<file>; the
                 splits are kept (validation, valid and val become `eval`). A tree with
                 train/ but no validation folder (train/ + test/, as many downloads are)
                 carves `eval` out of train/ by content hash (eval_fraction). Other top
                 folders are walked and their files skipped (`unknown_split_folder`).
                 Detected when the root holds train/ and any other split folder.
  csv            a manifest (the data root is a file) with rows `path,label[,split]`.
                 Relative paths are relative to the manifest's folder; absolute and URL
                 (gs://...) paths are used as they are. The first non-blank row is a
                 header when its fields name columns (`path,label`, `filename,class`, any
                 case; HEADER_NAMES). `split` may be train, validation, valid, val, eval or
                 test (any case); an empty split is assigned by content hash. A path listed
                 again is skipped as `repeated_manifest_row` (the first row wins), and a
                 row the csv module cannot parse as `malformed_manifest_row`. A file that
                 is not text (a zip, an image, UTF-16) is refused when the pipeline is built.

Class names are the folder names (or manifest labels), normalized to Unicode NFC (macOS
writes NFD) with outer whitespace stripped; everything else is kept: spaces, CJK (e.g.
"猫"), punctuation. Label ids follow Python's `sorted()` of these names, i.e. code-point
order (see ingest.py).

Every URL (`scheme://...`) goes through `tf.io.gfile`, so any filesystem TensorFlow knows
works: gs://, ram:// (used by the tests), and s3:// or hdfs:// with tensorflow-io installed.
Local paths use `os` directly, and TensorFlow is imported only on first use: the launcher
of `imgpipe ingest` touches only the data root and the output folder, and importing
TensorFlow there would add ~4 s to every run's start-up (BENCHMARKS.md, "Ingest").

Listing runs on Beam workers (`ListImageFiles`): one DoFn lists only the top level (class or
split/class folders), a Reshuffle spreads those folders over workers, and each folder is
walked lazily. No file list is ever held in the launcher; the runner's shuffle holds only
(path, label) tuples. Hidden and system entries (`.*`, which includes `._*` and `.DS_Store`,
`Thumbs.db`, `desktop.ini`, `__MACOSX`, `$RECYCLE.BIN`) are reported as skipped, never
silently dropped; a hidden folder is one skipped entry (`.git/`). Local symlinks are
followed; a symlink back to a folder on the current path (a loop) is skipped as
`symlink_loop`. A class folder without any non-hidden file is reported as an empty folder.
A file or folder whose name is not valid UTF-8 (Latin-1 names from an old zip, say) is
skipped as `non_utf8_name` and reported with its undecodable bytes escaped ("caf\\xe9.jpg"),
because class names, tf.Example strings and the report are UTF-8.
"""
from __future__ import annotations

import csv
import hashlib
import os
import posixpath
import shutil
import stat
import unicodedata
from typing import Iterable, Iterator, NamedTuple, Optional

import apache_beam as beam

from components.image_example_gen.options import LAYOUTS, is_inside, is_remote
from trainer_module import features

PRE_SPLIT_DIRS = {"train": features.TRAIN_SPLIT, "validation": features.EVAL_SPLIT,
                  "valid": features.EVAL_SPLIT, "val": features.EVAL_SPLIT,
                  "eval": features.EVAL_SPLIT, "test": features.TEST_SPLIT}
HEADER_NAMES = ({"path", "filename", "file", "filepath", "file_path", "image", "image_path"},
                {"label", "class", "label_name", "class_name", "category"})
_SYSTEM_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx", "$recycle.bin",
                 "system volume information"}
_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFDIR: "a folder"}
EMPTY_FOLDERS_TAG = "empty_folders"
SKIPPED_TAG = "skipped"


class Candidate(NamedTuple):
    """A file to read: where it is, how the report names it, its class and given split."""
    path: str  # readable path (local, absolute) or URL
    relpath: str  # as reported: relative to the data root, or the manifest entry
    label_name: str
    split: str  # "" when the layout does not fix it


class Skipped(NamedTuple):
    relpath: str
    reason: str


class _Folder(NamedTuple):
    """A top-level unit of listing: one class folder (or a folder whose files are skipped)."""
    path: str
    relpath: str
    label_name: str
    split: str
    skip_reason: Optional[str]


def gfile():
    """`tf.io.gfile`, imported on first use (only URLs need it)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile


def path_exists(path: str) -> bool:
    return gfile().exists(path) if is_remote(path) else os.path.exists(path)


def path_isdir(path: str) -> bool:
    return gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def read_bytes(path: str, limit: int = -1) -> bytes:
    """Up to `limit` bytes of a file (all when -1).

    Raises:
      FileNotFoundError: no such file (tf.errors.NotFoundError for URLs).
      OSError or tf.errors.OpError: any other filesystem error, or a local path that is not
        a regular file (a named pipe, socket or device).
    """
    if is_remote(path):
        with gfile().GFile(path, "rb") as f:
            return f.read(limit)
    # O_NONBLOCK: a plain open() of a named pipe would wait forever for a writer.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special')})")
        return f.read(limit)


def remove_tree(path: str) -> None:
    if is_remote(path):
        gfile().rmtree(path)
    else:
        shutil.rmtree(path)


def normalize_label(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip()


def label_problem(label: str) -> Optional[str]:
    """Why a (normalized) class name cannot be a line of labels.txt, or None if it can."""
    if not label or "\n" in label or "\r" in label:
        return "invalid_class_name"
    return None


def is_hidden_or_system(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_NAMES


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes of a non-UTF-8 file name (which Python holds as lone
    surrogates) become backslash escapes, e.g. b"caf\\xe9.jpg" -> "caf\\\\xe9.jpg"."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from undecodable bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def name_problem(name: str) -> Optional[str]:
    """Why a folder entry is skipped by name alone, or None.

    A name that is not valid UTF-8 (e.g. Latin-1 names from an old zip) is skipped and
    reported under its escaped form: labels, tf.Example strings and the report are UTF-8.
    """
    if is_hidden_or_system(name):
        return "hidden_or_system_file"
    if printable(name) != name:
        return "non_utf8_name"
    return None


def detect_layout(data_root: str, layout: str = "auto") -> str:
    """Resolves `auto` to a concrete layout.

    Raises:
      ValueError: data_root missing, or a layout that does not fit it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: must be one of {', '.join(LAYOUTS)}.")
    if not data_root or not path_exists(data_root):
        raise ValueError(f"data_root={data_root!r} does not exist.")
    if printable(data_root) != data_root:
        raise ValueError(f"data_root={printable(data_root)!r} is not valid UTF-8; rename it.")
    is_dir = path_isdir(data_root)
    if not is_dir:
        _check_manifest(data_root)
    if layout != "auto":
        if (layout == "csv") == is_dir:
            raise ValueError(f"layout={layout!r} does not fit data_root={data_root!r} "
                             f"({'a folder' if is_dir else 'a file'}).")
        return layout
    if not is_dir:
        return "csv"
    children = {name.lower() for name, _, is_sub in _entries(data_root) if is_sub}
    if "train" in children and len(children & set(PRE_SPLIT_DIRS)) > 1:
        return "pre_split"
    return "class_folders"


def _check_manifest(path: str) -> None:
    """Raises ValueError unless `path` is a regular file that looks like text."""
    try:
        head = read_bytes(path, 1 << 16)
    except Exception as err:  # a pipe, a device, unreadable
        raise ValueError(f"data_root={path!r} cannot be read as a CSV manifest "
                         f"({type(err).__name__}: {err}).") from err
    if b"\0" in head:
        raise ValueError(f"data_root={path!r} is not a CSV manifest: it holds binary data "
                         "(a zip, an image, UTF-16 text?). Give a folder, or a UTF-8 CSV of "
                         "path,label[,split].")


def check_output_dir(data_root: str, output_dir: str) -> None:
    """Creates a local output_dir; raises ValueError when it is a file, cannot be created, or
    lies inside the data root folder (the next run would list its shards, labels.txt and
    report as images)."""
    if is_inside(output_dir, data_root):
        raise ValueError(f"output {output_dir!r} is inside data_root={data_root!r}; the next "
                         "run would ingest its files. Choose a folder outside the data root.")
    if not is_remote(output_dir):
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise ValueError(f"output {output_dir!r} exists and is not a folder.")
        try:  # now, rather than after the whole ingest has run
            os.makedirs(output_dir, exist_ok=True)
        except OSError as err:
            raise ValueError(f"output {output_dir!r} cannot be created ({err}).") from err


def _entries(top: str) -> Iterator[tuple[str, str, bool]]:
    """(name, path, is_dir) of one folder, sorted by name; symlinks are followed."""
    if is_remote(top):
        for name in sorted(gfile().listdir(top)):
            clean = name.rstrip("/")
            path = posixpath.join(top, clean)
            yield clean, path, name.endswith("/") or gfile().isdir(path)
    else:
        for entry in sorted(os.scandir(top), key=lambda e: e.name):
            yield entry.name, entry.path, entry.is_dir(follow_symlinks=True)


def _dir_key(path: str) -> Optional[tuple]:
    """(device, inode) of a local folder, symlinks followed; None for URLs."""
    if is_remote(path):
        return None
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _walk(top: str, rel: str, ancestors: frozenset) -> Iterator[tuple[str, str, Optional[str]]]:
    """Yields (path, rel path, skip reason or None) for every entry below folder `top`.

    `ancestors` holds the (device, inode) of the folders on the way here: a symlink to one
    of them is a loop. Folders reached twice along different paths are walked twice (their
    files then show up as duplicates), which is what the user's links say.
    """
    try:
        key = _dir_key(top)
        if key is not None and key in ancestors:
            yield top, rel + "/", "symlink_loop"
            return
        entries = list(_entries(top))
    except Exception:  # any filesystem error (OSError, tf.errors.OpError): this folder's only
        yield top, rel + "/", "unreadable_folder"
        return
    inner = ancestors | {key} if key is not None else ancestors
    for name, path, is_dir in entries:
        child_rel = posixpath.join(rel, name) if rel else name
        problem = name_problem(name)
        if problem:
            yield path, printable(child_rel) + ("/" if is_dir else ""), problem
        elif is_dir:
            yield from _walk(path, child_rel, inner)
        else:
            yield path, child_rel, None


def walk(top: str) -> Iterator[tuple[str, str, Optional[str]]]:
    """Every file below `top`, lazily: (path, path relative to top, skip reason or None)."""
    return _walk(top if is_remote(top) else os.path.abspath(top), "", frozenset())


def fingerprint(data_root: str) -> str:
    """A hash of every file's relative path, size and mtime (or of a manifest's bytes).

    Streams the listing (one stat per file; slow on very large buckets) and decides whether
    TFX may reuse a cached ingest. A manifest is hashed by content only: editing an image it
    points to without editing the manifest is not noticed.

    Raises:
      ValueError: data_root does not exist.
    """
    if not data_root or not path_exists(data_root):
        raise ValueError(f"data_root={data_root!r} does not exist.")
    digest = hashlib.sha256()
    if path_isdir(data_root):
        for path, rel, reason in walk(data_root):
            try:
                if is_remote(path):
                    info = gfile().stat(path)
                    size, mtime = info.length, info.mtime_nsec
                else:  # gfile's local stat has whole-second mtimes; os.stat has ns
                    info = os.stat(path)
                    size, mtime = info.st_size, info.st_mtime_ns
                digest.update(f"{rel}\0{reason}\0{size}\0{mtime}\n".encode())
            except Exception:  # any filesystem error; the hash then records the failure
                digest.update(f"{rel}\0unreadable\n".encode("utf-8"))
    else:
        with gfile().GFile(data_root, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class _ListTopFolders(beam.DoFn):
    """data root -> _Folder per class folder (main) and Skipped for loose top-level entries."""

    def __init__(self, pre_split: bool):
        self._pre_split = pre_split

    def _children(self, entries: Iterable, rel: str, split: str, depth_name: str,
                  carve_eval: bool) -> Iterable:
        """`carve_eval`: no validation folder, so train/ files get their split by hash."""
        for name, path, is_dir in entries:
            child_rel = posixpath.join(rel, name) if rel else name
            problem = name_problem(name)
            if problem:
                yield beam.pvalue.TaggedOutput(SKIPPED_TAG, Skipped(
                    printable(child_rel) + ("/" if is_dir else ""), problem))
            elif not is_dir:
                yield beam.pvalue.TaggedOutput(SKIPPED_TAG, Skipped(
                    child_rel, f"not_in_{depth_name}_folder"))
            elif depth_name == "split" and name.lower() not in PRE_SPLIT_DIRS:
                yield _Folder(path, child_rel, "", "", "unknown_split_folder")
            elif depth_name == "split":
                given = PRE_SPLIT_DIRS[name.lower()]
                if given == features.TRAIN_SPLIT and carve_eval:
                    given = ""
                yield from self._children(_entries(path), child_rel, given, "class", False)
            else:
                yield _Folder(path, child_rel, normalize_label(name), split, None)

    def process(self, data_root: str) -> Iterable:
        top = data_root if is_remote(data_root) else os.path.abspath(data_root)
        entries = list(_entries(top))
        splits = {PRE_SPLIT_DIRS.get(name.lower()) for name, _, is_dir in entries if is_dir}
        carve_eval = self._pre_split and features.EVAL_SPLIT not in splits
        yield from self._children(entries, "", "", "split" if self._pre_split else "class",
                                  carve_eval)


class _WalkFolder(beam.DoFn):
    """_Folder -> Candidate (main), Skipped ('skipped'), empty class folder ('empty_folders')."""

    def __init__(self, data_root: str):
        self._data_root = data_root

    def process(self, folder: _Folder) -> Iterable:
        root = self._data_root if is_remote(self._data_root) else os.path.abspath(
            self._data_root)
        ancestors = frozenset(k for k in [_dir_key(root)] if k is not None)
        found, walkable = 0, True
        for path, rel, reason in _walk(folder.path, folder.relpath, ancestors):
            if reason and rel == folder.relpath + "/":
                walkable = False  # the class folder itself is a loop or unreadable
            reason = reason or folder.skip_reason or label_problem(folder.label_name)
            if reason:
                yield beam.pvalue.TaggedOutput(SKIPPED_TAG, Skipped(rel, reason))
            else:
                found += 1
                yield Candidate(path, rel, folder.label_name, folder.split)
        if not found and walkable and folder.skip_reason is None \
                and not label_problem(folder.label_name):
            yield beam.pvalue.TaggedOutput(EMPTY_FOLDERS_TAG, folder.relpath + "/")


def is_header(row: list) -> bool:
    fields = [field.strip().lower() for field in row[:2]]
    return len(fields) == 2 and fields[0] in HEADER_NAMES[0] and fields[1] in HEADER_NAMES[1]


def parse_manifest_row(row: list, line_no: int, manifest_dir: str,
                       manifest_name: str = "manifest", *,
                       first: bool = False) -> Candidate | Skipped | None:
    """One parsed CSV row -> Candidate, Skipped (malformed row) or None (header/blank).

    `first`: this is the first non-blank row, which may be a header.
    """
    row = [field.strip() for field in row]
    if not any(row):
        return None
    if first and is_header(row):
        return None
    if len(row) < 2 or not row[0] or not row[1] or len(row) > 3:
        return Skipped(f"{manifest_name}:{line_no}", "malformed_manifest_row")
    path, label = row[0], normalize_label(row[1])
    split = row[2].lower() if len(row) > 2 else ""
    if label_problem(label):
        return Skipped(path, label_problem(label))
    if split and split not in PRE_SPLIT_DIRS:
        return Skipped(path, f"unknown_split:{split}")
    if is_remote(path) or os.path.isabs(path):
        full = path
    elif is_remote(manifest_dir):
        full = posixpath.join(manifest_dir, path)
    else:
        full = os.path.join(manifest_dir, path)
    return Candidate(full, path, label, PRE_SPLIT_DIRS.get(split, ""))


class _ReadManifest(beam.DoFn):
    """manifest path -> (line number, Candidate) (main) and Skipped ('skipped'), streamed
    row by row."""

    def process(self, manifest: str) -> Iterable:
        manifest_dir = posixpath.dirname(manifest) if is_remote(manifest) else \
            os.path.dirname(os.path.abspath(manifest))
        name = posixpath.basename(manifest)
        with gfile().GFile(manifest, "rb") as f:
            # Undecodable bytes become U+FFFD: the row is then reported, not the run failed.
            lines = (line.decode("utf-8-sig" if i == 0 else "utf-8", "replace")
                     for i, line in enumerate(f))
            reader = csv.reader(lines)
            first = True
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error:  # a NUL byte, a field over csv's size limit
                    yield beam.pvalue.TaggedOutput(SKIPPED_TAG, Skipped(
                        f"{name}:{reader.line_num}", "malformed_manifest_row"))
                    first = False
                    continue
                result = parse_manifest_row(row, reader.line_num, manifest_dir, name,
                                            first=first)
                first = first and not any(field.strip() for field in row)
                if isinstance(result, Skipped):
                    yield beam.pvalue.TaggedOutput(SKIPPED_TAG, result)
                elif result is not None:
                    yield reader.line_num, result


def _first_row_wins(item: tuple, manifest_name: str) -> Iterable:
    """(path, [(line, Candidate)]) -> the first row's Candidate; later rows are Skipped."""
    _, rows = item
    rows = sorted(rows, key=lambda r: r[0])
    yield rows[0][1]
    for line_no, _ in rows[1:]:
        yield beam.pvalue.TaggedOutput(SKIPPED_TAG, Skipped(
            f"{manifest_name}:{line_no}", "repeated_manifest_row"))


def _path_key(path: str) -> str:
    return path if is_remote(path) else os.path.normpath(path)


class ListImageFiles(beam.PTransform):
    """PBegin -> {'candidates': Candidate, 'skipped': Skipped, 'empty_folders': str}."""

    def __init__(self, data_root: str, layout: str):
        super().__init__()
        if layout not in LAYOUTS[1:]:
            raise ValueError(f"layout={layout!r}: resolve it with detect_layout() first.")
        self._data_root = data_root
        self._layout = layout

    def expand(self, pbegin):
        root = pbegin | "DataRoot" >> beam.Create([self._data_root])
        if self._layout == "csv":
            rows = root | "ReadManifest" >> beam.ParDo(_ReadManifest()).with_outputs(
                SKIPPED_TAG, main="rows")
            unique = (rows.rows
                      | "KeyByPath" >> beam.Map(lambda r: (_path_key(r[1].path), r))
                      | "GroupByPath" >> beam.GroupByKey()
                      | "FirstRowWins" >> beam.FlatMap(
                          _first_row_wins, posixpath.basename(self._data_root)).with_outputs(
                              SKIPPED_TAG, main="candidates"))
            skipped = ((rows[SKIPPED_TAG], unique[SKIPPED_TAG])
                       | "AllSkipped" >> beam.Flatten())
            empty = pbegin | "NoEmptyFolders" >> beam.Create([])
            return {"candidates": unique.candidates, "skipped": skipped,
                    "empty_folders": empty}
        top = root | "ListTopFolders" >> beam.ParDo(
            _ListTopFolders(self._layout == "pre_split")).with_outputs(
                SKIPPED_TAG, main="folders")
        walked = (top.folders
                  | "SpreadFolders" >> beam.Reshuffle()
                  | "WalkFolders" >> beam.ParDo(_WalkFolder(self._data_root)).with_outputs(
                      SKIPPED_TAG, EMPTY_FOLDERS_TAG, main="candidates"))
        skipped = ((top[SKIPPED_TAG], walked[SKIPPED_TAG])
                   | "AllSkipped" >> beam.Flatten())
        return {"candidates": walked.candidates, "skipped": skipped,
                "empty_folders": walked[EMPTY_FOLDERS_TAG]}
