// The inspector: a teaching view of one machine's CPU, for the page (index.html's Inspector
// button) and the widget (<wasm86-machine show="…+cpu">). No framework: one class that renders
// into a container and asks the controller (wasm86.js's inspector calls, each a round trip to
// the worker) for what it shows.
//
//   import { InspectorView } from "./inspector.js";
//   const view = new InspectorView(container, controller);
//   view.walk(0xc0000000);   // the page-table walk of an address (null: EIP's)
//   view.showMemory(0x0804_8000);
//
// Panels: a toolbar (Pause/Continue, Step, Step over, breakpoints), the registers (changed
// values highlighted), the disassembly around EIP (click a line for a breakpoint), a memory
// dump, the page-table walk of one address drawn step by step, and the event counters.
//
// Refreshing: everything after a step, at a breakpoint and when the machine pauses; while it
// runs, the registers and disassembly at most twice a second and the rest once a second, and
// only while the view is on screen (a hidden inspector asks nothing). The view's CSS is
// INSPECTOR_STYLE, added once to the document or shadow root the container is in.

/**
 * @typedef {import("./wasm86.js").MachineController} MachineController
 * @typedef {import("./protocol.js").Counters} Counters
 * @typedef {import("./protocol.js").Registers} Registers
 * @typedef {import("./protocol.js").Breakpoint} Breakpoint
 */

/** Milliseconds between refreshes of the registers and disassembly while the machine runs. */
const FAST_MS = 500;
/** Milliseconds between refreshes of the counters, memory and walk while the machine runs. */
const SLOW_MS = 1000;
/** Disassembly lines shown (about a third before EIP). */
const DISASM_LINES = 16;
/** The memory dump: rows of 16 bytes. */
const MEMORY_ROWS = 8;

/** The inspector's CSS (InspectorView adds it to the document or shadow root it renders in).
 * @type {string} */
export const INSPECTOR_STYLE = `
.w86i {
  --w86i-line: #d6dbe3;
  --w86i-muted: #5b6575;
  --w86i-accent: #2d5fa8;
  --w86i-changed: #fff1a8;
  --w86i-mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1d2430;
  background: #fff;
  box-sizing: border-box;
  min-width: 0;
}
.w86i *, .w86i *::before, .w86i *::after { box-sizing: inherit; }
.w86i button {
  font: inherit;
  font-size: 12px;
  padding: 1px 8px;
  border: 1px solid #c3cad5;
  border-radius: 4px;
  background: #f6f8fa;
  color: inherit;
  cursor: pointer;
}
.w86i button:hover:not(:disabled) { background: #e4e9f0; }
.w86i button:disabled { color: #9aa3af; cursor: default; }
.w86i input[type="text"] {
  font: 12px var(--w86i-mono);
  padding: 1px 4px;
  border: 1px solid #c3cad5;
  border-radius: 3px;
  width: 14em;
  min-width: 0;
}
.w86i-toolbar {
  display: flex;
  flex-wrap: wrap;
  align-items: center;
  gap: 4px 6px;
  padding: 5px 8px;
  background: #eef1f5;
  border-bottom: 1px solid var(--w86i-line);
}
.w86i-toolbar .w86i-sep { width: 1px; align-self: stretch; background: var(--w86i-line); margin: 0 2px; }
.w86i-state { font: 12px var(--w86i-mono); color: var(--w86i-muted); }
.w86i-state.w86i-stopped { color: #8a4b00; font-weight: 600; }
.w86i-bps { display: flex; flex-wrap: wrap; gap: 3px; padding: 0 8px 4px; background: #eef1f5; border-bottom: 1px solid var(--w86i-line); }
.w86i-bps:empty { display: none; }
.w86i-bp {
  font: 12px var(--w86i-mono);
  background: #fde2e2;
  border: 1px solid #e5a5a5;
  border-radius: 10px;
  padding: 0 2px 0 7px;
  white-space: nowrap;
}
.w86i .w86i-bp button { border: 0; background: none; padding: 0 4px; font-size: 12px; color: #8e1b1b; }
.w86i-grid {
  display: grid;
  /* Two columns from about 1000 px: the registers' segment table needs about 490 px. */
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 500px), 1fr));
  gap: 0;
}
.w86i-panel { padding: 6px 8px 8px; border-bottom: 1px solid var(--w86i-line); min-width: 0; overflow-x: auto; }
.w86i-panel.w86i-wide { grid-column: 1 / -1; }
.w86i-panel h3 {
  font-size: 12px;
  text-transform: uppercase;
  letter-spacing: 0.04em;
  color: var(--w86i-muted);
  margin: 0 0 4px;
  display: flex;
  align-items: center;
  gap: 6px;
  flex-wrap: wrap;
}
.w86i-panel h3 .w86i-grow { flex: 1; }
.w86i-panel h3 label { text-transform: none; letter-spacing: 0; font-weight: normal; }
.w86i-error { color: #7a1d14; background: #fdf1f0; padding: 2px 6px; border-radius: 3px; margin: 2px 0; white-space: pre-wrap; }
.w86i-error:empty { display: none; }
.w86i-note { color: var(--w86i-muted); font-size: 12px; margin: 2px 0; }
.w86i-note:empty { display: none; }
.w86i table { border-collapse: collapse; font: 12px/1.45 var(--w86i-mono); }
.w86i td, .w86i th { padding: 0 6px 0 0; text-align: left; white-space: nowrap; vertical-align: top; }
.w86i th { font-weight: 600; color: #39424f; }
.w86i .w86i-num { text-align: right; }
.w86i .w86i-changed { background: var(--w86i-changed); }
.w86i .w86i-dim { color: #8a93a0; }
/* Four registers a row, fewer when narrow. */
.w86i-regs { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, max-content)); max-width: 520px; gap: 0 14px; font: 12px/1.5 var(--w86i-mono); }
.w86i-regs b, .w86i-line b { font-weight: 600; color: #39424f; margin-right: 4px; }
.w86i-line { font: 12px/1.5 var(--w86i-mono); overflow-wrap: anywhere; }
.w86i-flag { display: inline-block; padding: 0 3px; margin-right: 2px; border-radius: 3px; background: #e8eef7; }
.w86i-segs { margin-top: 3px; }
.w86i-segs td:nth-child(5) { white-space: normal; min-width: 10em; }
.w86i-disasm tr { cursor: pointer; }
.w86i-disasm tr:hover td { background: #f0f4fa; }
.w86i-disasm tr.w86i-current td { background: #dbe8fb; font-weight: 600; }
.w86i-disasm td.w86i-mark { width: 1.4em; text-align: center; color: #c62828; }
.w86i-disasm td.w86i-bytes { color: #6b7482; }
.w86i-memory td.w86i-ascii { color: #39424f; padding-left: 8px; }
.w86i-addr-row { display: flex; gap: 4px; align-items: center; margin-bottom: 4px; flex-wrap: wrap; }
.w86i-walk-split { display: flex; margin: 2px 0 6px; font: 12px var(--w86i-mono); border: 1px solid #b9c3d2; border-radius: 4px; overflow: hidden; max-width: 36em; }
.w86i-walk-split > div { padding: 2px 6px; border-right: 1px solid #b9c3d2; text-align: center; }
.w86i-walk-split > div:last-child { border-right: 0; }
.w86i-walk-split small { display: block; color: var(--w86i-muted); font: 11px system-ui, sans-serif; }
.w86i-walk-split .w86i-dir { background: #eaf1fb; flex: 10; }
.w86i-walk-split .w86i-tab { background: #eef8ee; flex: 10; }
.w86i-walk-split .w86i-off { background: #f6f1fb; flex: 12; }
.w86i-walk-split .w86i-off22 { background: #f6f1fb; flex: 22; }
.w86i-steps { list-style: none; margin: 0; padding: 0; }
.w86i-step {
  border: 1px solid #c9d3e1;
  border-left: 4px solid var(--w86i-accent);
  border-radius: 4px;
  padding: 3px 8px;
  margin: 0 0 14px;
  position: relative;
  font-size: 12.5px;
}
.w86i-step:not(:last-child)::after {
  content: "↓";
  position: absolute;
  left: 1.2em;
  bottom: -15px;
  color: var(--w86i-accent);
  font-size: 12px;
  line-height: 14px;
}
.w86i-step.w86i-fault { border-color: #e0a4a4; border-left-color: #c0392b; background: #fdf6f5; }
.w86i-step.w86i-result { border-left-color: #2e7d32; background: #f3faf3; }
.w86i-step .w86i-what { font-weight: 600; }
.w86i-step code { font: 12px var(--w86i-mono); }
.w86i-bits { display: inline-flex; gap: 2px; margin-left: 4px; vertical-align: 1px; }
.w86i-bit { font: 10.5px/1.3 var(--w86i-mono); padding: 0 3px; border-radius: 2px; border: 1px solid #cfd6e0; color: #a0a8b4; }
.w86i-bit.w86i-on { background: #2d5fa8; border-color: #2d5fa8; color: #fff; }
.w86i-counters { max-height: 26em; overflow: auto; }
.w86i-counters table { width: 100%; }
.w86i-counters tr.w86i-group th { padding-top: 6px; border-bottom: 1px solid var(--w86i-line); background: #fff; position: sticky; top: 0; }
.w86i-counters td:first-child { white-space: normal; }
`;

