// <wasm86-machine>: an emulated PC for any static HTML page, with one include:
//
//   <script type="module" src="https://example.org/wasm86/wasm86-machine.js"></script>
//   <wasm86-machine kernel="…" initrd="…" append="…" memory="64" hda="…" cdrom="…" fda="…"
//                   boot="cad" bios="…" vgabios="…" bootmenu="3000" jit="0"
//                   show="serial|screen|both|cpu|serial+cpu|screen+cpu|both+cpu"
//                   run="uname -a" label="…" rows="20" start="click"></wasm86-machine>
//
// Every attribute is optional: the defaults boot the Linux bundled in `images/` next to this
// module, or in the folder `images="URL"` names (an npm install has no images). A drive
// (hda, cdrom, fda) without kernel, initrd or append boots through the BIOS (SeaBIOS, bundled
// next to this module), as does boot="ORDER" (a floppy, c hard disk, d CD). URLs in
// attributes are relative to the page. Each element runs its own machine in its own worker. A
// machine starts when it is clicked, or when it scrolls into view (start="click" waits for the
// click), so a page with ten of them downloads nothing until the reader gets there.
// `run="COMMAND"` types COMMAND + Enter on the serial console once the shell prompt ("# ") shows,
// after every boot (at once when the machine starts from a saved state, `state="URL"`).
// `show` picks the views: the serial terminal (the default), the VGA screen, or both; "+cpu"
// adds the inspector (inspector.js: registers, disassembly, stepping and breakpoints, memory,
// the page-table walk, the event counters) beside them when the element is wide and below them
// when it is narrow, and "cpu" alone shows only the inspector.
// `element.machine` is the automation API (see wasm86.js), whose events are the machine's;
// `element.inspector` is the InspectorView (null without "cpu").
//
// Its lifetime: the views are built when the element is first connected or its machine starts;
// removed from the page (and not put back in the same task, as a move does), the element stops
// and frees its machine (the worker is terminated) and removes every listener, observer and
// timer it or its views added outside itself. Put back, it starts afresh with a new `machine`.

import { MachineController, resolveOptions, OPTION_NAMES } from "./wasm86.js";
import { ScreenView, bindKeyboard, bindMouse, createTerminal, toggleFullscreen, XTERM_CSS } from "./ui.js";
import { InspectorView, INSPECTOR_STYLE } from "./inspector.js";

/** The attributes that are machine options (see MachineOptions in wasm86.js). */
const OPTION_ATTRS = OPTION_NAMES;

/** A shell prompt: "# " at the end of the output, or followed by busybox's cursor-position query
 * ESC[6n (kernel messages may come right after it). */
const PROMPT = /# (?:\x1b\[6n|$)/;

/** At least this wide (CSS pixels), the inspector sits beside the screen or terminal. */
const SIDE_BY_SIDE = 860;

/** The views `show` asks for: {screen, serial, cpu}. "serial", "screen" and "both", each
 * optionally with "+cpu", or "cpu" alone; anything else is the default, the serial terminal.
 * @param {string | null | undefined} value
 * @returns {{screen: boolean, serial: boolean, cpu: boolean}} */
export function parseShow(value) {
  const parts = String(value || "serial").toLowerCase().split("+").map((p) => p.trim());
  const cpu = parts.includes("cpu");
  const view = parts.find((p) => p !== "cpu") || (cpu ? "none" : "serial");
  return {
    screen: view === "screen" || view === "both",
    serial: view !== "screen" && view !== "none",
    cpu,
  };
}

