# Sourced by scripts/bench-ab.sh and scripts/bench-page.sh: one page in headless Chromium until
# it reports.
#
# headless_until PROFILE URL TAG OUT [SECONDS]: open URL in a headless Chromium with its own
# profile directory PROFILE (V8 flags from JS_FLAGS) and wait, at most SECONDS (default 900),
# until the page's console logs a line starting "TAG-RESULT " or "TAG-ERROR "; write that
# console line to OUT and close Chromium. OUT stays empty if the page never reported.
headless_until() {
    local profile=$1 url=$2 tag=$3 out=$4 seconds=${5:-900}
    : > "$out"
    # Chromium's console goes to stderr with --enable-logging.
    { timeout "$seconds" chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$profile" \
        --disable-background-networking --disable-component-update --no-first-run \
        --enable-logging=stderr --v=0 ${JS_FLAGS:+--js-flags="$JS_FLAGS"} "$url" 2>&1 |
        while IFS= read -r line; do
            case "$line" in
                *"\"$tag-RESULT "*|*"\"$tag-ERROR "*)
                    printf '%s\n' "$line" > "$out"
                    pkill -f "user-data-dir=$profile" || true
                    break ;;
            esac
        done || true; } 2>/dev/null
}

# headless_report OUT TAG: the JSON of OUT's "TAG-RESULT {json}" line on stdout; or, with status
# 1, the message of its "TAG-ERROR message" line (or that there was none).
headless_report() {
    local out=$1 tag=$2
    if grep -q "\"$tag-RESULT " "$out"; then
        sed "s/.*\"$tag-RESULT \\(.*\\)\", source.*/\\1/" "$out"
    elif grep -q "\"$tag-ERROR " "$out"; then
        sed "s/.*\"$tag-ERROR \\(.*\\)\", source.*/\\1/" "$out"
        return 1
    else
        echo "the page reported nothing"
        return 1
    fi
}