/** 0x1234 -> "0x00001234" (a 32-bit value, unsigned).
 * @param {number} n */
export function hex(n, digits = 8) {
  return `0x${(Number(n) >>> 0).toString(16).padStart(digits, "0")}`;
}

/** "c0000000", "0xC000_0000", "0x8048000" -> a number (hex, with or without 0x); null if not.
 * @param {string} text
 * @returns {number | null} */
export function parseAddress(text) {
  const t = String(text).trim().toLowerCase().replace(/_/g, "").replace(/^0x/, "");
  if (!/^[0-9a-f]{1,8}$/.test(t)) return null;
  return parseInt(t, 16) >>> 0;
}

/** A breakpoint as typed: a linear address ("c10a2b30", "0xc10a2b30") or an I/O port
 * ("port 3f8", "port 0x3f8"), both in hex. Throws an Error that says what is expected.
 * @param {string} text
 * @returns {number | {port: number}} */
export function parseBreakpoint(text) {
  const t = String(text).trim();
  const port = /^port\s*[: ]\s*(.+)$/i.exec(t) || /^port(0x[0-9a-f]+)$/i.exec(t);
  if (port) {
    const n = parseAddress(port[1]);
    if (n === null || n > 0xffff) throw new Error(`${JSON.stringify(t)}: an I/O port is 0 to ffff (hex), e.g. port 3f8`);
    return { port: n };
  }
  const n = parseAddress(t);
  if (n === null) throw new Error(`${JSON.stringify(t)}: give a linear address in hex (c10a2b30) or port 3f8`);
  return n;
}

/** The text of a breakpoint ({kind, at}).
 * @param {Breakpoint} bp */
export function breakpointText(bp) {
  return bp.kind === "port" ? `port ${hex(bp.at, 3)}` : hex(bp.at);
}

/** @param {unknown} n */
const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n));
/** @param {unknown} err */
const describeError = (err) => {
  const message = err && typeof err === "object" && "message" in err ? err.message : null;
  return message ? String(message) : String(err);
};

/**
 * Children h() takes: nodes, text, numbers, arrays of them; null, undefined and false are
 * left out.
 * @typedef {Node | string | number | boolean | null | undefined | any[]} Child
 */

/** A DOM element: h("td", {class: "x", title: "y"}, "text", child, ...).
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...Child} children
 * @returns {HTMLElement} */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of /** @type {Child[]} */ (children.flat())) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Add INSPECTOR_STYLE once to the document or shadow root `node` is in.
 * @param {Node} node */