const STYLE = `
:host {
  display: block;
  margin: 1.2em 0;
  border: 1px solid #c9d0da;
  border-radius: 6px;
  overflow: hidden;
  font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1d2430;
  background: #111318;
  contain: content;
}
:host([hidden]) { display: none; }
.bar {
  display: flex;
  align-items: center;
  gap: 4px;
  padding: 4px 6px;
  background: #eef1f5;
  border-bottom: 1px solid #c9d0da;
}
.bar button {
  font: inherit;
  padding: 1px 9px;
  border: 1px solid #c3cad5;
  border-radius: 4px;
  background: #fff;
  color: inherit;
  cursor: pointer;
}
.bar button:hover:not(:disabled) { background: #e4e9f0; }
.bar button:disabled { color: #9aa3af; cursor: default; }
.title { font-weight: 600; margin-right: 4px; }
.status {
  margin-left: auto;
  color: #5b6575;
  font: 12px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  white-space: nowrap;
  overflow: hidden;
  text-overflow: ellipsis;
}
.error {
  padding: 6px 10px;
  background: #fdf1f0;
  color: #7a1d14;
  border-bottom: 1px solid #e0a4a4;
  white-space: pre-wrap;
}
.body { position: relative; }
.screen-box { display: flex; justify-content: center; background: #000; }
.screen-box:fullscreen { align-items: center; width: 100vw; height: 100vh; }
canvas { display: block; image-rendering: pixelated; outline: none; }
canvas.smooth { image-rendering: auto; }
canvas:focus { box-shadow: inset 0 0 0 2px #4a7fd0; }
.term { padding: 4px 6px; background: #111318; }
.term:fullscreen { padding: 0; }
.term:fullscreen > .xterm { padding: 12px; height: 100%; }
/* The views show= asks for (classes set by _build). */
.off { display: none !important; }
.term.below-screen { border-top: 1px solid #2a2f3a; }
/* With the inspector: beside the views when the element is wide, below them when narrow. */
.body.cpu.wide { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
.inspector-box { background: #fff; min-width: 0; }
.body.cpu.wide .inspector-box { position: relative; min-height: 360px; border-left: 1px solid #c9d0da; }
.body.cpu.wide .inspector-box > .w86i { position: absolute; inset: 0; overflow: auto; }
.body.cpu:not(.wide) .inspector-box { max-height: 640px; overflow: auto; border-top: 1px solid #c9d0da; }
.body.cpu.alone .inspector-box { max-height: 720px; overflow: auto; border: 0; }
.body.cpu.alone.wide { display: block; }
.body.cpu.alone.wide .inspector-box > .w86i { position: static; }
.body.cpu.alone .views { display: none; }
.inspector-box:fullscreen { max-height: none; overflow: auto; }
.cover {
  position: absolute;
  inset: 0;
  display: flex;
  flex-direction: column;
  align-items: center;
  justify-content: center;
  gap: 6px;
  background: #111318;
  color: #aab3c0;
  cursor: pointer;
  min-height: 120px;
}
.cover button {
  font: inherit;
  font-size: 15px;
  padding: 6px 18px;
  border: 0;
  border-radius: 5px;
  background: #2d5fa8;
  color: #fff;
  cursor: pointer;
}
.cover[hidden] { display: none; }
`;

/** @param {number} m */
const formatMips = (m) => (m >= 10 ? m.toFixed(0) : m.toFixed(1));

/**
 * The attributes of <wasm86-machine> (all optional strings): the machine options of
 * MachineOptions (images kernel initrd append memory hda hdb cdrom fda boot bios vgabios bootmenu
 * jit jit-threshold state) and the widget's own:
 * @typedef {object} Wasm86MachineAttributes
 * @property {string} [images] the folder with the bundled images (default: images/ next to the script)
 * @property {string} [kernel]
 * @property {string} [initrd]
 * @property {string} [append]
 * @property {string} [memory]
 * @property {string} [hda]
 * @property {string} [hdb]
 * @property {string} [cdrom]
 * @property {string} [fda]
 * @property {string} [boot]
 * @property {string} [bios]
 * @property {string} [vgabios]
 * @property {string} [bootmenu]
 * @property {string} [jit]
 * @property {string} [state]
 * @property {"serial" | "screen" | "both" | "cpu" | "serial+cpu" | "screen+cpu" | "both+cpu"} [show]
 *   the views (default "serial")
 * @property {string} [run] a command typed at the shell's first prompt after each boot
 * @property {string} [label] the title in the toolbar (default the id)
 * @property {string} [rows] the terminal's rows
 * @property {"click"} [start] wait for a click instead of starting when scrolled into view
 */

