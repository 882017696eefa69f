// wasm86 front-end library: MachineController runs one emulated PC in a Web Worker (worker.js) and
// mirrors its output on the main thread, so that every getter of the automation API is synchronous
// and the page never waits on the guest. Both index.html and the <wasm86-machine> element use it.
//
// The automation API (the same on `window.wasm86` and on each widget's `.machine`):
//   serialText() screenText() sendSerial(text) typeText(text) key(code, pressed) stats() pause()
//   resume() reset()
//   start() ready error() saveState() restoreState(state) startRecording() stopRecording()
//   counters() resetCounters() registers() step(n) stepOver() setBreakpoint(at) removeBreakpoint(at)
//   clearBreakpoints() breakpoints() disassemble(linear, count) translate(linear)
//   readMemory(linear, length)
// The inspector's calls return Promises (they ask the worker's machine):
// - counters(): {instructions, groups: [{title, columns, rows: [{name, values}]}]}, the machine's
//   event counters (sensitive and privileged instructions by CPL, exceptions, interrupts, TLB
//   misses and flushes, CR3 loads, mode switches, decoded and compiled code, each device's port
//   and MMIO accesses) since resetCounters() or power-on.
// - registers(): {eax … edi, eip, linearEip, eflags, flags: ["ZF", …], iopl, segments: [{name,
//   selector, base, limit, kind, dpl, …}], ldtr, tr, gdtr, idtr, cr0, cr0Bits, cr2, cr3, cr4,
//   cr4Bits, dr, cpl, mode: "real"|"protected"|"v86", paging, codeSize, …, instructions}.
// - step(n = 1) and stepOver(): pause the machine, run n instructions (or over a CALL, INT, REP
//   string instruction or LOOP), and give {stopped, registers}; resume() runs on.
// - setBreakpoint(at): `at` a linear address (number), or {port: n} for an I/O port; the machine
//   pauses before the instruction and fires a "breakpoint" event ({breakpoint, registers}).
//   While any breakpoint is set the machine runs instruction by instruction (slower).
// - disassemble(linear?, count?): [{linear, ip, bytes, text}] (around EIP without linear).
// - translate(linear): the page-table walk, {paging, steps: [{step: "cr3"|"pde"|"pte"|…}],
//   physical, notPresent, permissions, …}.
// - readMemory(linear, length): a byte per address, null where it cannot be read.
// stats() is {instructions, mips, downloadedBytes, state, jit}, state one of
// "idle" | "loading" | "running" | "paused" | "error"; jit is null while the compiling tier is
// off, else its counters (regionsCompiled, regionsLive, guestBytes, wasmBytes,
// compiledInstructions, entries, inlineInstructions, stepInstructions, failures, compileMs,
// error).

const here = import.meta.url;

/** setBreakpoint's argument as the worker takes it: a linear address, or {port}. */
function breakpointArgs(at) {
  if (at && typeof at === "object" && "port" in at) return { kind: "port", at: at.port };
  return { kind: "linear", at };
}

/** Default options (contract 5): the bundled Linux, next to this module in the site. */
export const DEFAULTS = Object.freeze({
  kernel: new URL("images/bzImage", here).href,
  initrd: new URL("images/initramfs.cpio.gz", here).href,
  append: "console=ttyS0 console=tty0 nomodeset",
  memory: 64,
  hda: null,
  hdb: null,
  cdrom: null,
  // A floppy image for drive A: (360 KB to 2.88 MB; downloaded whole).
  fda: null,
  // Booting through the BIOS: a drive given without a kernel option (kernel, initrd, append)
  // boots this way, and so does giving `boot` (the drives to try: a floppy, c hard disk,
  // d CD-ROM; default "cad"), `bios` or `vgaBios` (the firmware, SeaBIOS and SeaVGABIOS by
  // default). Then `firmware` is true. `bootMenu` (milliseconds, 0 to 65535) has SeaBIOS offer
  // its boot menu ("Press ESC for boot menu.") for that long; null: no menu.
  boot: null,
  bootMenu: null,
  bios: new URL("images/firmware/bios-256k.bin", here).href,
  vgaBios: new URL("images/firmware/vgabios-stdvga.bin", here).href,
  firmware: false,
  // A saved machine to start from instead of booting (a state file: URL, File, Blob or bytes).
  // Unless the boot is asked for (state=none, or any of the kernel, initrd, append, memory or
  // disk options), the page starts from the bundled Linux saved at its prompt (DEFAULT_STATE).
  state: null,
  // The compiling tier (hot guest code to WebAssembly): on; `jit=0` turns it off,
  // `jit-threshold=N` compiles a block once it has started N times (1: most eager; null: the
  // emulator's default).
  jit: true,
  jitThreshold: null,
});

