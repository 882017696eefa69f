// The views of one machine that the page and the widget share: the VGA screen on a canvas, the
// keyboard and mouse, the serial terminal (xterm.js), and the status line text.
//
// Each view can be taken down again: ScreenView and createTerminal's view have dispose(), and
// every function here takes a `signal` (an AbortSignal) whose abort removes every listener,
// observer and timer it added, so that a widget removed from the page leaves nothing behind.
//
// xterm.js is imported from vendor/xterm/ next to this module: scripts/site.sh copies it there
// for the static site; in the npm package vendor/xterm/ holds three one-line files that forward
// to the @xterm/xterm and @xterm/addon-fit peer dependencies (package/vendor/xterm/).

import { Terminal } from "./vendor/xterm/xterm.mjs";
import { FitAddon } from "./vendor/xterm/addon-fit.mjs";
import { formatBytes, formatCount } from "./wasm86.js";

/** @typedef {import("./wasm86.js").MachineController} MachineController */

/** URL of xterm's stylesheet (the widget loads it into its shadow root). */
export const XTERM_CSS = new URL("vendor/xterm/xterm.css", import.meta.url).href;

// ---------------------------------------------------------------------------------------------
// Screen

/**
 * Paints the machine's frames on `canvas` and sizes it: always shown at 4:3 (a PC monitor: 720x400
 * text mode, 640x480 and 800x600 all filled the same glass), as large as `box` allows (and no
 * taller than `maxHeight()`), snapped to a whole number of device pixels per guest pixel when that
 * costs little, so `image-rendering: pixelated` stays crisp.
 */
export class ScreenView {
  /** @type {HTMLCanvasElement} */
  canvas;
  /** @type {HTMLElement} */
  box;
  /** @type {() => number} */
  maxHeight;
  /** @type {CanvasRenderingContext2D} */
  ctx;
  #life = new AbortController();
  /** @type {ResizeObserver} */
  #resize;

  /**
   * @param {HTMLCanvasElement} canvas
   * @param {MachineController} controller
   * @param {{box?: HTMLElement, maxHeight?: () => number, signal?: AbortSignal}} [options]
   *   `box`: the element the canvas fills (default its parent); `maxHeight()`: the tallest it
   *   may be (CSS px); `signal`: its abort disposes the view
   */
  constructor(canvas, controller, { box, maxHeight = () => Infinity, signal } = {}) {
    this.canvas = canvas;
    this.box = box || /** @type {HTMLElement} */ (canvas.parentElement);
    this.maxHeight = maxHeight;
    const ctx = canvas.getContext("2d", { alpha: false });
    if (!ctx) throw new Error("the browser gave no 2D canvas context");
    this.ctx = ctx;
    this.clear();
    const on = { signal: this.#life.signal };
    controller.addEventListener("frame", (e) => this.paint(e.detail), on);
    controller.addEventListener("restart", () => this.clear(), on);
    this.#resize = new ResizeObserver(() => this.fit());
    this.#resize.observe(this.box);
    addEventListener("resize", () => this.fit(), on);
    signal?.addEventListener("abort", () => this.dispose(), { once: true });
    this.fit();
  }

  /** Stop painting and following the window's size: removes every listener and observer. */
  dispose() {
    this.#life.abort();
    this.#resize.disconnect();
  }

  clear() {
    if (this.canvas.width !== 720 || this.canvas.height !== 400) {
      this.canvas.width = 720;
      this.canvas.height = 400;
    }
    this.ctx.fillStyle = "#000";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.fit();
  }

  /** @param {import("./wasm86.js").FrameDetail} frame */
  paint({ width, height, data }) {
    if (!width || !height || data.length !== width * height * 4) return;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.fit();
    }
    this.ctx.putImageData(new ImageData(/** @type {Uint8ClampedArray<ArrayBuffer>} */ (data), width, height), 0, 0);
  }

  fit() {
    const { canvas, box } = this;
    const style = getComputedStyle(box);
    const availW = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const root = /** @type {Document | ShadowRoot} */ (box.getRootNode());
    const fullscreen = root.fullscreenElement === box || document.fullscreenElement === box;
    const availH = fullscreen ? box.clientHeight : this.maxHeight();
    if (!(availW > 0)) return;
    const dpr = devicePixelRatio || 1;
    let cssW = Math.min(availW, availH * (4 / 3));
    const scale = (cssW * dpr) / canvas.width;
    if (scale >= 1) {
      const whole = Math.floor(scale);
      if (whole / scale >= 0.75) cssW = (whole * canvas.width) / dpr;
    }
    const cssH = cssW * 0.75;
    canvas.style.width = `${Math.floor(cssW)}px`;
    canvas.style.height = `${Math.floor(cssH)}px`;
    // Nearest-neighbour only enlarges well: shrunk below one device pixel per guest pixel it
    // drops whole columns of text, so smooth scaling is used there.
    const shrunk = cssW * dpr < canvas.width || cssH * dpr < canvas.height;
    canvas.classList.toggle("smooth", shrunk);
  }
}

