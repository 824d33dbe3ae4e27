#!/usr/bin/env bash
# Builds the `dgm report` HTML page for a runs folder, renders it with headless Chromium and checks that the
# screenshot is not blank. A manual check of the report's look (not part of CI: it needs Chromium).
#
# usage: scripts/report-screenshot.sh [RUNS_DIR] [SCREENSHOT.png]
#   RUNS_DIR        default: runs
#   SCREENSHOT.png  default: /tmp/report.png
# environment:
#   REPORT_HTML     where the page is written (default /tmp/report.html)
#   SKIP_BUILD=1    screenshot an existing $REPORT_HTML instead of building it
set -euo pipefail

cd "$(dirname "$0")/.."
runs="${1:-runs}"
png="${2:-/tmp/report.png}"
html="${REPORT_HTML:-/tmp/report.html}"

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (Debian package)..." >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y chromium >/dev/null || {
        $sudo apt-get update >/dev/null
        $sudo apt-get install -y chromium >/dev/null
    }
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
    cargo run --release -q -p dgm-cli -- report "$runs" --out "$html"
fi
[ -s "$html" ] || { echo "error: $html is missing or empty" >&2; exit 1; }

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$png"
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars \
    --screenshot="$png" --window-size=1400,2000 "file://$(realpath "$html")" >/dev/null 2>&1 || true
[ -s "$png" ] || { echo "error: chromium wrote no screenshot to $png" >&2; exit 1; }

# Decode the PNG (8-bit RGB/RGBA, non-interlaced, as Chromium writes it) with the standard library only and
# require some ink: at least 1 % of the pixels not near-white and at least 16 distinct colours.
python3 - "$png" <<'EOF'
import struct, sys, zlib

path = sys.argv[1]
data = open(path, "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"error: {path} is not a PNG")
pos, idat, ihdr = 8, b"", None
while pos < len(data):
    (length,) = struct.unpack(">I", data[pos:pos + 4])
    kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        ihdr = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
w, h, depth, colour, _, _, interlace = ihdr
channels = {2: 3, 6: 4}.get(colour)
if depth != 8 or channels is None or interlace != 0:
    sys.exit(f"error: unexpected PNG format (depth {depth}, colour type {colour}, interlace {interlace})")
raw = zlib.decompress(idat)
stride = w * channels
prev = bytearray(stride)
ink, colours = 0, set()
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0
        b = prev[i]
        c = prev[i - channels] if i >= channels else 0
        if f == 1:
            line[i] = (line[i] + a) & 255
        elif f == 2:
            line[i] = (line[i] + b) & 255
        elif f == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    prev = line
    for x in range(0, stride, channels):
        px = tuple(line[x:x + 3])
        if len(colours) < 4096:
            colours.add(px)
        if min(px) < 230:
            ink += 1
frac = ink / (w * h)
print(f"{path}: {w}x{h}, {100 * frac:.2f} % non-white pixels, {len(colours)} distinct colours")
if frac < 0.01 or len(colours) < 16:
    sys.exit("error: the screenshot looks blank")
EOF
echo "ok: $png"