/** The bundled Linux saved at its shell prompt with the default options (`make site` makes it). */
export const DEFAULT_STATE = new URL("images/linux.state", here).href;

/** The options that choose what boots: giving any of them boots instead of restoring the
 * default state (that state was saved with the defaults, and with no disks). */
const BOOT_OPTIONS = ["kernel", "initrd", "append", "memory", "hda", "hdb", "cdrom", "fda", "boot", "bios", "vgaBios", "bootMenu"];
/** The options that boot a kernel directly (without them, drives boot through the BIOS). */
const KERNEL_OPTIONS = ["kernel", "initrd", "append"];
/** The options that choose firmware and so a boot through the BIOS. */
const FIRMWARE_OPTIONS = ["boot", "bios", "vgaBios", "bootMenu"];

/** The emulator package (wasm-pack --target web output), next to this module. */
const PKG_URL = new URL("pkg/wasm86.js", here).href;
const WORKER_URL = new URL("worker.js", here);

/** Keep at most this much serial text (characters); older output is dropped from the front. */
const SERIAL_KEEP = 4 << 20;
/** Without a word from a running worker for this long (visible tab), it is reported dead. */
const WATCHDOG_MS = 15_000;

/**
 * Turn options from a query string or element attributes into the controller's options.
 * URLs are resolved against `base`; disks may also be File objects. Throws an Error in plain words.
 */