function addStyle(node) {
  const root = node.getRootNode();
  const host = root instanceof ShadowRoot ? root : document.head;
  if (host.querySelector && host.querySelector("style[data-wasm86-inspector]")) return;
  const style = document.createElement("style");
  style.dataset.wasm86Inspector = "";
  style.textContent = INSPECTOR_STYLE;
  host.append(style);
}

/** What a segment register's descriptor cache holds, in words.
 * @param {import("./protocol.js").SegmentRegister} s
 * @param {string} mode */
function segmentKind(s, mode) {
  // In protected mode a selector of index 0 in the GDT is the null selector: nothing is loaded.
  if (mode === "protected" && s.index === 0 && !s.ldt) return "null selector";
  return s.present || mode !== "protected" ? s.kind : `${s.kind} (not present)`;
}

/** The bits of a page-table entry as the manuals name them, lit where set.
 * @param {Record<string, boolean>} bits */
function entryBits(bits) {
  /** @type {[string, boolean, string][]} */
  const list = [
    ["P", bits.present, "present"],
    ["RW", bits.writable, "writable"],
    ["US", bits.user, "user: CPL 3 may use it"],
    ["A", bits.accessed, "accessed"],
    ["D", bits.dirty, "dirty (written)"],
    ["PS", bits.pageSize, "page size: a 4 MiB page"],
    ["G", bits.global, "global: kept in the TLB across CR3 loads"],
  ];
  return h(
    "span",
    { class: "w86i-bits" },
    list.map(([name, on, what]) => h("span", { class: `w86i-bit${on ? " w86i-on" : ""}`, title: `${name}: ${what} (${on ? "1" : "0"})` }, name))
  );
}

export class InspectorView {
  /** @type {MachineController} */
  #c;
  /** @type {HTMLElement} */
  #el;
  /** Milliseconds between refreshes of the registers and disassembly while the machine runs. */
  fastMs;
  /** Milliseconds between refreshes of the counters, memory and walk while the machine runs. */
  slowMs;
  /** The last registers shown: {key: text}.
   * @type {Record<string, string> | null} */
  #prevRegs = null;
  /** @type {Record<string, string> | null} */
  #baseRegs = null;
  /** "group/row/column" -> value
   * @type {Map<string, number>} */
  #prevCounters = new Map();
  /** @type {any} */
  #baseCounters = null;
  /** @type {Counters | null} */
  #counters = null;
  /** The last registers object.
   * @type {Registers | null} */
  #regs = null;
  /** @type {Breakpoint[]} */
  #bps = [];
  /** null: EIP's linear address
   * @type {number | null} */
  #walkAt = null;
  /** null: EIP's linear address (aligned)
   * @type {number | null} */
  #memAt = null;
  /** @type {number | undefined} */
  #memBase = undefined;
  /** @type {Record<string, number>} */
  #seq = Object.create(null);
  #lastFast = -Infinity;
  #lastSlow = -Infinity;
  #inFlight = false;
  #stopNote = "";
  /** @type {number | undefined} */
  #shownAt = undefined;
  /** @type {number | undefined} */
  #countersAt = undefined;
  /** @type {number | undefined} */
  #pausedCount = undefined;
  #stepping = false;
  #onScreen = true;
  /** @type {IntersectionObserver | undefined} */
  #observer = undefined;
  /** @type {[string, (e: any) => void][]} */
  #listeners = [];
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #timer = undefined;
  /** The disassembly shown (null: none yet).
   * @type {import("./protocol.js").DisassemblyLine[] | null} */
  #lines = null;
  // The view's elements (made by #build).
  /** @type {Record<string, {section: HTMLElement, body: HTMLElement, error: HTMLElement}>} */
  #p = {};
  /** @type {any} */ #$pause;
  /** @type {any} */ #$step;
  /** @type {any} */ #$over;
  /** @type {any} */ #$state;
  /** @type {any} */ #$bpInput;
  /** @type {any} */ #$bpAdd;
  /** @type {any} */ #$bpError;
  /** @type {any} */ #$bpList;
  /** @type {any} */ #$memInput;
  /** @type {any} */ #$walkInput;
  /** @type {any} */ #$countersReset;
  /** @type {any} */ #$hideZero;
  /** @type {any} */ #$countersNote;

  /** The controller it shows. */
  get controller() {
    return this.#c;
  }

  /** The element it renders into. */
  get container() {
    return this.#el;
  }