/** The views of a built element, all taken down together by aborting `life`.
 * @internal
 * @typedef {object} Views
 * @property {AbortController} life
 * @property {ShadowRoot} root
 * @property {HTMLElement} termBox
 * @property {number} rows
 * @property {boolean} serialOpen
 * @property {InspectorView | null} inspector
 * @property {import("./ui.js").TerminalView | null} term
 * @property {ReturnType<typeof setTimeout> | 0} termTimer
 */

/** <wasm86-machine>: an emulated PC with its views (see the top of this file). */
export class Wasm86MachineElement extends HTMLElement {
  static get observedAttributes() {
    return OPTION_ATTRS;
  }

  /** @type {MachineController | null} */
  #controller = null;
  /** The built views (null until the element is connected or its machine starts).
   * @type {Views | null} */
  #views = null;
  /** @type {IntersectionObserver | null} */
  #observer = null;
  /** run= is to be typed at the next prompt. */
  #runArmed = true;

  /** The inspector (an InspectorView) of a show="…+cpu" element, or null.
   * @returns {InspectorView | null} */
  get inspector() {
    return this.#views ? this.#views.inspector : null;
  }

  /** The automation API (MachineController); exists before the machine starts.
   * @returns {MachineController} */
  get machine() {
    return this.#controller || this.#makeController();
  }