export function resolveOptions(given, base = document.baseURI) {
  const out = { ...DEFAULTS };
  const url = (name, v) => {
    try {
      return new URL(v, base).href;
    } catch {
      throw new Error(`${name}=${v} is not a valid URL`);
    }
  };
  if (given.vgaBios === undefined && given.vgabios !== undefined) given = { ...given, vgaBios: given.vgabios };
  if (given.bootMenu === undefined && given.bootmenu !== undefined) given = { ...given, bootMenu: given.bootmenu };
  for (const name of ["kernel", "initrd", "hda", "hdb", "cdrom", "fda", "bios", "vgaBios"]) {
    const v = given[name];
    if (v === undefined) continue;
    // "" or "none" (or null, from options resolved before) mean no such file; the kernel is needed.
    if (v === null || v === "" || v === "none") out[name] = name === "kernel" || name === "bios" ? DEFAULTS[name] : null;
    else if (typeof v !== "string") out[name] = v; // a File or Blob
    else out[name] = url(name, v);
  }
  const state = given.state;
  if (state !== undefined) {
    if (state === null || state === "" || state === "none") out.state = null;
    else if (typeof state !== "string") out.state = state; // a File, Blob or bytes
    else out.state = url("state", state);
  } else if (!BOOT_OPTIONS.some((name) => given[name] !== undefined)) {
    out.state = DEFAULT_STATE;
  }
  if (given.append !== undefined && given.append !== null) out.append = String(given.append);
  const set = (name) => given[name] !== undefined && given[name] !== null && given[name] !== "";
  const drive = ["hda", "hdb", "cdrom", "fda"].some((name) => out[name]);
  if (typeof given.firmware === "boolean") {
    // Options resolved before (the controller resolves what it is given again).
    out.firmware = given.firmware;
  } else {
    out.firmware = FIRMWARE_OPTIONS.some(set) || (drive && !KERNEL_OPTIONS.some(set));
    if (FIRMWARE_OPTIONS.some(set) && KERNEL_OPTIONS.some(set)) {
      throw new Error("boot, bios, vgabios and bootmenu boot through the BIOS: they cannot be given with kernel, initrd or append");
    }
  }
  if (out.firmware) {
    const order = set("boot") ? String(given.boot).toLowerCase() : "cad";
    if (!/^[acd]{1,3}$/.test(order) || new Set(order).size !== order.length) {
      throw new Error(`boot=${given.boot} is not a boot order: up to three different letters of a (floppy), c (hard disk), d (CD-ROM), for example boot=dc`);
    }
    out.boot = order;
    if (set("bootMenu")) {
      const ms = Number(given.bootMenu);
      if (!Number.isInteger(ms) || ms < 0 || ms > 65535) {
        throw new Error(`bootmenu=${given.bootMenu} is not a time: the milliseconds SeaBIOS offers its boot menu for, 0 to 65535, for example bootmenu=3000`);
      }
      out.bootMenu = ms;
    }
    // The saved Linux is not what boots.
    if (given.state === undefined) out.state = null;
  }
  // A command line that names the root file system (root=/dev/sda) asks for it: the bundled
  // initramfs would ignore it (it is a whole userland and never mounts another root), so it is
  // only loaded then when asked for by name.
  if (given.initrd === undefined && /(^|\s)root=/.test(out.append)) out.initrd = null;
  if (given.memory !== undefined && given.memory !== null && given.memory !== "") {
    const m = Number(given.memory);
    if (!Number.isInteger(m) || m <= 0) {
      throw new Error(`memory=${given.memory} is not a whole number of MiB (for example memory=64)`);
    }
    out.memory = m;
  }
  if (given.jit !== undefined && given.jit !== null && given.jit !== "") {
    const v = String(given.jit).toLowerCase();
    if (["1", "on", "true", "yes"].includes(v)) out.jit = true;
    else if (["0", "off", "false", "no"].includes(v)) out.jit = false;
    else throw new Error(`jit=${given.jit} is neither 1 (on) nor 0 (off)`);
  }
  const threshold = given.jitThreshold ?? given["jit-threshold"];
  if (threshold !== undefined && threshold !== null && threshold !== "") {
    const n = Number(threshold);
    if (!Number.isInteger(n) || n < 1 || n > 1e9) {
      throw new Error(`jit-threshold=${threshold} is not a whole number from 1 (for example jit-threshold=2000)`);
    }
    out.jitThreshold = n;
  }
  return out;
}

/** Options from the page's query string: kernel initrd append hda hdb cdrom fda boot bios
 * vgabios bootmenu memory jit jit-threshold state. */