/** Toggle fullscreen on `el` (the screen's box); the screen refits through its ResizeObserver.
 * @param {HTMLElement} el */
export async function toggleFullscreen(el) {
  const root = /** @type {Document | ShadowRoot} */ (el.getRootNode());
  if ((root.fullscreenElement || document.fullscreenElement) === el) {
    await document.exitFullscreen();
    return;
  }
  await el.requestFullscreen({ navigationUI: "hide" });
  // In fullscreen, ask for the keys a browser normally keeps (Escape, Ctrl+W ...) where supported.
  // (Keyboard Lock: Chromium only, not in the DOM's standard types.)
  const keyboard = /** @type {{keyboard?: {lock?: () => Promise<void>}}} */ (navigator).keyboard;
  if (keyboard && keyboard.lock) keyboard.lock().catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Keyboard

/** Ctrl+V, Cmd+V, Shift+Insert: left to the browser, whose paste event types the clipboard.
 * @param {KeyboardEvent} e */
function isPasteShortcut(e) {
  return ((e.ctrlKey || e.metaKey) && e.code === "KeyV") || (e.shiftKey && e.code === "Insert");
}

/**
 * Sends physical keys (KeyboardEvent.code, so the layout is the guest's US layout whatever the
 * host's) from each element in `targets` to the PS/2 keyboard, and typed text from a hidden
 * textarea (mobile keyboards) and from paste. Returns a function that releases every held key.
 * The listeners go when `signal` aborts.
 * @param {MachineController} controller
 * @param {HTMLElement[]} targets
 * @param {{textInput?: HTMLTextAreaElement | HTMLInputElement | null, signal?: AbortSignal}} [options]
 * @returns {() => void}
 */
export function bindKeyboard(controller, targets, { textInput = null, signal } = {}) {
  const on = { signal };
  /** @type {Set<string>} */
  const held = new Set();
  const releaseAll = () => {
    for (const code of held) controller.key(code, false);
    held.clear();
  };

  /** @param {KeyboardEvent} e */
  const onKeyDown = (e) => {
    // Virtual keyboards and IMEs send code "" with key "Unidentified"/"Process": their text comes
    // through beforeinput/compositionend instead.
    if (!e.code || e.isComposing || e.key === "Process" || e.key === "Unidentified") return;
    if (isPasteShortcut(e)) return;
    e.preventDefault();
    e.stopPropagation();
    // The emulated keyboard repeats a held key itself (typematic), as a real one does: the host's
    // auto-repeat keydowns are swallowed, or the guest would see double repeats.
    if (e.repeat || held.has(e.code)) return;
    held.add(e.code);
    controller.key(e.code, true);
  };
  /** @param {KeyboardEvent} e */
  const onKeyUp = (e) => {
    if (!held.has(e.code)) return;
    e.preventDefault();
    e.stopPropagation();
    held.delete(e.code);
    controller.key(e.code, false);
  };
  /** @param {ClipboardEvent} e */
  const onPaste = (e) => {
    const text = e.clipboardData && e.clipboardData.getData("text/plain");
    if (!text) return;
    e.preventDefault();
    // Ctrl is still down in the guest from Ctrl+V: let it go, or the text arrives as Ctrl+letters.
    releaseAll();
    controller.typeText(text.replace(/\r\n?/g, "\n"));
  };

  for (const t of targets) {
    t.addEventListener("keydown", onKeyDown, on);
    t.addEventListener("keyup", onKeyUp, on);
    t.addEventListener("paste", onPaste, on);
    // A key held while focus leaves would stay down in the guest forever (and repeat).
    t.addEventListener("blur", releaseAll, on);
  }
  document.addEventListener(
    "visibilitychange",
    () => {
      if (document.hidden) releaseAll();
    },
    on
  );
  addEventListener("blur", releaseAll, on);

  if (textInput) {
    const input = /** @type {HTMLElement & {value: string}} */ (textInput);
    input.addEventListener(
      "beforeinput",
      (e) => {
        switch (e.inputType) {
          case "insertText":
          case "insertReplacementText":
            if (e.data) controller.typeText(e.data);
            break;
          case "insertLineBreak":
          case "insertParagraph":
            controller.typeText("\n");
            break;
          case "deleteContentBackward":
            controller.key("Backspace", true);
            controller.key("Backspace", false);
            break;
          case "deleteContentForward":
            controller.key("Delete", true);
            controller.key("Delete", false);
            break;
          default:
            // Composition (predictive keyboards) cannot be cancelled: compositionend sends it.
            return;
        }
        e.preventDefault();
      },
      on
    );
    input.addEventListener(
      "compositionend",
      (e) => {
        if (e.data) controller.typeText(e.data);
        input.value = "";
      },
      on
    );
  }
  return releaseAll;
}

// ---------------------------------------------------------------------------------------------
// Mouse

/**
 * A click on the canvas locks the pointer to it; then relative motion, buttons and the wheel go to
 * the PS/2 mouse (dy positive = down, as the browser reports it; buttons bit 0 left, 1 right,
 * 2 middle, 3 back, 4 forward: the PS/2 order too). Motion is batched per animation frame. The
 * listeners go when `signal` aborts.
 * @param {MachineController} controller
 * @param {HTMLCanvasElement} canvas
 * @param {{signal?: AbortSignal}} [options]
 */
export function bindMouse(controller, canvas, { signal } = {}) {
  const on = { signal };
  let dx = 0;
  let dy = 0;
  let dz = 0;
  let buttons = 0;
  let queued = 0;
  const root = /** @type {Document | ShadowRoot} */ (canvas.getRootNode());
  const locked = () => (root.pointerLockElement || document.pointerLockElement) === canvas;
  const flush = () => {
    queued = 0;
    if (!locked()) return;
    controller.mouse(dx, dy, dz, buttons);
    dx = dy = dz = 0;
  };
  const queue = () => {
    if (!queued) queued = requestAnimationFrame(flush);
  };
  signal?.addEventListener("abort", () => cancelAnimationFrame(queued), { once: true });
  canvas.addEventListener(
    "click",
    () => {
      if (locked() || !canvas.requestPointerLock) return;
      try {
        const p = /** @type {Promise<void> | undefined} */ (canvas.requestPointerLock());
        if (p && p.catch) p.catch(() => {});
      } catch {
        // Pointer lock unavailable (some embedded browsers): the keyboard still works.
      }
    },
    on
  );
  canvas.addEventListener(
    "mousemove",
    (e) => {
      if (!locked()) return;
      dx += e.movementX;
      dy += e.movementY;
      buttons = e.buttons & 31;
      queue();
    },
    on
  );
  /** @param {MouseEvent} e */
  const onButton = (e) => {
    if (!locked()) return;
    // preventDefault also stops the click from focusing the canvas: focus it here, or keys would
    // go nowhere after the canvas lost focus while the pointer stayed locked.
    e.preventDefault();
    if (e.type === "mousedown") canvas.focus({ preventScroll: true });
    buttons = e.buttons & 31;
    flush();
  };
  canvas.addEventListener("mousedown", onButton, on);
  canvas.addEventListener("mouseup", onButton, on);
  canvas.addEventListener(
    "contextmenu",
    (e) => {
      if (locked()) e.preventDefault();
    },
    on
  );
  canvas.addEventListener(
    "wheel",
    (e) => {
      if (!locked()) return;
      e.preventDefault();
      dz += Math.sign(e.deltaY);
      queue();
    },
    { passive: false, signal }
  );
  document.addEventListener(
    "pointerlockchange",
    () => {
      if (!locked() && buttons) {
        buttons = 0;
        controller.mouse(0, 0, 0, 0);
      }
    },
    on
  );
}

// ---------------------------------------------------------------------------------------------
// Serial terminal

/**
 * What createTerminal gives: the xterm.js Terminal, a way to change its rows, and dispose(),
 * which removes the terminal and every listener and observer it added.
 * @typedef {object} TerminalView
 * @property {Terminal} term
 * @property {(rows: number | null) => void} setRows use a fixed number of rows (null: as many
 *   as fit the container's height)
 * @property {() => void} dispose
 */

/**
 * xterm.js on COM1: guest bytes are written to it, typed keys (and xterm's own answers, such as
 * the cursor position report busybox asks for with ESC[6n) go to the guest. `signal`'s abort
 * disposes it.
 * @param {HTMLElement} container
 * @param {MachineController} controller
 * @param {{fontSize?: number, rows?: number | null, open?: boolean, showMessages?: boolean,
 *   signal?: AbortSignal}} [options] `open: false`: not shown (it still answers the guest)
 * @returns {TerminalView}
 */
export function createTerminal(
  container,
  controller,
  { fontSize = 14, rows = null, open = true, showMessages = false, signal } = {}
) {
  const term = new Terminal({
    fontSize,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', 'Cascadia Mono', Menlo, Consolas, monospace",
    cursorBlink: true,
    scrollback: 5000,
    convertEol: false,
    theme: { background: "#111318", foreground: "#d8dee9", cursor: "#e5e9f0" },
  });
  const life = new AbortController();
  const on = { signal: life.signal };
  // Notes from the host, dimmed, so the reader knows what is going on; they are only shown, never
  // part of serialText(). Most of the boot passes before the kernel's first line: it unpacks
  // itself (XZ) first.
  /** @param {string} text */
  const note = (text) => term.write(`\x1b[90m[wasm86] ${text.replace(/\n/g, "\r\n")}\x1b[0m\r\n`);
  controller.addEventListener(
    "boot",
    () =>
      note(
        controller.options && controller.options.firmware
          ? "Booting through the BIOS: the firmware and the boot loader show on the screen; a guest uses this serial line only if it is set up to."
          : "Booting Linux: the kernel unpacks itself first (a few quiet seconds)."
      ),
    on
  );
  controller.addEventListener(
    "restored",
    () => note("Restored a saved machine: it goes on where it was saved (press Enter for a new prompt)."),
    on
  );
  if (showMessages) controller.addEventListener("message", (e) => note(e.detail.text), on);
  const typed = term.onData((data) => controller.sendSerial(data));
  const binary = term.onBinary((data) => controller.sendSerial(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
  controller.addEventListener("serial", (e) => term.write(e.detail.bytes), on);
  controller.addEventListener("restart", () => term.reset(), on);
  /** @type {ResizeObserver | null} */
  let resize = null;
  let disposed = false;
  /** @type {TerminalView} */
  const view = {
    term,
    setRows(r) {
      rows = r;
      refit();
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      life.abort();
      typed.dispose();
      binary.dispose();
      if (resize) resize.disconnect();
      term.dispose();
    },
  };
  signal?.addEventListener("abort", () => view.dispose(), { once: true });
  /** @type {FitAddon | null} */
  let fit = null;
  function refit() {
    if (!fit || disposed || !container.isConnected || container.clientWidth === 0) return;
    const dims = fit.proposeDimensions();
    if (!dims || !dims.cols) return;
    const r = rows || dims.rows;
    if (dims.cols !== term.cols || r !== term.rows) term.resize(Math.max(dims.cols, 20), Math.max(r, 5));
  }
  // Not shown (a screen-only widget): the terminal still parses the output and answers the
  // guest's queries, so busybox behaves the same.
  if (!open) return view;
  fit = new FitAddon();
  term.loadAddon(fit);
  term.open(container);
  resize = new ResizeObserver(refit);
  resize.observe(container);
  refit();
  return view;
}

// ---------------------------------------------------------------------------------------------
// Status

/** "running · 41.2 MIPS · 1.20 G instructions · bzImage 1.5 MiB · hda disk.img ..."
 * @param {MachineController} controller */
export function statusText(controller) {
  const s = controller.stats();
  /** @type {string[]} */
  const parts = [s.state];
  if (s.state === "running" || s.state === "paused") {
    parts.push(`${s.mips.toFixed(1)} MIPS`, `${formatCount(s.instructions)} instructions`);
    if (s.jit) {
      const share = s.instructions > 0 ? (100 * s.jit.compiledInstructions) / s.instructions : 0;
      parts.push(
        s.jit.error
          ? `compiling tier off after an error: ${s.jit.error}`
          : `compiled ${share.toFixed(0)}% (${s.jit.regionsLive} regions)`
      );
    }
  }
  let wholeBytes = 0;
  const streamed = [];
  const order = ["kernel", "initrd", "hda", "hdb", "cdrom"];
  const files = controller.files().sort((a, b) => order.indexOf(a.label) - order.indexOf(b.label));
  for (const f of files) {
    if (f.local) {
      parts.push(`${f.label} ${f.name} (${formatBytes(f.total)}, local file${f.done ? "" : ", reading"})`);
      continue;
    }
    if (f.streamed) {
      streamed.push(f);
      continue;
    }
    wholeBytes += f.loaded;
    const of = f.total ? ` / ${formatBytes(f.total)}` : "";
    // A disk from a server that ignores Range requests was downloaded whole.
    const whole = f.label === "kernel" || f.label === "initrd" ? "" : " (downloaded whole)";
    parts.push(f.done ? `${f.label} ${f.name} ${formatBytes(f.loaded)}${whole}` : `${f.label} ${f.name} ${formatBytes(f.loaded)}${of}`);
  }
  // The machine counts the bytes of all streamed disks together.
  const diskBytes = Math.max(0, s.downloadedBytes - wholeBytes);
  for (const f of streamed) {
    const size = f.total ? `${formatBytes(f.total)}, ` : "";
    const fetched = streamed.length === 1 ? `${formatBytes(diskBytes)} fetched` : "streamed";
    parts.push(`${f.label} ${f.name} (${size}${f.done ? fetched : "opening"})`);
  }
  if (streamed.length > 1) parts.push(`disks fetched ${formatBytes(diskBytes)}`);
  return parts.join(" · ");
}
