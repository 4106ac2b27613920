"""Feature keys and file names shared by ingest, Transform, training, evaluation and serving.

The tf.train.Example written by ImageExampleGen has exactly these features:
  image       bytes  the encoded image as found (JPEG/PNG/GIF/BMP), or a lossless re-encode
  label       int64  index of label_name in the sorted class vocabulary
  label_name  bytes  class name, UTF-8
  filename    bytes  path relative to the data root (or the manifest entry), UTF-8
  height, width, channels  int64  what tf.io.decode_image(image, expand_animations=False) yields
  format      bytes  jpeg | png | gif | bmp, detected from the content
"""

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
