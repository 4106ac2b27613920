"""Feature keys and file names shared by ingest, Transform, training, evaluation and serving.

The tf.train.Example written by ImageExampleGen has exactly these features:
  image       bytes  the encoded image as found (JPEG/PNG/GIF/BMP), or a lossless re-encode
  label       int64  index of label_name in the sorted class vocabulary
  label_name  bytes  class name, UTF-8
  filename    bytes  path relative to the data root (or the manifest entry), UTF-8
  height, width, channels  int64  what tf.io.decode_image(image, expand_animations=False) yields
  format      bytes  jpeg | png | gif | bmp, detected from the content

This is the contract module: feature keys, split names, file names, the serving signature's
names and the local workdir's layout. It imports nothing of the project and no library, so
every layer may import it.
"""
import os

IMAGE_KEY = "image"
LABEL_KEY = "label"
LABEL_NAME_KEY = "label_name"
FILENAME_KEY = "filename"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
CHANNELS_KEY = "channels"
FORMAT_KEY = "format"

# Transform output: float32 [B, S, S, 3] in [0, 255], the range EfficientNet expects
# (it rescales and normalizes inside the model).
TRANSFORMED_IMAGE_KEY = "image_xf"

# Files written next to the Split-*/ folders of an Examples artifact (or `imgpipe ingest` output).
LABELS_FILE = "labels.txt"
REPORT_FILE = "ingest_report.json"

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
TEST_SPLIT = "test"
SPLITS = (TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT)  # the order splits are listed in
# The decompression-bomb limit (PIL's own): ingest quarantines a larger image from its
# header, and serving_default refuses one before decoding it.
MAX_PIXELS = 89_478_485

# The exported SavedModel's contract (trainer_module/export.py builds it; the Evaluator,
# `imgpipe predict` and serving read it).
SERVING_SIGNATURE = "serving_default"  # image_bytes: tf.string [B] -> probabilities, label
EXAMPLES_SIGNATURE = "from_examples"  # serialized tf.Examples [B] (TFMA evaluates through it)
SERVING_INPUT_KEY = "image_bytes"
EXAMPLES_INPUT_KEY = "examples"
PROBABILITIES_KEY = "probabilities"
LABEL_OUTPUT_KEY = "label"
# The vocabulary next to the SavedModel (TF Serving's extra-assets folder), one name per line
# in class-id order, for tools that show more than the top label (`imgpipe predict --top-k`).
LABELS_ASSET = "assets.extra/labels.txt"


# The Pusher's record on its pushed_model output, beside TFX's pushed/pushed_destination/
# pushed_version: the folder of the model already serving when that is why nothing was
# pushed again (components/artifact_pusher.py writes it; the CLI and `imgpipe runs` read it).
STILL_SERVING_KEY = "still_serving"

# The workdir of local runs (pipeline/config.py; every reader of a finished run):
#   pipeline_root/             TFX artifacts
#   metadata.sqlite            ML Metadata
#   serving/<version>/         the pushed SavedModels
#   schema/schema.pbtxt        this dataset's schema (written by the first run; editable)
#   reports/data-<id>/, run-<id>/  the data and run reports
#   .imgpipe.lock              held while a run works (pipeline/workdir_lock.py)
def pipeline_root(workdir: str) -> str:
    return os.path.join(workdir, "pipeline_root")


def metadata_path(workdir: str) -> str:
    return os.path.join(workdir, "metadata.sqlite")


def serving_dir(workdir: str) -> str:
    return os.path.join(workdir, "serving")


def schema_file(workdir: str) -> str:
    return os.path.join(workdir, "schema", "schema.pbtxt")


def reports_dir(workdir: str) -> str:
    return os.path.join(workdir, "reports")


LOCK_FILE = ".imgpipe.lock"