  #options() {
    /** @type {Record<string, string>} */
    const given = {};
    for (const name of OPTION_ATTRS) {
      const v = this.getAttribute(name);
      if (v !== null) given[name] = v;
    }
    return resolveOptions(given, document.baseURI);
  }

  #makeController() {
    let c;
    try {
      c = new MachineController(this.#options());
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      c = MachineController.failed(`<wasm86-machine${this.id ? ` id="${this.id}"` : ""}>: ${why}`);
    }
    this.#controller = c;
    // start() from a script (or the observer, or the cover) also builds the views.
    c.addEventListener("start", () => {
      this.#build();
      this.#createTerminal();
    });
    return c;
  }

  attributeChangedCallback() {
    // Options are read when the machine starts; later changes apply to the next start.
    const c = this.#controller;
    if (c && !c.started && c.state === "idle") {
      try {
        c.options = this.#options();
      } catch (err) {
        console.warn("wasm86-machine:", err instanceof Error ? err.message : err);
      }
    }
  }

  connectedCallback() {
    this.#build();
    if (this.#controller && this.#controller.state !== "idle") return;
    if (this.getAttribute("start") === "click" || this.#observer) return;
    // Start when a good part of the machine is on screen, not on page load.
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) {
          observer.disconnect();
          if (this.#observer === observer) this.#observer = null;
          this.machine.start();
        }
      },
      { threshold: 0.25 }
    );
    this.#observer = observer;
    observer.observe(this);
  }

  disconnectedCallback() {
    if (this.#observer) {
      this.#observer.disconnect();
      this.#observer = null;
    }
    // A move (removed and inserted again in the same task) keeps the machine; a removal ends it.
    queueMicrotask(() => {
      if (!this.isConnected) this.#teardown();
    });
  }

  /** Stop and free the machine and take the views down: nothing the element added outside
   * itself (listeners on the document and window, observers, timers, the worker) survives.
   * Connected again, the element builds new views and a new machine. */
  #teardown() {
    const views = this.#views;
    this.#views = null;
    if (views) {
      clearTimeout(views.termTimer);
      views.life.abort();
      views.root.replaceChildren();
    }
    if (this.#controller) {
      this.#controller.destroy();
      this.#controller = null;
    }
    this.#runArmed = true;
  }

  /** Build the shadow DOM and the views once. */
  #build() {
    if (this.#views) return;
    const c = this.machine;
    const root = this.shadowRoot || this.attachShadow({ mode: "open" });
    const life = new AbortController();
    const signal = life.signal;
    const on = { signal };
    const show = parseShow(this.getAttribute("show"));
    root.innerHTML = `
      <link rel="stylesheet" href="${XTERM_CSS}">
      <style>${STYLE}</style>
      <style data-wasm86-inspector>${INSPECTOR_STYLE}</style>
      <div class="bar" part="toolbar">
        <span class="title"></span>
        <button class="pause" type="button" disabled>Pause</button>
        <button class="reset" type="button" disabled>Reset</button>
        <button class="fullscreen" type="button" title="Fullscreen">Full screen</button>
        <span class="status" aria-live="off">not started</span>
      </div>
      <div class="error" role="alert" hidden></div>
      <div class="body">
        <div class="views">
          <div class="screen-box"><canvas tabindex="0" width="720" height="400"></canvas></div>
          <div class="term"></div>
        </div>
        <div class="inspector-box off"></div>
        <div class="cover"><button type="button" class="start">▶ Boot Linux</button>
          <span>downloads a small kernel and initramfs (a few MB)</span></div>
      </div>`;
    /** @param {string} sel */
    const $ = (sel) => /** @type {HTMLElement} */ (root.querySelector(sel));
    $(".title").textContent = this.getAttribute("label") || this.id || "wasm86";
    const canvas = /** @type {HTMLCanvasElement} */ ($("canvas"));
    const screenBox = $(".screen-box");
    const term = $(".term");
    const pause = /** @type {HTMLButtonElement} */ ($(".pause"));
    const reset = /** @type {HTMLButtonElement} */ ($(".reset"));

    const showScreen = show.screen;
    const showSerial = show.serial;
    screenBox.classList.toggle("off", !showScreen);
    term.classList.toggle("off", !showSerial);
    term.classList.toggle("below-screen", showScreen && showSerial);
    /** @type {InspectorView | null} */
    let inspector = null;
    if (show.cpu) {
      const body = $(".body");
      const box = $(".inspector-box");
      body.classList.add("cpu");
      body.classList.toggle("alone", !showScreen && !showSerial);
      box.classList.remove("off");
      const view = new InspectorView(box.appendChild(document.createElement("div")), c);
      signal.addEventListener("abort", () => view.destroy(), { once: true });
      inspector = view;
      const place = () => body.classList.toggle("wide", this.getBoundingClientRect().width >= SIDE_BY_SIDE);
      const resize = new ResizeObserver(place);
      resize.observe(this);
      signal.addEventListener("abort", () => resize.disconnect(), { once: true });
      place();
    }
    /** @type {ScreenView | null} */
    let screen = null;
    if (showScreen) {
      screen = new ScreenView(canvas, c, { box: screenBox, signal });
      bindKeyboard(c, [canvas], { signal });
      bindMouse(c, canvas, { signal });
    } else {
      c.setFrames(false);
    }
    // Fixed rows: the element's height does not depend on the page.
    const rows = Number(this.getAttribute("rows")) || (showScreen && showSerial ? 16 : 20);
    // xterm.js is only created when the machine starts (see #createTerminal): opening it costs
    // tens of milliseconds, too much for every widget of a page at load. Until then the space it
    // will take is kept free (a 13 px font gives rows of about 15 px).
    term.style.height = `${rows * 15 + 8}px`;
    /** @type {Views} */
    const views = { life, root, termBox: term, rows, serialOpen: showSerial, inspector, term: null, termTimer: 0 };
    this.#views = views;
    const onFullscreen = () => {
      if (screen) screen.fit();
      // A full-screen terminal uses the whole height; back in the page, the fixed rows again.
      if (views.term) views.term.setRows(root.fullscreenElement === term ? null : rows);
    };
    root.addEventListener("fullscreenchange", onFullscreen, on);
    document.addEventListener("fullscreenchange", onFullscreen, on);
    if (showScreen && !showSerial) term.hidden = true;

    // Toolbar.
    const cover = $(".cover");
    cover.addEventListener("click", () => c.start(), on);
    pause.onclick = () => (c.state === "paused" ? c.resume() : c.pause());
    reset.onclick = () => c.reset();
    $(".fullscreen").onclick = () => {
      const target = showScreen ? screenBox : showSerial ? term : $(".inspector-box");
      toggleFullscreen(target).catch((err) => console.warn("fullscreen:", err));
    };

    const refresh = () => {
      const s = c.stats();
      pause.disabled = !(s.state === "running" || s.state === "paused");
      pause.textContent = s.state === "paused" ? "Resume" : "Pause";
      reset.disabled = s.state === "idle" || s.state === "loading";
      cover.hidden = s.state !== "idle";
      let text = /** @type {string} */ (s.state);
      if (s.state === "running") text = `running · ${formatMips(s.mips)} MIPS`;
      if (s.state === "loading") {
        let loaded = 0;
        let total = 0;
        for (const f of c.files()) {
          loaded += f.loaded;
          total += f.total;
        }
        text = total ? `loading ${Math.min(100, Math.round((100 * loaded) / total))}%` : "loading";
      }
      $(".status").textContent = text;
      const err = c.error();
      $(".error").hidden = err === null;
      $(".error").textContent = err || "";
    };
    for (const ev of /** @type {const} */ (["state", "stats", "progress", "error", "restart"])) {
      c.addEventListener(ev, refresh, on);
    }
    refresh();

    // run="COMMAND": once per boot, when the prompt shows. The command is sent after the
    // terminal has taken in the output, so xterm's answer to the prompt's ESC[6n reaches the guest
    // first (busybox would otherwise read the command as a garbled answer).
    let tail = "";
    c.addEventListener(
      "boot",
      () => {
        this.#runArmed = true;
        tail = "";
      },
      on
    );
    // A machine restored from a state starts where it was saved, for the states pages use at
    // its shell prompt, which it printed before it was saved: the command goes at once.
    c.addEventListener(
      "restored",
      () => {
        this.#runArmed = false;
        const command = this.getAttribute("run");
        if (command) c.sendSerial(`${command}\n`);
      },
      on
    );
    c.addEventListener(
      "serial",
      (e) => {
        const command = this.getAttribute("run");
        if (!command || !this.#runArmed) return;
        tail = (tail + e.detail.text).slice(-256);
        if (!PROMPT.test(tail)) return;
        this.#runArmed = false;
        if (views.term) views.term.term.write("", () => c.sendSerial(`${command}\n`));
        else c.sendSerial(`${command}\n`);
      },
      on
    );
  }

  /** Create the terminal in a task of its own (each widget separately, so that starting several
   * at once does not make one long main-thread task). Output that came before is replayed. */
  #createTerminal() {
    const views = this.#views;
    const c = this.#controller;
    if (!views || !c || views.term || views.termTimer) return;
    views.termTimer = setTimeout(() => {
      views.termTimer = 0;
      if (this.#views !== views) return;
      const { termBox, rows, serialOpen, life } = views;
      // The widget has no notes list: warnings (e.g. a server without Range) go to the terminal.
      views.term = createTerminal(termBox, c, { fontSize: 13, rows, open: serialOpen, showMessages: true, signal: life.signal });
      termBox.style.height = "";
      const earlier = c.serialText();
      if (earlier) views.term.term.write(earlier);
    });
  }
}

if (!customElements.get("wasm86-machine")) customElements.define("wasm86-machine", Wasm86MachineElement);