  /**
   * Render into `container` for `controller` (a MachineController). Options: `fastMs`,
   * `slowMs` (refresh periods while running).
   * @param {HTMLElement} container
   * @param {MachineController} controller
   * @param {{fastMs?: number, slowMs?: number}} [options]
   */
  constructor(container, controller, { fastMs = FAST_MS, slowMs = SLOW_MS } = {}) {
    this.#c = controller;
    this.#el = container;
    this.fastMs = fastMs;
    this.slowMs = slowMs;
    this.#prevRegs = null; // the last registers shown: {key: text}
    this.#prevCounters = new Map(); // "group/row/column" -> value
    this.#regs = null; // the last registers object
    this.#bps = []; // [{kind, at}]
    this.#walkAt = null; // null: EIP's linear address
    this.#memAt = null; // null: EIP's linear address (aligned)
    this.#seq = Object.create(null);
    this.#lastFast = -Infinity;
    this.#lastSlow = -Infinity;
    this.#inFlight = false;
    this.#stopNote = "";
    addStyle(container);
    container.classList.add("w86i");
    this.#build();
    this.#listeners = [];
    /**
     * @template {keyof import("./wasm86.js").MachineEventMap} K
     * @param {K} type
     * @param {(e: import("./wasm86.js").MachineEventMap[K]) => void} f
     */
    const on = (type, f) => {
      controller.addEventListener(type, f);
      this.#listeners.push([type, f]);
    };
    on("state", () => this.#onState());
    // A step taken by someone else (a script, another view) while paused: the worker reports
    // the new instruction count, and the view follows.
    on("stats", (e) => {
      const n = e.detail.instructions;
      if (this.#c.state === "paused" && this.#pausedCount !== undefined && n !== this.#pausedCount && !this.#stepping) {
        this.#pausedCount = n;
        this.refresh();
      } else {
        this.#pausedCount = n;
      }
    });
    on("breakpoint", (e) => {
      const bp = e.detail.breakpoint;
      this.#stopNote = bp ? `stopped at the breakpoint ${breakpointText(bp)}` : "stopped at a breakpoint";
      this.refresh(e.detail.registers);
    });
    on("restart", () => {
      this.#prevRegs = this.#baseRegs = null;
      this.#shownAt = this.#countersAt = undefined;
      this.#prevCounters = new Map();
      this.#baseCounters = null;
      this.#bps = [];
      this.#stopNote = "";
      this.#renderBreakpoints();
      this.#onState();
    });
    // On screen or not (scrolled away, or in a hidden pane): only then is it refreshed.
    this.#onScreen = true;
    if (typeof IntersectionObserver === "function") {
      this.#observer = new IntersectionObserver((entries) => {
        this.#onScreen = entries[entries.length - 1].isIntersecting;
      });
      this.#observer.observe(container);
    }
    this.#timer = setInterval(() => this.#tick(), 125);
    this.#onState();
  }

  /** Stop refreshing and let go of the controller. */
  destroy() {
    clearInterval(this.#timer);
    if (this.#observer) this.#observer.disconnect();
    for (const [type, f] of this.#listeners) this.#c.removeEventListener(type, f);
    this.#listeners = [];
  }

  /** Show the page-table walk of linear address `linear` (null: EIP's).
   * @param {number | null} [linear]
   * @returns {Promise<void>} */
  walk(linear) {
    this.#walkAt = linear === null || linear === undefined ? null : Number(linear) >>> 0;
    this.#$walkInput.value = this.#walkAt === null ? "" : hex(this.#walkAt);
    return this.#refreshWalk();
  }

  /** Dump memory from linear address `linear` (null: around EIP).
   * @param {number | null} [linear]
   * @returns {Promise<void>} */
  showMemory(linear) {
    this.#memAt = linear === null || linear === undefined ? null : Number(linear) >>> 0;
    this.#$memInput.value = this.#memAt === null ? "" : hex(this.#memAt);
    return this.#refreshMemory();
  }

  // ---- building ----

  #build() {
    const el = this.#el;
    el.replaceChildren();
    // Toolbar.
    this.#$pause = h("button", { type: "button", title: "Pause or continue the machine" }, "Pause");
    this.#$step = h("button", { type: "button", title: "Run one instruction (pauses the machine)" }, "Step");
    this.#$over = h("button", { type: "button", title: "Run the instruction at EIP; a CALL, INT, REP string instruction or LOOP runs until it returns" }, "Step over");
    this.#$state = h("span", { class: "w86i-state", "aria-live": "polite" }, "");
    this.#$bpInput = h("input", { type: "text", placeholder: "c10a2b30 / port 3f8", "aria-label": "Breakpoint: a linear address or an I/O port, in hex", spellcheck: "false" });
    this.#$bpAdd = h("button", { type: "button", title: "Stop before the instruction at this linear address, or before any IN/OUT to this port" }, "Add breakpoint");
    this.#$bpError = h("div", { class: "w86i-error" });
    this.#$bpList = h("div", { class: "w86i-bps", "aria-label": "Breakpoints" });
    el.append(
      h("div", { class: "w86i-toolbar", role: "toolbar", "aria-label": "Inspector" }, this.#$pause, this.#$step, this.#$over, h("span", { class: "w86i-sep" }), this.#$bpInput, this.#$bpAdd, h("span", { class: "w86i-sep" }), this.#$state),
      this.#$bpList,
      this.#$bpError
    );
    this.#$pause.onclick = () => (this.#c.state === "paused" ? this.#c.resume() : this.#c.pause());
    this.#$step.onclick = () => this.#step(() => this.#c.step(1));
    this.#$over.onclick = () => this.#step(() => this.#c.stepOver());
    this.#$bpAdd.onclick = () => this.#addBreakpoint();
    this.#$bpInput.addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => {
      if (e.key === "Enter") this.#addBreakpoint();
    });

    // Panels.
    /** @param {string} title @param {Child[]} [extra] */
    const panel = (title, extra = [], cls = "") => {
      const body = h("div");
      const error = h("div", { class: "w86i-error" });
      const section = h("section", { class: `w86i-panel ${cls}`, "aria-label": title }, h("h3", null, title, ...extra), error, body);
      return { section, body, error };
    };
    this.#p = {};
    this.#p.regs = panel("Registers");
    this.#p.regs.section.classList.add("w86i-registers");
    this.#p.disasm = panel("Disassembly", [h("span", { class: "w86i-grow" }), h("span", { class: "w86i-note", style: "text-transform:none;letter-spacing:0;margin:0" }, "click a line: breakpoint")]);
    this.#p.disasm.section.classList.add("w86i-disassembly");

    this.#$memInput = h("input", { type: "text", placeholder: "address (EIP)", "aria-label": "Memory address (hex, linear)", spellcheck: "false" });
    const memGo = h("button", { type: "button" }, "Show");
    const memBack = h("button", { type: "button", title: "128 bytes back" }, "◀");
    const memOn = h("button", { type: "button", title: "128 bytes on" }, "▶");
    this.#p.mem = panel("Memory");
    this.#p.mem.section.classList.add("w86i-memory-panel");
    this.#p.mem.section.insertBefore(h("div", { class: "w86i-addr-row" }, this.#$memInput, memGo, memBack, memOn), this.#p.mem.error);
    const memShow = () => {
      const t = this.#$memInput.value.trim();
      if (t === "") return this.showMemory(null);
      const n = parseAddress(t);
      if (n === null) return this.#error("mem", `${JSON.stringify(t)} is not a linear address in hex`);
      return this.showMemory(n);
    };
    memGo.onclick = memShow;
    this.#$memInput.addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => e.key === "Enter" && memShow());
    /** @param {number} d */
    const memMove = (d) => {
      const base = this.#memAt !== null ? this.#memAt : this.#memBase || 0;
      this.showMemory((base + d) >>> 0);
    };
    memBack.onclick = () => memMove(-MEMORY_ROWS * 16);
    memOn.onclick = () => memMove(MEMORY_ROWS * 16);

    this.#$walkInput = h("input", { type: "text", placeholder: "address (EIP)", "aria-label": "Linear address to translate (hex)", spellcheck: "false" });
    const walkGo = h("button", { type: "button" }, "Walk");
    const walkEip = h("button", { type: "button", title: "The linear address of the next instruction" }, "EIP");
    const walkEsp = h("button", { type: "button", title: "The linear address of the top of the stack" }, "ESP");
    this.#p.walk = panel("Page-table walk");
    this.#p.walk.section.classList.add("w86i-walk");
    this.#p.walk.section.insertBefore(h("div", { class: "w86i-addr-row" }, this.#$walkInput, walkGo, walkEip, walkEsp), this.#p.walk.error);
    const walkShow = () => {
      const t = this.#$walkInput.value.trim();
      if (t === "") return this.walk(null);
      const n = parseAddress(t);
      if (n === null) return this.#error("walk", `${JSON.stringify(t)} is not a linear address in hex`);
      return this.walk(n);
    };
    walkGo.onclick = walkShow;
    this.#$walkInput.addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => e.key === "Enter" && walkShow());
    walkEip.onclick = () => this.walk(null);
    walkEsp.onclick = () => {
      const r = this.#regs;
      if (!r) return;
      const ss = r.segments.find((s) => s.name === "SS");
      this.walk(((ss ? ss.base : 0) + r.esp) >>> 0);
    };

    this.#$countersReset = h("button", { type: "button", title: "Set every counter to zero" }, "Reset");
    this.#$hideZero = h("input", { type: "checkbox" });
    this.#$countersNote = h("span", { class: "w86i-note", style: "text-transform:none;letter-spacing:0;margin:0" });
    this.#p.counters = panel("Counters", [this.#$countersReset, h("label", null, this.#$hideZero, " hide zeros"), h("span", { class: "w86i-grow" }), this.#$countersNote], "w86i-wide");
    this.#p.counters.body.className = "w86i-counters";
    this.#p.counters.section.classList.add("w86i-counters-panel");
    this.#$countersReset.onclick = async () => {
      try {
        await this.#c.resetCounters();
        this.#prevCounters = new Map();
        this.#baseCounters = null;
        this.#countersAt = undefined;
      } catch (err) {
        this.#error("counters", describeError(err));
      }
      this.#refreshCounters();
    };
    this.#$hideZero.onchange = () => this.#renderCounters(this.#counters);

    el.append(h("div", { class: "w86i-grid" }, this.#p.regs.section, this.#p.disasm.section, this.#p.mem.section, this.#p.walk.section, this.#p.counters.section));
  }

  // ---- state and refreshing ----

  #running() {
    const s = this.#c.state;
    return s === "running" || s === "paused";
  }

  /** Whether the view is on screen (a hidden inspector asks the worker nothing). */
  #visible() {
    return document.visibilityState === "visible" && this.#onScreen && this.#el.isConnected && this.#el.getClientRects().length > 0;
  }

  #onState() {
    const s = this.#c.state;
    this.#$pause.disabled = !this.#running();
    this.#$pause.textContent = s === "paused" ? "Continue" : "Pause";
    this.#$step.disabled = this.#$over.disabled = !this.#running();
    if (s === "running") this.#stopNote = "";
    this.#showState();
    if (s === "paused") this.refresh();
    else if (s === "running") {
      // Soon, then at the running pace.
      this.#lastFast = this.#lastSlow = -Infinity;
      this.#loadBreakpoints();
    } else {
      const why = { idle: "the machine has not started", loading: "the machine is loading", error: "the machine stopped on an error" }[s] || s;
      for (const p of Object.values(this.#p)) {
        p.body.replaceChildren(h("div", { class: "w86i-note" }, why));
      }
      this.#prevRegs = this.#baseRegs = null;
      this.#shownAt = undefined;
    }
  }

  #showState() {
    const s = this.#c.state;
    this.#$state.textContent = this.#stopNote ? `paused: ${this.#stopNote}` : s;
    this.#$state.classList.toggle("w86i-stopped", !!this.#stopNote && s === "paused");
  }

  /** The running pace: the fast panels twice a second, the slow ones once. */
  #tick() {
    if (this.#c.state !== "running" || this.#inFlight || !this.#visible()) return;
    const now = performance.now();
    const slow = now - this.#lastSlow >= this.slowMs;
    if (!slow && now - this.#lastFast < this.fastMs) return;
    this.#lastFast = now;
    if (slow) this.#lastSlow = now;
    this.#inFlight = true;
    const done = () => {
      this.#inFlight = false;
    };
    (slow ? this.refresh() : this.#refreshFast()).then(done, done);
  }

  /** Refresh every panel (with `registers` if the caller has them already). Never rejects:
   * what goes wrong is shown in the panel. */
  /** @param {Registers} [registers] */
  async refresh(registers) {
    try {
      this.#showState();
      if (!this.#running()) return;
      await this.#refreshFast(registers);
      await Promise.all([this.#refreshMemory(), this.#refreshWalk(), this.#refreshCounters(), this.#loadBreakpoints()]);
    } catch (err) {
      this.#error("regs", `the inspector failed: ${describeError(err)}`);
    }
  }

  /** @param {Registers} [registers] */
  async #refreshFast(registers) {
    await this.#load("regs", () => registers || this.#c.registers(), (r) => this.#renderRegisters(r));
    await this.#refreshDisasm();
  }

  /** Ask `fn` (a Promise) for `panel`'s data and `render` it; an answer older than a newer
   * request's is dropped. An error (of the request or of rendering) is shown in the panel,
   * never thrown.
   * @template T
   * @param {string} panel
   * @param {() => T | Promise<T>} fn
   * @param {(value: T) => void} render */
  async #load(panel, fn, render) {
    const seq = (this.#seq[panel] = (this.#seq[panel] || 0) + 1);
    try {
      const value = await fn();
      if (seq !== this.#seq[panel]) return;
      render(value);
      this.#error(panel, "");
    } catch (err) {
      if (seq === this.#seq[panel]) this.#error(panel, describeError(err));
    }
  }

  /** @param {string} panel @param {string} text */
  #error(panel, text) {
    const p = this.#p[panel];
    if (p) p.error.textContent = text;
  }

  /** @param {() => Promise<import("./protocol.js").StepResult>} fn */
  async #step(fn) {
    this.#stopNote = "";
    let result;
    this.#stepping = true;
    try {
      result = await fn();
    } catch (err) {
      this.#error("regs", describeError(err));
      return;
    } finally {
      this.#stepping = false;
    }
    /** @type {Record<string, string>} */
    const whys = {
      budget: "",
      breakpoint: "stopped at a breakpoint on the way",
      idle: "the CPU is halted (HLT) with no interrupt to wake it",
      reset: "the guest reset",
    };
    const why = whys[result.stopped];
    this.#stopNote = why === undefined ? String(result.stopped) : why;
    this.refresh(result.registers);
  }

  // ---- breakpoints ----

  async #loadBreakpoints() {
    await this.#load("bps", () => this.#c.breakpoints(), (list) => {
      this.#bps = list;
      this.#renderBreakpoints();
    });
  }

  async #addBreakpoint() {
    const text = this.#$bpInput.value;
    let at;
    try {
      at = parseBreakpoint(text);
    } catch (err) {
      this.#$bpError.textContent = describeError(err);
      return;
    }
    await this.#setBreakpoints(() => this.#c.setBreakpoint(at));
    if (!this.#$bpError.textContent) this.#$bpInput.value = "";
  }

  /** @param {() => Promise<Breakpoint[]>} fn */
  async #setBreakpoints(fn) {
    try {
      this.#bps = await fn();
      this.#$bpError.textContent = "";
    } catch (err) {
      this.#$bpError.textContent = describeError(err);
    }
    this.#renderBreakpoints();
  }

  /** Set or remove the breakpoint at linear address `linear`.
   * @param {number} linear */
  toggleBreakpoint(linear) {
    const set = this.#bps.some((b) => b.kind === "linear" && b.at === linear);
    return this.#setBreakpoints(() => (set ? this.#c.removeBreakpoint(linear) : this.#c.setBreakpoint(linear)));
  }

  #renderBreakpoints() {
    this.#$bpList.replaceChildren(
      ...this.#bps.map((bp) => {
        const at = bp.kind === "port" ? { port: bp.at } : bp.at;
        const remove = h("button", { type: "button", title: "Remove this breakpoint", "aria-label": `Remove the breakpoint ${breakpointText(bp)}` }, "×");
        remove.onclick = () => this.#setBreakpoints(() => this.#c.removeBreakpoint(at));
        return h("span", { class: "w86i-bp" }, breakpointText(bp), remove);
      })
    );
    if (this.#lines) this.#renderDisasm(this.#lines);
  }

  // ---- registers ----

  /** @param {Registers} r */
  #renderRegisters(r) {
    this.#regs = r;
    // Compared with the last view of another moment: showing the same moment again (a pause
    // after a step reports it twice) keeps the highlights.
    if (this.#shownAt !== r.instructions) {
      this.#baseRegs = this.#prevRegs;
      this.#shownAt = r.instructions;
    }
    const prev = this.#baseRegs;
    /** @type {Record<string, string>} */
    const now = {};
    // A value with its key; highlighted if it changed since the last view.
    /** @param {string} key @param {string} text */
    const v = (key, text, cls = "") => {
      now[key] = text;
      const changed = prev && prev[key] !== undefined && prev[key] !== text;
      return h("span", { class: `${cls}${changed ? " w86i-changed" : ""}`.trim() || null }, text);
    };
    /** @param {string} name @param {number} value */
    const reg = (name, value) => [h("span", null, h("b", null, name), v(name, hex(value)))];
    const regs = h("div", { class: "w86i-regs" }, .../** @type {[string, number][]} */ ([["EAX", r.eax], ["EBX", r.ebx], ["ECX", r.ecx], ["EDX", r.edx], ["ESI", r.esi], ["EDI", r.edi], ["EBP", r.ebp], ["ESP", r.esp]]).map(([n, x]) => reg(n, x)));
    /** @param {...Child} children */
    const line = (...children) => h("div", { class: "w86i-line" }, ...children);
    const cs = r.segments.find((s) => s.name === "CS");
    const eip = line(
      h("b", null, "EIP"),
      v("EIP", hex(r.eip)),
      r.linearEip !== r.eip ? [" (linear ", v("linEIP", hex(r.linearEip)), ")"] : cs && cs.base === 0 ? h("span", { class: "w86i-dim" }, " = linear") : null
    );
    const mode = line(
      h("b", null, "CPL"),
      v("CPL", String(r.cpl)),
      " · ",
      v("mode", `${r.mode} mode${r.paging ? ", paging" : ""}, ${r.codeSize}-bit code`),
      r.halted ? [" · ", h("span", { class: "w86i-changed" }, "halted (HLT)")] : null
    );
    const flags = line(
      h("b", null, "EFLAGS"),
      v("EFLAGS", hex(r.eflags)),
      " ",
      ...r.flags.map((f) => {
        now[`flag ${f}`] = "1";
        const changed = prev && prev[`flag ${f}`] === undefined;
        return h("span", { class: `w86i-flag${changed ? " w86i-changed" : ""}`, title: `${f} is set` }, f);
      }),
      " IOPL ",
      v("IOPL", String(r.iopl))
    );
    const segRows = [...r.segments, r.ldtr, r.tr].map((s) => {
      /** @param {string} f */
      const k = (f) => `${s.name}.${f}`;
      const sel = `${hex(s.selector, 4)}`;
      const selTitle = `index ${s.index} in the ${s.ldt ? "LDT" : "GDT"}, RPL ${s.rpl}`;
      return h(
        "tr",
        null,
        h("th", null, s.name),
        h("td", { title: selTitle }, v(k("sel"), sel)),
        h("td", null, v(k("base"), hex(s.base))),
        h("td", null, v(k("limit"), hex(s.limit))),
        h("td", null, v(k("kind"), segmentKind(s, r.mode))),
        h("td", { class: "w86i-num" }, v(k("dpl"), String(s.dpl)))
      );
    });
    const segs = h(
      "table",
      { class: "w86i-segs" },
      h("thead", null, h("tr", null, h("th", null, ""), h("th", null, "selector"), h("th", null, "base"), h("th", null, "limit"), h("th", null, "descriptor cache"), h("th", null, "DPL"))),
      h("tbody", null, segRows)
    );
    const tables = line(h("b", null, "GDTR"), v("GDTR", `${hex(r.gdtr.base)} limit ${hex(r.gdtr.limit, 4)}`), "  ", h("b", null, "IDTR"), v("IDTR", `${hex(r.idtr.base)} limit ${hex(r.idtr.limit, 4)}`));
    /** @param {string[]} names */
    const bits = (names) => names.map((n) => h("span", { class: "w86i-flag" }, n));
    const cr0 = line(h("b", null, "CR0"), v("CR0", hex(r.cr0)), " ", bits(r.cr0Bits));
    const cr234 = line(h("b", null, "CR2"), v("CR2", hex(r.cr2)), "  ", h("b", null, "CR3"), v("CR3", hex(r.cr3)));
    const cr4 = line(h("b", null, "CR4"), v("CR4", hex(r.cr4)), " ", bits(r.cr4Bits));
    this.#p.regs.body.replaceChildren(regs, eip, mode, flags, segs, tables, cr0, cr234, cr4);
    this.#prevRegs = now;
  }

  // ---- disassembly ----

  async #refreshDisasm() {
    await this.#load("disasm", () => this.#c.disassemble(null, DISASM_LINES), (lines) => this.#renderDisasm(lines));
  }

  /** @param {import("./protocol.js").DisassemblyLine[]} lines */
  #renderDisasm(lines) {
    this.#lines = lines;
    const eip = this.#regs ? this.#regs.linearEip : null;
    const bps = new Set(this.#bps.filter((b) => b.kind === "linear").map((b) => b.at));
    const rows = lines.map((l) => {
      const current = l.linear === eip;
      const bytes = l.bytes.map((b) => b.toString(16).padStart(2, "0"));
      const shown = bytes.length > 7 ? `${bytes.slice(0, 6).join(" ")} …` : bytes.join(" ");
      const tr = h(
        "tr",
        { class: current ? "w86i-current" : null, title: `${bytes.join(" ")} · click: breakpoint at ${hex(l.linear)}`, "data-linear": l.linear },
        h("td", { class: "w86i-mark" }, bps.has(l.linear) ? "●" : current ? "▶" : ""),
        h("td", null, hex(l.linear)),
        h("td", { class: "w86i-bytes" }, shown),
        h("td", null, l.text)
      );
      tr.onclick = () => this.toggleBreakpoint(l.linear);
      return tr;
    });
    this.#p.disasm.body.replaceChildren(h("table", { class: "w86i-disasm" }, h("tbody", null, rows)));
  }

  // ---- memory ----

  async #refreshMemory() {
    if (!this.#running()) return;
    let at = this.#memAt;
    if (at === null) {
      if (!this.#regs) return;
      at = (this.#regs.linearEip & ~15) >>> 0;
    }
    this.#memBase = at;
    const length = MEMORY_ROWS * 16;
    await this.#load("mem", () => this.#c.readMemory(at, length), (value) => this.#renderMemory(at, value || []));
  }

  /** @param {number} at @param {(number | null)[]} bytes */
  #renderMemory(at, bytes) {
    const rows = [];
    for (let row = 0; row < MEMORY_ROWS; row++) {
      const cells = [];
      let ascii = "";
      for (let i = 0; i < 16; i++) {
        const b = bytes[row * 16 + i];
        const ok = typeof b === "number";
        cells.push(h("td", { class: ok ? null : "w86i-dim" }, ok ? b.toString(16).padStart(2, "0") : "??"));
        ascii += ok ? (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".") : " ";
      }
      rows.push(h("tr", null, h("th", null, hex((at + row * 16) >>> 0)), cells, h("td", { class: "w86i-ascii" }, ascii)));
    }
    this.#p.mem.body.replaceChildren(h("table", { class: "w86i-memory" }, h("tbody", null, rows)));
  }

  // ---- the page-table walk ----

  async #refreshWalk() {
    if (!this.#running()) return;
    let at = this.#walkAt;
    if (at === null) {
      if (!this.#regs) return;
      at = this.#regs.linearEip;
    }
    const name = this.#walkAt === null ? "EIP" : null;
    await this.#load("walk", () => this.#c.translate(at), (w) => this.#p.walk.body.replaceChildren(renderWalk(w, name)));
  }

  // ---- counters ----

  async #refreshCounters() {
    if (!this.#running()) return;
    await this.#load("counters", () => this.#c.counters(), (c) => this.#renderCounters(c));
  }

  /** @param {Counters | null} counters */
  #renderCounters(counters) {
    if (!counters) return;
    this.#counters = counters;
    const hideZero = this.#$hideZero.checked;
    if (this.#countersAt !== counters.instructions) {
      this.#baseCounters = this.#prevCounters;
      this.#countersAt = counters.instructions;
    }
    const prev = this.#baseCounters || new Map();
    const now = new Map();
    const rows = [];
    for (const g of counters.groups) {
      rows.push(h("tr", { class: "w86i-group" }, h("th", null, g.title), g.columns.map((c) => h("th", { class: "w86i-num" }, c))));
      for (const row of g.rows) {
        if (hideZero && row.values.every((x) => !x)) continue;
        rows.push(
          h(
            "tr",
            null,
            h("td", null, row.name),
            row.values.map((x, i) => {
              const key = `${g.title}/${row.name}/${i}`;
              now.set(key, x);
              const changed = prev.has(key) && prev.get(key) !== x;
              return h("td", { class: `w86i-num${changed ? " w86i-changed" : ""}` }, fmt(x));
            })
          )
        );
      }
    }
    this.#prevCounters = now;
    this.#$countersNote.textContent = `${fmt(counters.instructions)} instructions since the last reset`;
    const box = this.#p.counters.body;
    const scroll = box.scrollTop;
    box.replaceChildren(h("table", null, h("tbody", null, rows)));
    box.scrollTop = scroll;
  }
}