export function optionsFromQuery(search = location.search, base = location.href) {
  const q = new URLSearchParams(search);
  const given = {};
  for (const name of ["kernel", "initrd", "append", "hda", "hdb", "cdrom", "fda", "boot", "bios", "vgabios", "bootmenu", "memory", "jit", "jit-threshold", "state"]) {
    if (q.has(name)) given[name] = q.get(name);
  }
  return resolveOptions(given, base);
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(n) {
  if (!Number.isFinite(n)) return "?";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** 1234567 -> "1.23 M". */
export function formatCount(n) {
  if (n < 1e3) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} M`;
  return `${(n / 1e9).toFixed(2)} G`;
}

/**
 * One emulated PC. Events (all CustomEvent): "state", "serial" ({bytes, text, instructions,
 * instructionsBefore}: the guest wrote these bytes to COM1 while its retired-instruction count went
 * from instructionsBefore to instructions, one run() slice of ~1-2 ms), "frame"
 * ({width, height, data: Uint8ClampedArray}), "screentext", "stats", "progress", "message" ({text}),
 * "error" ({message}), "boot" (the kernel was loaded: first start, reset, guest reboot),
 * "restored" (the machine started from a saved state instead), "restart" (a new machine replaces
 * the old one: mirrors were cleared), "breakpoint" ({breakpoint: {kind, at}, registers}: the
 * machine paused before an instruction a breakpoint names).
 */
export class MachineController extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = resolveOptions(options, options.base || document.baseURI);
    this._worker = null;
    this._wantPaused = false;
    this._framesOn = true;
    this._requests = new Map(); // save/record request id -> {resolve, reject}
    this._nextRequest = 1;
    this._clear();
  }

  _clear() {
    this._state = "idle";
    this._error = null;
    this._serial = "";
    this._decoder = new TextDecoder("utf-8");
    this._screen = "";
    this._stats = { instructions: 0, mips: 0, downloadedBytes: 0, jit: null };
    this._files = new Map();
    this._messages = [];
    this._pendingFrame = null;
    this._frameScheduled = false;
    this._heardAt = performance.now();
    let resolve;
    let reject;
    this._ready = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Nobody may be waiting on `ready`; the error is shown on the page anyway.
    this._ready.catch(() => {});
    this._resolveReady = resolve;
    this._rejectReady = reject;
    this._readySettled = false;
  }

  /** A controller that never runs, in the error state (e.g. the page's options were invalid), so
   * the automation API still exists and says what went wrong. */
  static failed(message) {
    const c = new MachineController({});
    c._fatal = true;
    c._fail(message);
    return c;
  }

  // ---- automation API (contract 5) ----

  /** Everything the guest wrote to COM1 (the newest 4 Mi characters). */
  serialText() {
    return this._serial;
  }

  /** The VGA text screen, rows joined by "\n" ("" in graphics mode or before the first frame). */
  screenText() {
    return this._screen;
  }

  /** Send text to the guest's COM1 (UTF-8). */
  sendSerial(text) {
    const bytes = typeof text === "string" ? new TextEncoder().encode(text) : new Uint8Array(text);
    this._send({ type: "serial", bytes }, [bytes.buffer]);
  }

  /** Type text on the PS/2 keyboard (US layout; "\n" is Enter). */
  typeText(text) {
    this._send({ type: "type", text: String(text) });
  }

  stats() {
    const running = this._state === "running";
    return { ...this._stats, mips: running ? this._stats.mips : 0, state: this._state };
  }

  pause() {
    this._wantPaused = true;
    if (this._state === "running") this._setState("paused");
    this._send({ type: "pause" });
  }

  resume() {
    this._wantPaused = false;
    if (this._state === "paused") this._setState("running");
    this._send({ type: "resume" });
  }

  /** Reset the guest (boots the kernel again). After an error, starts a fresh machine. */
  reset() {
    if (this._state === "error") {
      this.restart();
    } else if (this._worker) {
      this._send({ type: "reset" });
    }
  }

  /** Start now (idempotent). Returns `ready`. */
  start() {
    if (!this._worker && !this._fatal) this._spawn();
    return this._ready;
  }

  /** The whole machine as a state file (a Promise of an ArrayBuffer): registers, devices, RAM,
   * the screen and the guest's changes to its disks (not the disk images themselves). Rejects
   * when there is no running machine. */
  saveState() {
    if (!this._running()) {
      return Promise.reject(new Error(`there is no running machine to save (it is ${this._state})`));
    }
    return this._request({ type: "save" });
  }

  /** Start recording the run from here (a Promise, resolved once it runs): the machine as it is
   * and every input from now on, for `wasm86 --replay FILE` to repeat exactly. A reboot or a
   * disc change ends the recording (a replay cannot load the kernel or the disc again). */
  startRecording() {
    if (!this._running()) {
      return Promise.reject(new Error(`there is no running machine to record (it is ${this._state})`));
    }
    return this._request({ type: "record", on: true }).then(() => undefined);
  }

  /** End the recording: a Promise of the recording file (an ArrayBuffer), or of null if none was
   * started. */
  stopRecording() {
    if (!this._running()) {
      return Promise.reject(new Error(`there is no running machine (it is ${this._state})`));
    }
    return this._request({ type: "record", on: false }).then((buffer) => buffer || null);
  }

  /** The machine's event counters since `resetCounters()` or power-on (a Promise; see the
   * automation API at the top of this file). Rejects when there is no running machine. */
  counters() {
    return this._inspect("counters");
  }

  /** Zero the event counters (a Promise, resolved once done). */
  resetCounters() {
    return this._inspect("resetCounters").then(() => undefined);
  }

  /** The CPU's registers (a Promise; see the automation API at the top of this file). */
  registers() {
    return this._inspect("registers");
  }

  /** Pause and run `n` instructions (default 1): a Promise of {stopped, registers}. */
  step(n = 1) {
    return this._inspect("step", { count: n }).then((r) => this._afterStep(r));
  }

  /** Pause and step over the instruction at EIP (a CALL, INT, REP string instruction or LOOP
   * runs to the next instruction): a Promise of {stopped, registers}. */
  stepOver() {
    return this._inspect("stepOver").then((r) => this._afterStep(r));
  }

  /** Stop before the instruction at linear address `at` (a number), or before any instruction
   * that accesses I/O port `at.port`. A Promise of the breakpoints now set. */
  setBreakpoint(at) {
    return this._inspect("addBreakpoint", breakpointArgs(at));
  }

  /** Remove a breakpoint set with setBreakpoint(at). A Promise of the breakpoints left. */
  removeBreakpoint(at) {
    return this._inspect("removeBreakpoint", breakpointArgs(at));
  }

  /** Remove every breakpoint (a Promise). */
  clearBreakpoints() {
    return this._inspect("clearBreakpoints");
  }

  /** The breakpoints set: a Promise of [{kind: "linear"|"port", at}]. */
  breakpoints() {
    return this._inspect("breakpoints");
  }

  /** `count` instructions from linear address `linear` (around EIP if it is null): a Promise
   * of [{linear, ip, bytes, text}]. */
  disassemble(linear = null, count = 16) {
    return this._inspect("disassemble", { linear, count });
  }

  /** The page-table walk of linear address `linear`, step by step (a Promise). */
  translate(linear) {
    return this._inspect("translate", { linear });
  }

  /** `length` bytes of guest memory from linear address `linear` (a Promise of an array of
   * numbers, null where a byte cannot be read: not present, device memory). */
  readMemory(linear, length) {
    return this._inspect("readMemory", { linear, length });
  }

  /** A step paused the machine: mirror that here at once. */
  _afterStep(result) {
    if (this._state === "running") this._setState("paused");
    return result;
  }

  /** Ask the worker's machine inspector `op` (see worker.js's protocol). */
  _inspect(op, args) {
    if (!this._running()) {
      return Promise.reject(new Error(`there is no running machine to inspect (it is ${this._state})`));
    }
    return this._request({ type: "inspect", op, args: args || {} });
  }

  /** Replace the machine by the one saved in `state` (an ArrayBuffer, typed array, Blob, File or
   * URL), with this machine's disk images (they must be the ones it was saved with). Returns
   * `ready`, which rejects with the reason a bad state is refused. */
  restoreState(state) {
    return this.restart({ state });
  }

  /** Resolves when the machine is running; rejects with the Error shown on the page. */
  get ready() {
    return this._ready;
  }

  /** The error message, or null. */
  error() {
    return this._error;
  }

  // ---- more for the page and the widget ----

  get state() {
    return this._state;
  }

  /** Progress of every file: [{label, name, loaded, total, streamed, done}]. */
  files() {
    return [...this._files.values()];
  }

  /** Warnings and notes from the machine so far (strings). */
  messages() {
    return this._messages.slice();
  }

  key(code, pressed) {
    this._send({ type: "key", code, pressed: !!pressed });
  }

  mouse(dx, dy, dz, buttons) {
    this._send({ type: "mouse", dx, dy, dz, buttons });
  }

  /** Whether the worker should produce frames (off for a terminal-only widget). */
  setFrames(on) {
    this._framesOn = !!on;
    this._send({ type: "frames", on: this._framesOn });
  }

  /** Stop the machine and start a new one with changed options (e.g. a dropped disk image). A
   * change of what boots (a kernel, a disk, ...) without a state boots afresh. */
  restart(changes = {}) {
    if (this._fatal) return this._ready;
    this._terminate();
    const boots = BOOT_OPTIONS.some((name) => name in changes);
    this.options = { ...this.options, ...(boots && !("state" in changes) ? { state: null } : {}), ...changes };
    this._clear();
    this.dispatchEvent(new CustomEvent("restart"));
    this._setState("idle");
    return this.start();
  }

  /** Stop the machine for good and free its worker. */
  destroy() {
    this._terminate();
  }

  // ---- internals ----

  /** Whether there is a machine to save or record (running or paused). */
  _running() {
    return !(!this._worker || this._state === "error" || this._state === "idle" || this._state === "loading");
  }

  /** Send `msg` with a fresh id; a Promise of the worker's answer's buffer. */
  _request(msg) {
    const id = this._nextRequest++;
    return new Promise((resolve, reject) => {
      this._requests.set(id, { resolve, reject });
      this._send({ ...msg, id });
    });
  }

  _send(msg, transfer) {
    if (this._worker) this._worker.postMessage(msg, transfer || []);
  }

  _terminate() {
    if (this._worker) {
      this._worker.terminate();
      this._worker = null;
    }
    clearInterval(this._watchdog);
    for (const { reject } of this._requests.values()) reject(new Error("the machine was stopped before it answered"));
    this._requests.clear();
  }

  _spawn() {
    let worker;
    try {
      worker = new Worker(WORKER_URL, { type: "module" });
    } catch (err) {
      this._fail(`Could not start the emulator's worker (${WORKER_URL}): ${err.message}`);
      return;
    }
    this._worker = worker;
    worker.onmessage = (e) => {
      this._heardAt = performance.now();
      this._onMessage(e.data);
    };
    // An uncaught exception in the worker, or worker.js failing to load: without this the machine
    // would just stop.
    worker.onerror = (e) => {
      e.preventDefault();
      const what = e.message || `could not load ${WORKER_URL} (missing file or a syntax error)`;
      this._fail(`The emulator's worker failed: ${what}`);
      this._terminate();
    };
    worker.onmessageerror = () => this._fail("The emulator's worker sent a message that could not be read.");
    const { kernel, initrd, append, memory, hda, hdb, cdrom, fda, jit, jitThreshold, state } = this.options;
    const { firmware, bios, vgaBios, boot, bootMenu } = this.options;
    worker.postMessage({
      type: "start",
      options: {
        pkgUrl: PKG_URL,
        kernel,
        initrd,
        append,
        memory,
        hda,
        hdb,
        cdrom,
        fda,
        // Through the BIOS: the ROMs and the boot order (no kernel is loaded).
        firmware: firmware ? { bios, vgaBios, boot, bootMenu } : null,
        jit,
        jitThreshold,
        state,
        // The bundled state may be missing from a site copied without it: then boot.
        stateIsDefault: state === DEFAULT_STATE,
        paused: this._wantPaused,
      },
    });
    if (!this._framesOn) worker.postMessage({ type: "frames", on: false });
    this._setState("loading");
    // A worker can die without an error event (the browser killed it for memory). A running
    // worker posts stats several times a second; the check only runs while the tab is visible,
    // since a background tab's timers (and workers) may be held back.
    this._heardAt = performance.now();
    const onVisible = () => {
      if (document.visibilityState === "visible") this._heardAt = performance.now();
    };
    document.addEventListener("visibilitychange", onVisible);
    this._watchdog = setInterval(() => {
      if (!this._worker) {
        clearInterval(this._watchdog);
        document.removeEventListener("visibilitychange", onVisible);
        return;
      }
      if (
        this._state === "running" &&
        document.visibilityState === "visible" &&
        performance.now() - this._heardAt > WATCHDOG_MS
      ) {
        this._fail(
          `The emulator has not answered for ${WATCHDOG_MS / 1000} s: its worker crashed or ran ` +
            "out of memory. Press Reset to start a new machine."
        );
        this._terminate();
      }
    }, 1000);
  }

  _onMessage(msg) {
    switch (msg.type) {
      case "state":
        // A pause/resume asked for locally is already mirrored; the worker's word is final.
        this._setState(msg.state);
        break;
      case "started":
        if (!this._readySettled) {
          this._readySettled = true;
          this._resolveReady(this);
        }
        break;
      case "boot":
        this._emit("boot", {});
        break;
      case "restored":
        this._emit("restored", {});
        break;
      case "breakpoint":
        // The worker paused before the instruction; its "state" message says so too.
        this._emit("breakpoint", { breakpoint: msg.breakpoint, registers: msg.registers });
        break;
      case "saved":
      case "recorded":
      case "inspected": {
        const waiting = this._requests.get(msg.id);
        this._requests.delete(msg.id);
        if (waiting && msg.error) waiting.reject(new Error(msg.error));
        else if (waiting) waiting.resolve(msg.type === "inspected" ? msg.result : msg.buffer);
        break;
      }
      case "progress":
        this._files.set(msg.file.label, msg.file);
        this._emit("progress", msg.file);
        break;
      case "message":
        this._messages.push(msg.text);
        this._emit("message", { text: msg.text });
        break;
      case "error":
        this._fail(msg.message);
        break;
      case "update":
        if (msg.serial) {
          // One "serial" event per run() slice that wrote bytes, with the guest's retired-
          // instruction counts at that slice's start and end: the bytes were written in between.
          const marks = msg.serialInstructions || [[msg.serial.length, null, null]];
          let at = 0;
          for (const [end, before, after] of marks) {
            const bytes = msg.serial.subarray(at, end);
            at = end;
            const text = this._decoder.decode(bytes, { stream: true });
            this._serial += text;
            if (this._serial.length > SERIAL_KEEP) this._serial = this._serial.slice(-SERIAL_KEEP / 2);
            this._emit("serial", { bytes, text, instructions: after, instructionsBefore: before });
          }
        }
        if (msg.screenText !== undefined) {
          this._screen = msg.screenText;
          this._emit("screentext", { text: msg.screenText });
        }
        if (msg.stats) {
          this._stats = msg.stats;
          this._emit("stats", this.stats());
        }
        break;
      case "frame":
        this._pendingFrame = msg;
        this._scheduleFrame();
        break;
    }
  }

  /** Hand the newest frame to listeners at the next animation frame, then ask for another. Frames
   * wait for the display (and stop in a background tab, where animation frames do not run). */
  _scheduleFrame() {
    if (this._frameScheduled) return;
    this._frameScheduled = true;
    requestAnimationFrame(() => {
      this._frameScheduled = false;
      const f = this._pendingFrame;
      this._pendingFrame = null;
      if (!f) return;
      this._emit("frame", { width: f.width, height: f.height, data: new Uint8ClampedArray(f.buffer) });
      this._send({ type: "frameDone" });
    });
  }

  _setState(s) {
    if (this._state === s) return;
    // An error is final until restart().
    if (this._state === "error" && s !== "idle") return;
    this._state = s;
    this._emit("state", { state: s });
  }

  _fail(message) {
    if (this._error === null) this._error = message;
    this._setState("error");
    if (!this._readySettled) {
      this._readySettled = true;
      this._rejectReady(new Error(message));
    }
    this._emit("error", { message });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
