"""`imgpipe predict`: classify image files with a pushed model, through its serving_default.

Files are listed lazily (folders walked in sorted order, hidden files skipped) and sent in
batches of `batch_size`, so memory holds one batch of encoded files however many there are.
Every result comes from the model's own `serving_default` (decode, resize and the class
vocabulary inside the model), so it equals what a server answers.

A file that cannot be read, is not a JPEG/PNG/GIF/BMP, declares more pixels than the model
takes (the ingest's max_pixels, exported with it), or fails to decode gets its own error
result; the rest of its batch is classified all the same (a batch the model rejects is
retried file by file to find the bad one).
"""
from __future__ import annotations

import os
import re
import stat
from typing import Iterable, Iterator, List, Optional, Sequence

from trainer_module import export, features, image_ops


def latest_model(workdir: str) -> str:
    """The newest pushed version under workdir/serving. Raises ValueError when none."""
    serving = features.serving_dir(workdir)
    versions = [v for v in (os.listdir(serving) if os.path.isdir(serving) else [])
                if v.isdigit()]
    if not versions:
        raise ValueError(f"no pushed model in {serving}: run imgpipe run first, or give "
                         "--model DIR.")
    return os.path.join(serving, max(versions, key=int))


def iter_files(paths: Sequence[str]) -> Iterator[str]:
    """Each given path, and every non-hidden entry under each given folder (sorted), with
    symlinks followed as ingest follows them. A folder reached again through a symlink to
    one of its own ancestors is yielded itself instead of being walked (`_read` reports it),
    so nothing under the given folders is dropped without a result line."""
    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path, frozenset())
        else:
            yield path


def _walk(folder: str, ancestors: frozenset) -> Iterator[str]:
    info = os.stat(folder)
    key = (info.st_dev, info.st_ino)
    if key in ancestors:
        yield folder
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        yield folder  # _read names the error
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=True):
            yield from _walk(entry.path, ancestors | {key})
        else:
            yield entry.path


def _batches(items: Iterable[str], size: int) -> Iterator[List[str]]:
    batch: List[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read(path: str):
    """(bytes, None) or (None, error message). Only regular files are opened: opening a
    FIFO or a device would block or never end."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):  # iter_files yields a folder it could not or must not walk
            with os.scandir(path):  # raises for an unreadable folder
                return None, "cannot read: a folder reached again through a symlink loop"
        if not stat.S_ISREG(mode):
            return None, "cannot read: not a regular file (a pipe, socket or device)"
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as err:
        return None, f"cannot read: {err.strerror or err}"


def refusal(message: str) -> str:
    """The one-line reason for serving_default's InvalidArgumentError on a single image."""
    match = re.search(r"declares more than (\d+) pixels", message)
    if match:
        return (f"larger than the model's limit of {int(match.group(1)):,} pixels "
                "(refused before decoding)")
    if "decodes to other pixels" in message:
        return ("a GIF or BMP variant TensorFlow decodes wrongly (palette, RLE or 1/4/16-bit "
                "BMP, or a GIF whose first frame does not fill its screen): convert it to PNG")
    return "cannot be decoded (truncated or corrupt)"


class Predictor:
    """A loaded model's serving_default plus its vocabulary (for top-k names)."""

    def __init__(self, model_dir: str):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        self._tf = tf
        if not os.path.isdir(model_dir):
            raise ValueError(f"--model {model_dir!r}: no such folder.")
        self._serve = tf.saved_model.load(model_dir).signatures[export.SERVING_SIGNATURE]
        labels = os.path.join(model_dir, export.LABELS_ASSET)
        self.classes: Optional[List[str]] = None
        if os.path.isfile(labels):
            with open(labels, encoding="utf-8") as f:
                self.classes = f.read().splitlines()

    def constant(self, images: List[bytes]):
        return self._tf.constant(images, dtype=self._tf.string)

    def _call(self, images: List[bytes]) -> List[tuple]:
        out = self._serve(**{export.SERVING_INPUT_KEY: self.constant(images)})
        labels = [label.decode("utf-8") for label in out[export.LABEL_OUTPUT_KEY].numpy()]
        return list(zip(labels, out[export.PROBABILITIES_KEY].numpy()))

    def classify(self, images: List[bytes]) -> List[object]:
        """(label, probabilities) per image, or the error message (str) of an image the
        model refuses (too many pixels) or cannot decode."""
        try:
            return self._call(images)
        except self._tf.errors.InvalidArgumentError as err:
            if len(images) == 1:
                return [refusal(err.message)]
            return [r for image in images for r in self.classify([image])]

    def name(self, index: int, top_label: str, top_index: int) -> str:
        if self.classes and index < len(self.classes):
            return self.classes[index]
        return top_label if index == top_index else f"class {index}"


def predict(model_dir: str, paths: Sequence[str], *, batch_size: int = 64,
            top_k: int = 1) -> Iterator[dict]:
    """Yields {"path", "label", "probability", "top": [[name, p], ...]} or {"path", "error"}.

    Raises:
      ValueError: a bad batch_size/top_k or model folder.
    """
    if batch_size < 1 or top_k < 1:
        raise ValueError(f"batch_size={batch_size}, top_k={top_k}: both must be >= 1.")
    predictor = Predictor(model_dir)
    for paths_batch in _batches(iter_files(paths), batch_size):
        read = [(_path, *_read(_path)) for _path in paths_batch]
        readable = [data for _, data, err in read if err is None]
        decodable = iter(image_ops.is_decodable_format(  # the check serving_default makes
            predictor.constant(readable)).numpy() if readable else [])
        read = [(p, data, err if err or next(decodable) else
                 "not a JPEG, PNG, GIF or BMP image") for p, data, err in read]
        good = [(p, data) for p, data, err in read if err is None]
        results = dict(zip([p for p, _ in good],
                           predictor.classify([d for _, d in good]) if good else []))
        for path, _, error in read:
            if error is None and isinstance(results[path], str):
                error = results[path]
            if error is not None:
                yield {"path": path, "error": error}
                continue
            label, probabilities = results[path]
            order = probabilities.argsort()[::-1][:top_k]
            top = [[predictor.name(int(i), label, int(order[0])), float(probabilities[i])]
                   for i in order]
            yield {"path": path, "label": label, "probability": float(probabilities.max()),
                   "top": top}