/**
 * The page-table walk `w` (controller.translate()'s answer) drawn step by step, as a lecture
 * draws it: the linear address split into its fields, CR3, the directory entry, the table
 * entry, the physical address (or where it stops). `name` names the address ("EIP").
 * @param {import("./protocol.js").Walk} w
 * @param {string | null} [name]
 * @returns {HTMLElement}
 */
export function renderWalk(w, name = null) {
  const out = h("div", { class: "w86i-walkview" });
  const lin = hex(w.linear);
  const title = h("div", { class: "w86i-line" }, h("b", null, "linear"), lin, name ? h("span", { class: "w86i-dim" }, ` (${name})`) : null);
  out.append(title);
  if (!w.paging) {
    const id = w.steps.find((s) => s.step === "identity");
    out.append(h("div", { class: "w86i-note", style: "font-size:12.5px" }, "Paging is off (CR0.PG is clear): the linear address is the physical address."));
    const steps = h("ol", { class: "w86i-steps" });
    for (const s of w.steps) {
      if (s.step === "a20") steps.append(a20Step(s));
    }
    steps.append(h("li", { class: "w86i-step w86i-result" }, h("span", { class: "w86i-what" }, "physical "), h("code", null, hex(w.physical ?? (id ? id.address : w.linear)))));
    out.append(steps);
    return out;
  }
  const dir = (w.linear >>> 22) & 0x3ff;
  const tab = (w.linear >>> 12) & 0x3ff;
  const pde = w.steps.find((s) => s.step === "pde");
  const big = pde && pde.bits.present && pde.bits.pageSize && w.pse;
  const split = big
    ? h(
        "div",
        { class: "w86i-walk-split" },
        h("div", { class: "w86i-dir" }, hex(dir, 3), h("small", null, "directory index, bits 31–22")),
        h("div", { class: "w86i-off22" }, hex(w.linear & 0x3fffff, 6), h("small", null, "offset in the 4 MiB page, bits 21–0"))
      )
    : h(
        "div",
        { class: "w86i-walk-split" },
        h("div", { class: "w86i-dir" }, hex(dir, 3), h("small", null, "directory index, 31–22")),
        h("div", { class: "w86i-tab" }, hex(tab, 3), h("small", null, "table index, 21–12")),
        h("div", { class: "w86i-off" }, hex(w.linear & 0xfff, 3), h("small", null, "offset, 11–0"))
      );
  out.append(split);
  const steps = h("ol", { class: "w86i-steps" });
  for (const s of w.steps) {
    if (s.step === "cr3") {
      steps.append(
        h("li", { class: "w86i-step" }, h("span", { class: "w86i-what" }, "CR3 "), h("code", null, hex(s.cr3)), " → the page directory at physical ", h("code", null, hex(s.directory)))
      );
    } else if (s.step === "pde" || s.step === "pte") {
      const isDir = s.step === "pde";
      const absent = !s.bits.present;
      const points = absent
        ? h("div", null, h("b", null, "not present (P = 0)"), `: the CPU raises a page fault (#PF), with CR2 = ${lin}. The kernel decides what to do: map a page and return, or kill the program.`)
        : isDir && s.bits.pageSize && w.pse
          ? h("div", null, "→ PS = 1: a 4 MiB page at physical ", h("code", null, hex(s.frame)))
          : h("div", null, isDir ? "→ the page table at physical " : "→ the page frame at physical ", h("code", null, hex(s.frame)));
      steps.append(
        h(
          "li",
          { class: `w86i-step${absent ? " w86i-fault" : ""}` },
          h("span", { class: "w86i-what" }, isDir ? "Page directory entry " : "Page table entry "),
          h("code", null, `#${s.index}`),
          " at ",
          h("code", null, hex(s.address)),
          h("span", { class: "w86i-dim" }, ` (${isDir ? "directory" : "table"} + 4 × ${s.index})`),
          h("div", null, "= ", h("code", null, hex(s.value)), entryBits(s.bits)),
          points
        )
      );
    } else if (s.step === "page") {
      steps.append(
        h(
          "li",
          { class: "w86i-step w86i-result" },
          h("span", { class: "w86i-what" }, "physical "),
          h("code", null, hex(s.address)),
          " = ",
          h("code", null, hex(s.base)),
          " + offset ",
          h("code", null, hex(s.offset, s.size > 4096 ? 6 : 3)),
          h("span", { class: "w86i-dim" }, ` (${s.size > 4096 ? "4 MiB" : "4 KiB"} page)`)
        )
      );
    } else if (s.step === "a20") {
      steps.append(a20Step(s));
    }
  }
  out.append(steps);
  if (w.permissions) {
    const p = w.permissions;
    /** @param {boolean} b */
    const yes = (b) => (b ? "yes" : "no");
    out.append(
      h(
        "div",
        { class: "w86i-note", style: "font-size:12.5px" },
        `A program (CPL 3) may read: ${yes(p.userRead)}, write: ${yes(p.userWrite)}. The kernel may write: ${yes(p.supervisorWrite)}${w.writeProtect ? "" : " (CR0.WP is clear)"}.`
      )
    );
  }
  return out;
}

/** @param {import("./protocol.js").WalkStep} s */
function a20Step(s) {
  return h(
    "li",
    { class: "w86i-step" },
    h("span", { class: "w86i-what" }, "A20 gate closed: "),
    "bit 20 forced to 0, ",
    h("code", null, hex(s.before)),
    " → ",
    h("code", null, hex(s.after))
  );
}
