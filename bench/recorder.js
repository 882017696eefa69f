// The in-page half of `make bench-web` (webdriver/src/bin/bench_web.rs): it reads a guest's serial
// console as it arrives, timestamps the benchmark's marker lines with performance.now() (ms since
// the page's navigation started), types the benchmark command once the shell prompt shows, and
// keeps everything in `window.__bench` for WebDriver to collect at the end. Nothing here is timed
// over WebDriver.
//
// The guest protocol: a root shell prompt "/ # " on the serial console; after the command, lines
// "WASM86-BENCH begin NAME", "WASM86-BENCH end NAME" per workload, then "WASM86-BENCH done";
// "WASM86-BENCH error ..." is a failed check.
//
// Used by bench/v86.html for v86, and injected into wasm86's own page (index.html) by the
// benchmark, fed from window.wasm86's "serial" event.

/** The shell prompt the guest shows when it is ready for the command. */
const PROMPT = "/ # ";
const MARKER = "WASM86-BENCH ";
/** Time between the prompt and typing the command: lets the line editor finish its cursor
 * query (ESC[6n) so that the command is not taken for the answer. Not part of any measurement. */
const TYPE_DELAY_MS = 500;

/**
 * Start recording. `send(text)` writes to the guest's serial console; `command` is typed (with
 * Enter) after the first prompt; with `answerCursorQuery` the recorder answers the line editor's
 * ESC[6n itself (a page with no terminal emulator; wasm86's page has xterm.js, which answers).
 * Returns the record, also kept as window.__bench.
 */
export function record({ send, command, answerCursorQuery = false }) {
  const r = {
    started: performance.now(),
    // {t, instructions, instructionsBefore} when the prompt first showed.
    prompt: null,
    commandAt: null,
    // [{kind: "begin" | "end" | "done" | "error", name, line, t, instructions, instructionsBefore}]
    markers: [],
    done: false,
    error: null,
    // The last lines seen (for messages when something goes wrong).
    lastLines: [],
    bytes: 0,
  };
  let line = "";
  // Escape parser state: 0 text, 1 after ESC, 2 inside CSI (params in `csi`).
  let esc = 0;
  let csi = "";
  let column = 0;
  let row = 1;

  function endLine(stamp) {
    const text = line.trim();
    line = "";
    r.lastLines.push(text);
    if (r.lastLines.length > 40) r.lastLines.shift();
    if (!text.startsWith(MARKER)) return;
    const words = text.slice(MARKER.length).split(/\s+/);
    const kind = words[0];
    const m = { kind, name: words.slice(1).join(" "), line: text, ...stamp };
    if (kind === "begin" || kind === "end") {
      r.markers.push(m);
    } else if (kind === "done") {
      r.markers.push(m);
      r.done = true;
    } else if (kind === "error") {
      r.markers.push(m);
      r.error = text;
    }
  }

  /** Feed serial text; `stamp` is {instructions, instructionsBefore} (wasm86) or {} (v86). */
  function feed(text, extra = {}) {
    const stamp = { t: performance.now(), ...extra };
    r.bytes += text.length;
    for (const ch of text) {
      if (esc === 1) {
        esc = ch === "[" ? 2 : 0;
        csi = "";
        continue;
      }
      if (esc === 2) {
        if (ch >= "@" && ch <= "~") {
          esc = 0;
          if (ch === "n" && csi === "6" && answerCursorQuery) send(`\x1b[${row};${column + 1}R`);
        } else {
          csi += ch;
        }
        continue;
      }
      if (ch === "\x1b") {
        esc = 1;
      } else if (ch === "\n") {
        endLine(stamp);
        column = 0;
        row = Math.min(row + 1, 25);
      } else if (ch === "\r") {
        column = 0;
      } else {
        line += ch;
        column++;
        // Checked at every character, not at the end of the chunk: kernel messages may
        // follow the prompt in the same chunk (the prompt is still there for the command).
        if (r.prompt === null && line.endsWith(PROMPT)) {
          r.prompt = stamp;
          setTimeout(() => {
            r.commandAt = performance.now();
            send(`${command}\n`);
          }, TYPE_DELAY_MS);
        }
      }
    }
  }

  r.feed = feed;
  window.__bench = r;
  return r;
}

/** What WebDriver collects: the record without its functions. */
export function snapshot() {
  const r = window.__bench;
  if (!r) return null;
  const { feed, ...plain } = r;
  void feed;
  return plain;
}

/**
 * Attach to wasm86's page: window.wasm86's "serial" event feeds the recorder, with the guest's
 * retired-instruction counts of the slice that wrote the bytes. Fails if the prompt already
 * showed (too late to time the boot).
 */
export function attachWasm86(command) {
  const m = window.wasm86;
  if (!m) throw new Error("window.wasm86 does not exist on this page");
  if (m.serialText().includes(PROMPT)) throw new Error("the shell prompt showed before the recorder was attached");
  const r = record({ send: (s) => m.sendSerial(s), command });
  // Output that came before attaching (kernel messages) is fed untimed, so that line state is right.
  if (m.serialText()) r.feed(m.serialText());
  m.addEventListener("serial", (e) =>
    r.feed(e.detail.text, { instructions: e.detail.instructions, instructionsBefore: e.detail.instructionsBefore })
  );
  m.addEventListener("error", (e) => {
    r.error = `wasm86 failed: ${e.detail.message}`;
  });
  return r;
}
