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

import { ToWorker, FromWorker, InspectOp } from "./protocol.js";

/**
 * @typedef {import("./protocol.js").MachineState} MachineState
 * @typedef {import("./protocol.js").Stats} Stats
 * @typedef {import("./protocol.js").WorkerStats} WorkerStats
 * @typedef {import("./protocol.js").FileProgress} FileProgress
 * @typedef {import("./protocol.js").Breakpoint} Breakpoint
 * @typedef {import("./protocol.js").Registers} Registers
 * @typedef {import("./protocol.js").Counters} Counters
 * @typedef {import("./protocol.js").DisassemblyLine} DisassemblyLine
 * @typedef {import("./protocol.js").Walk} Walk
 * @typedef {import("./protocol.js").StepResult} StepResult
 * @typedef {import("./protocol.js").InspectArgs} InspectArgs
 * @typedef {import("./protocol.js").InspectResults} InspectResults
 * @typedef {import("./protocol.js").InspectOpName} InspectOpName
 * @typedef {import("./protocol.js").ToWorkerMessage} ToWorkerMessage
 * @typedef {import("./protocol.js").FromWorkerMessage} FromWorkerMessage
 * @typedef {import("./protocol.js").FrameMessage} FrameMessage
 */

/**
 * A disk image: a URL (streamed with HTTP Range requests; a floppy is downloaded whole), or a
 * File or Blob the user chose (read whole).
 * @typedef {string | Blob} DiskSource
 */

/**
 * A saved machine (a state file): a URL, a File or Blob, or its bytes.
 * @typedef {string | Blob | ArrayBuffer | ArrayBufferView} StateSource
 */

/**
 * The options a MachineController (and resolveOptions) takes. Every one is optional; strings
 * are taken as they come from a query string or an element's attributes ("" or "none": no such
 * file). URLs are relative to `base`.
 * @typedef {object} MachineOptions
 * @property {string} [images] the folder with the bundled images (bzImage, initramfs.cpio.gz,
 *   linux.state, firmware/): the defaults of kernel, initrd, state, bios and vgaBios are found
 *   there. Default: `images/` next to wasm86.js
 * @property {string | null} [kernel] a bzImage
 * @property {string | null} [initrd] an initramfs ("" or "none": none)
 * @property {string | null} [append] the kernel command line
 * @property {number | string | null} [memory] guest RAM in MiB (default 64)
 * @property {DiskSource | null} [hda] the first hard disk
 * @property {DiskSource | null} [hdb] the second hard disk
 * @property {DiskSource | null} [cdrom] a CD-ROM image
 * @property {DiskSource | null} [fda] a floppy image (360 KB to 2.88 MB, downloaded whole)
 * @property {string | null} [boot] boot through the BIOS in this order: a floppy, c hard disk,
 *   d CD (default "cad")
 * @property {number | string | null} [bootMenu] milliseconds SeaBIOS offers its boot menu for
 * @property {number | string | null} [bootmenu] the same (the attribute's spelling)
 * @property {string | null} [bios] the BIOS ROM (default SeaBIOS from the images folder)
 * @property {string | null} [vgaBios] the VGA BIOS ROM ("none": none)
 * @property {string | null} [vgabios] the same (the attribute's spelling)
 * @property {boolean} [firmware] boot through the BIOS (decided from the other options if absent)
 * @property {StateSource | null} [state] a saved machine to start from instead of booting
 *   ("none": boot). Without it, and without any option that chooses what boots, the machine
 *   starts from the bundled Linux saved at its prompt (`linux.state` in the images folder)
 * @property {boolean | number | string | null} [jit] the compiling tier: on by default; 0/false/off
 * @property {number | string | null} [jitThreshold] compile a block once it has started this often
 * @property {number | string | null} [diskCache] MiB of fetched chunks each streamed disk keeps in
 *   memory (default 256); beyond it the least recently read are dropped and fetched again
 * @property {string} [base] the URL relative URLs are resolved against (default: the page's)
 */

/**
 * Options after resolveOptions: URLs absolute, numbers numbers, what boots decided.
 * @typedef {object} ResolvedOptions
 * @property {string} images the images folder (absolute, ends with "/")
 * @property {string} kernel
 * @property {string | null} initrd
 * @property {string} append
 * @property {number} memory
 * @property {DiskSource | null} hda
 * @property {DiskSource | null} hdb
 * @property {DiskSource | null} cdrom
 * @property {DiskSource | null} fda
 * @property {string | null} boot
 * @property {number | null} bootMenu
 * @property {string} bios
 * @property {string | null} vgaBios
 * @property {boolean} firmware
 * @property {StateSource | null} state
 * @property {boolean} jit
 * @property {number | null} jitThreshold
 * @property {number | null} diskCache
 */

/**
 * `detail` of the "serial" event: the guest wrote `bytes` to COM1 while its retired-instruction
 * count went from `instructionsBefore` to `instructions` (one run() slice, ~1-2 ms of guest work).
 * @typedef {object} SerialDetail
 * @property {Uint8Array} bytes
 * @property {string} text the bytes decoded as UTF-8 (a character split between two events
 *   comes with the second)
 * @property {number | null} instructions
 * @property {number | null} instructionsBefore
 */

/**
 * `detail` of the "frame" event: the screen as RGBA pixels.
 * @typedef {object} FrameDetail
 * @property {number} width
 * @property {number} height
 * @property {Uint8ClampedArray} data
 */

/**
 * The events of a MachineController, each a CustomEvent with this `detail`.
 * @typedef {object} MachineEventMap
 * @property {CustomEvent<{state: MachineState}>} state the state changed
 * @property {CustomEvent<SerialDetail>} serial the guest wrote to COM1
 * @property {CustomEvent<FrameDetail>} frame a new screen frame (at an animation frame)
 * @property {CustomEvent<{text: string}>} screentext the VGA text screen changed
 * @property {CustomEvent<Stats>} stats new counts (several times a second)
 * @property {CustomEvent<FileProgress>} progress a file's download progress
 * @property {CustomEvent<{text: string}>} message a warning or note for the user
 * @property {CustomEvent<{message: string}>} error the machine stopped on an error
 * @property {CustomEvent<{}>} boot the kernel (or the BIOS) was loaded: start, reset, reboot
 * @property {CustomEvent<{}>} restored the machine started from a saved state instead
 * @property {CustomEvent<null>} start start() is starting a machine (its worker is created
 *   right after the listeners ran): views that are built on demand build themselves here
 * @property {CustomEvent<null>} restart a new machine replaces the old one: mirrors were cleared
 * @property {CustomEvent<{breakpoint: Breakpoint, registers: Registers}>} breakpoint the machine
 *   paused before an instruction a breakpoint names
 */

const here = import.meta.url;

/** setBreakpoint's argument as the worker takes it: a linear address, or {port}.
 * @param {number | {port: number}} at
 * @returns {Breakpoint} */
function breakpointArgs(at) {
  if (at && typeof at === "object" && "port" in at) return { kind: "port", at: at.port };
  return { kind: "linear", at: /** @type {number} */ (at) };
}

/** The bundled images' folder by default: `images/` next to this module (the static site's
 * layout; an npm install gives the `images` option instead). */
export const DEFAULT_IMAGES = new URL("images/", here).href;

/**
 * The files the defaults name in an images folder.
 * @param {string} [images] the folder's URL (absolute)
 */
export function imageFiles(images = DEFAULT_IMAGES) {
  /** @param {string} name */
  const at = (name) => new URL(name, images).href;
  return {
    kernel: at("bzImage"),
    initrd: at("initramfs.cpio.gz"),
    state: at("linux.state"),
    bios: at("firmware/bios-256k.bin"),
    vgaBios: at("firmware/vgabios-stdvga.bin"),
  };
}

/** Default options (contract 5): the bundled Linux, in the default images folder.
 * @type {Readonly<ResolvedOptions>} */
export const DEFAULTS = Object.freeze({
  images: DEFAULT_IMAGES,
  kernel: imageFiles().kernel,
  initrd: imageFiles().initrd,
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
  bios: imageFiles().bios,
  vgaBios: imageFiles().vgaBios,
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
  // MiB of fetched chunks each streamed disk keeps (`disk-cache=N`); null: the core's default,
  // 256 MiB. Beyond it the least recently read chunks are dropped (and fetched again if read
  // again), so a disk larger than memory can be read whole.
  diskCache: null,
});

/** The bundled Linux saved at its shell prompt with the default options (`make site` makes it). */
export const DEFAULT_STATE = imageFiles().state;

/** The options that choose what boots: giving any of them boots instead of restoring the
 * default state (that state was saved with the defaults, and with no disks). */
const BOOT_OPTIONS = /** @type {const} */ (["kernel", "initrd", "append", "memory", "hda", "hdb", "cdrom", "fda", "boot", "bios", "vgaBios", "bootMenu"]);
/** The options that boot a kernel directly (without them, drives boot through the BIOS). */
const KERNEL_OPTIONS = /** @type {const} */ (["kernel", "initrd", "append"]);
/** The options that choose firmware and so a boot through the BIOS. */
const FIRMWARE_OPTIONS = /** @type {const} */ (["boot", "bios", "vgaBios", "bootMenu"]);

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
 * @param {MachineOptions & {"jit-threshold"?: number | string | null, "disk-cache"?: number | string | null}} given
 * @param {string} [base]
 * @returns {ResolvedOptions}
 */
export function resolveOptions(given, base = document.baseURI) {
  /** @param {string} name @param {string} v */
  const url = (name, v) => {
    try {
      return new URL(v, base).href;
    } catch {
      throw new Error(`${name}=${v} is not a valid URL`);
    }
  };
  // The images folder first: the defaults of the files are in it.
  let images = DEFAULT_IMAGES;
  if (given.images !== undefined && given.images !== null && given.images !== "") {
    images = url("images", given.images);
    if (!images.endsWith("/")) images += "/";
  }
  const files = imageFiles(images);
  /** @type {ResolvedOptions} */
  const out = { ...DEFAULTS, images, kernel: files.kernel, initrd: files.initrd, bios: files.bios, vgaBios: files.vgaBios };
  if (given.vgaBios === undefined && given.vgabios !== undefined) given = { ...given, vgaBios: given.vgabios };
  if (given.bootMenu === undefined && given.bootmenu !== undefined) given = { ...given, bootMenu: given.bootmenu };
  // The boot files are URLs; "" or "none" (or null, from options resolved before) mean no such
  // file, except for the kernel and the BIOS, which are needed: then the default.
  for (const name of /** @type {const} */ (["kernel", "initrd", "bios", "vgaBios"])) {
    const v = given[name];
    if (v === undefined) continue;
    if (v === null || v === "" || v === "none") {
      if (name === "kernel" || name === "bios") out[name] = files[name];
      else out[name] = null;
    } else if (typeof v !== "string") {
      throw new Error(`${name} must be a URL`);
    } else {
      out[name] = url(name, v);
    }
  }
  // Disks: URLs, or a File or Blob.
  for (const name of /** @type {const} */ (["hda", "hdb", "cdrom", "fda"])) {
    const v = given[name];
    if (v === undefined) continue;
    if (v === null || v === "" || v === "none") out[name] = null;
    else if (typeof v !== "string") out[name] = v;
    else out[name] = url(name, v);
  }
  const state = given.state;
  if (state !== undefined) {
    if (state === null || state === "" || state === "none") out.state = null;
    else if (typeof state !== "string") out.state = state; // a File, Blob or bytes
    else out.state = url("state", state);
  } else if (!BOOT_OPTIONS.some((name) => given[name] !== undefined)) {
    out.state = files.state;
  }
  if (given.append !== undefined && given.append !== null) out.append = String(given.append);
  /** @param {keyof MachineOptions} name */
  const set = (name) => given[name] !== undefined && given[name] !== null && given[name] !== "";
  const drive = [out.hda, out.hdb, out.cdrom, out.fda].some((d) => d);
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
  const cache = given.diskCache ?? given["disk-cache"];
  if (cache !== undefined && cache !== null && cache !== "") {
    const n = Number(cache);
    if (!Number.isInteger(n) || n < 1 || n > 1 << 20) {
      throw new Error(`disk-cache=${cache} is not a whole number of MiB from 1 (for example disk-cache=64)`);
    }
    out.diskCache = n;
  }
  return out;
}

/** The query-string and attribute names of the options (the attributes of <wasm86-machine>). */
export const OPTION_NAMES = Object.freeze(["images", "kernel", "initrd", "append", "hda", "hdb", "cdrom", "fda", "boot", "bios", "vgabios", "bootmenu", "memory", "jit", "jit-threshold", "disk-cache", "state"]);

/** Options from the page's query string: images kernel initrd append hda hdb cdrom fda boot
 * bios vgabios bootmenu memory jit jit-threshold disk-cache state.
 * @returns {ResolvedOptions} */
export function optionsFromQuery(search = location.search, base = location.href) {
  const q = new URLSearchParams(search);
  /** @type {Record<string, string>} */
  const given = {};
  for (const name of OPTION_NAMES) {
    const v = q.get(name);
    if (v !== null) given[name] = v;
  }
  return resolveOptions(given, base);
}

/** 1536 -> "1.5 KiB".
 * @param {number} n */
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

/** 1234567 -> "1.23 M".
 * @param {number} n */
export function formatCount(n) {
  if (n < 1e3) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} M`;
  return `${(n / 1e9).toFixed(2)} G`;
}

/**
 * One emulated PC, run by a Web Worker. Events (all CustomEvent, see MachineEventMap): "state",
 * "serial" ({bytes, text, instructions, instructionsBefore}: the guest wrote these bytes to COM1
 * while its retired-instruction count went from instructionsBefore to instructions, one run()
 * slice of ~1-2 ms), "frame" ({width, height, data: Uint8ClampedArray}), "screentext",
 * "stats", "progress", "message" ({text}), "error" ({message}), "boot" (the kernel was loaded:
 * first start, reset, guest reboot), "restored" (the machine started from a saved state
 * instead), "start" (start() is starting a machine: on-demand views build themselves),
 * "restart" (a new machine replaces the old one: mirrors were cleared), "breakpoint"
 * ({breakpoint: {kind, at}, registers}: the machine paused before an instruction a breakpoint
 * names).
 *
 * Its lifetime: created idle; start() creates the worker; destroy() terminates it and removes
 * everything the controller added to the page (a listener, a timer), for good.
 */
export class MachineController extends EventTarget {
  /** The options the next start() or restart() uses (resolved: see resolveOptions). Changing
   * them does not affect a machine that runs.
   * @type {ResolvedOptions} */
  options;

  /** @type {Worker | null} */
  #worker = null;
  #wantPaused = false;
  #framesOn = true;
  /** Save, record and inspector requests waiting for the worker's answer, by id.
   * @type {Map<number, {resolve: (value: any) => void, reject: (err: Error) => void}>} */
  #requests = new Map();
  #nextRequest = 1;
  /** A controller that never runs (made by failed()). */
  #fatal = false;
  /** destroy() was called. */
  #destroyed = false;
  // The mirrors (cleared by #clear() for each new machine).
  /** @type {MachineState} */
  #state = "idle";
  /** @type {string | null} */
  #error = null;
  #serial = "";
  #decoder = new TextDecoder("utf-8");
  #screen = "";
  /** @type {WorkerStats} */
  #stats = { instructions: 0, mips: 0, downloadedBytes: 0, memoryBytes: 0, diskCacheBytes: 0, jit: null };
  /** @type {Map<string, FileProgress>} */
  #files = new Map();
  /** @type {string[]} */
  #messages = [];
  /** @type {FrameMessage | null} */
  #pendingFrame = null;
  /** The animation frame that hands #pendingFrame on (0: none). */
  #frameRequest = 0;
  #heardAt = 0;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #watchdog = undefined;
  /** The watchdog's document "visibilitychange" listener, while a worker runs.
   * @type {(() => void) | null} */
  #onVisible = null;
  /** @type {Promise<MachineController>} */
  #ready = Promise.resolve(this);
  /** @type {(c: MachineController) => void} */
  #resolveReady = () => {};
  /** @type {(err: Error) => void} */
  #rejectReady = () => {};
  #readySettled = false;

  /** @param {MachineOptions} [options] */
  constructor(options = {}) {
    super();
    this.options = resolveOptions(options, options.base || document.baseURI);
    this.#clear();
  }

  #clear() {
    this.#state = "idle";
    this.#error = null;
    this.#serial = "";
    this.#decoder = new TextDecoder("utf-8");
    this.#screen = "";
    this.#stats = { instructions: 0, mips: 0, downloadedBytes: 0, memoryBytes: 0, diskCacheBytes: 0, jit: null };
    this.#files = new Map();
    this.#messages = [];
    this.#pendingFrame = null;
    this.#heardAt = performance.now();
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Nobody may be waiting on `ready`; the error is shown on the page anyway.
    this.#ready.catch(() => {});
    this.#readySettled = false;
  }

  /** A controller that never runs, in the error state (e.g. the page's options were invalid), so
   * the automation API still exists and says what went wrong.
   * @param {string} message */
  static failed(message) {
    const c = new MachineController({});
    c.#fatal = true;
    c.#fail(message);
    return c;
  }

  // ---- typed events ----

  /**
   * @template {keyof MachineEventMap} K
   * @overload
   * @param {K} type
   * @param {(this: MachineController, ev: MachineEventMap[K]) => any} listener
   * @param {boolean | AddEventListenerOptions} [options]
   * @returns {void}
   */
  /**
   * @overload
   * @param {string} type
   * @param {EventListenerOrEventListenerObject | null} listener
   * @param {boolean | AddEventListenerOptions} [options]
   * @returns {void}
   */
  /**
   * @param {string} type
   * @param {any} listener
   * @param {boolean | AddEventListenerOptions} [options]
   */
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
  }

  /**
   * @template {keyof MachineEventMap} K
   * @overload
   * @param {K} type
   * @param {(this: MachineController, ev: MachineEventMap[K]) => any} listener
   * @param {boolean | EventListenerOptions} [options]
   * @returns {void}
   */
  /**
   * @overload
   * @param {string} type
   * @param {EventListenerOrEventListenerObject | null} listener
   * @param {boolean | EventListenerOptions} [options]
   * @returns {void}
   */
  /**
   * @param {string} type
   * @param {any} listener
   * @param {boolean | EventListenerOptions} [options]
   */
  removeEventListener(type, listener, options) {
    super.removeEventListener(type, listener, options);
  }

  // ---- automation API (contract 5) ----

  /** Everything the guest wrote to COM1 (the newest 4 Mi characters). */
  serialText() {
    return this.#serial;
  }

  /** The VGA text screen, rows joined by "\n" ("" in graphics mode or before the first frame). */
  screenText() {
    return this.#screen;
  }

  /** Send text to the guest's COM1 (UTF-8), or bytes.
   * @param {string | ArrayLike<number> | ArrayBuffer} text */
  sendSerial(text) {
    const bytes = typeof text === "string" ? new TextEncoder().encode(text) : new Uint8Array(text);
    this.#send({ type: ToWorker.SERIAL, bytes }, [bytes.buffer]);
  }

  /** Type text on the PS/2 keyboard (US layout; "\n" is Enter).
   * @param {string} text */
  typeText(text) {
    this.#send({ type: ToWorker.TYPE, text: String(text) });
  }

  /** The counts and the state (mips is 0 unless the machine runs).
   * @returns {Stats} */
  stats() {
    const running = this.#state === "running";
    return { ...this.#stats, mips: running ? this.#stats.mips : 0, state: this.#state };
  }

  pause() {
    this.#wantPaused = true;
    if (this.#state === "running") this.#setState("paused");
    this.#send({ type: ToWorker.PAUSE });
  }

  resume() {
    this.#wantPaused = false;
    if (this.#state === "paused") this.#setState("running");
    this.#send({ type: ToWorker.RESUME });
  }

  /** Reset the guest (boots the kernel again). After an error, starts a fresh machine. */
  reset() {
    if (this.#state === "error") {
      this.restart();
    } else if (this.#worker) {
      this.#send({ type: ToWorker.RESET });
    }
  }

  /** Start now (idempotent): fires "start", then creates the worker. Returns `ready`.
   * @returns {Promise<MachineController>} */
  start() {
    if (this.#destroyed) return Promise.reject(new Error("this machine was destroyed (destroy())"));
    if (!this.#worker && !this.#fatal) {
      this.dispatchEvent(new CustomEvent("start", { detail: null }));
      // A "start" listener may have started it already (start() from a listener).
      if (!this.#worker && !this.#destroyed) this.#spawn();
    }
    return this.#ready;
  }

  /** Whether a machine was started and has not stopped for good: a worker exists. Until then,
   * changing `options` changes what start() runs. */
  get started() {
    return this.#worker !== null;
  }

  /** The whole machine as a state file (a Promise of an ArrayBuffer): registers, devices, RAM,
   * the screen and the guest's changes to its disks (not the disk images themselves). Rejects
   * when there is no running machine.
   * @returns {Promise<ArrayBuffer>} */
  saveState() {
    if (!this.#running()) {
      return Promise.reject(new Error(`there is no running machine to save (it is ${this.#state})`));
    }
    return this.#request({ type: ToWorker.SAVE, id: 0 });
  }

  /** Start recording the run from here (a Promise, resolved once it runs): the machine as it is
   * and every input from now on, for `wasm86 --replay FILE` to repeat exactly. A reboot or a
   * disc change ends the recording (a replay cannot load the kernel or the disc again).
   * @returns {Promise<void>} */
  startRecording() {
    if (!this.#running()) {
      return Promise.reject(new Error(`there is no running machine to record (it is ${this.#state})`));
    }
    return this.#request({ type: ToWorker.RECORD, id: 0, on: true }).then(() => undefined);
  }

  /** End the recording: a Promise of the recording file (an ArrayBuffer), or of null if none was
   * started.
   * @returns {Promise<ArrayBuffer | null>} */
  stopRecording() {
    if (!this.#running()) {
      return Promise.reject(new Error(`there is no running machine (it is ${this.#state})`));
    }
    return this.#request({ type: ToWorker.RECORD, id: 0, on: false }).then((buffer) => buffer || null);
  }

  /** The machine's event counters since `resetCounters()` or power-on (a Promise; see the
   * automation API at the top of this file). Rejects when there is no running machine.
   * @returns {Promise<Counters>} */
  counters() {
    return this.#inspect(InspectOp.COUNTERS, {});
  }

  /** Zero the event counters (a Promise, resolved once done).
   * @returns {Promise<void>} */
  resetCounters() {
    return this.#inspect(InspectOp.RESET_COUNTERS, {}).then(() => undefined);
  }

  /** The CPU's registers (a Promise; see the automation API at the top of this file).
   * @returns {Promise<Registers>} */
  registers() {
    return this.#inspect(InspectOp.REGISTERS, {});
  }

  /** Pause and run `n` instructions (default 1): a Promise of {stopped, registers}.
   * @returns {Promise<StepResult>} */
  step(n = 1) {
    return this.#inspect(InspectOp.STEP, { count: n }).then((r) => this.#afterStep(r));
  }

  /** Pause and step over the instruction at EIP (a CALL, INT, REP string instruction or LOOP
   * runs to the next instruction): a Promise of {stopped, registers}.
   * @returns {Promise<StepResult>} */
  stepOver() {
    return this.#inspect(InspectOp.STEP_OVER, {}).then((r) => this.#afterStep(r));
  }

  /** Stop before the instruction at linear address `at` (a number), or before any instruction
   * that accesses I/O port `at.port`. A Promise of the breakpoints now set.
   * @param {number | {port: number}} at
   * @returns {Promise<Breakpoint[]>} */
  setBreakpoint(at) {
    return this.#inspect(InspectOp.ADD_BREAKPOINT, breakpointArgs(at));
  }

  /** Remove a breakpoint set with setBreakpoint(at). A Promise of the breakpoints left.
   * @param {number | {port: number}} at
   * @returns {Promise<Breakpoint[]>} */
  removeBreakpoint(at) {
    return this.#inspect(InspectOp.REMOVE_BREAKPOINT, breakpointArgs(at));
  }

  /** Remove every breakpoint (a Promise).
   * @returns {Promise<Breakpoint[]>} */
  clearBreakpoints() {
    return this.#inspect(InspectOp.CLEAR_BREAKPOINTS, {});
  }

  /** The breakpoints set: a Promise of [{kind: "linear"|"port", at}].
   * @returns {Promise<Breakpoint[]>} */
  breakpoints() {
    return this.#inspect(InspectOp.BREAKPOINTS, {});
  }

  /** `count` instructions from linear address `linear` (around EIP if it is null): a Promise
   * of [{linear, ip, bytes, text}].
   * @param {number | null} [linear]
   * @returns {Promise<DisassemblyLine[]>} */
  disassemble(linear = null, count = 16) {
    return this.#inspect(InspectOp.DISASSEMBLE, { linear, count });
  }

  /** The page-table walk of linear address `linear`, step by step (a Promise).
   * @param {number} linear
   * @returns {Promise<Walk>} */
  translate(linear) {
    return this.#inspect(InspectOp.TRANSLATE, { linear });
  }

  /** `length` bytes of guest memory from linear address `linear` (a Promise of an array of
   * numbers, null where a byte cannot be read: not present, device memory).
   * @param {number} linear
   * @param {number} length
   * @returns {Promise<(number | null)[]>} */
  readMemory(linear, length) {
    return this.#inspect(InspectOp.READ_MEMORY, { linear, length });
  }

  /** Replace the machine by the one saved in `state` (an ArrayBuffer, typed array, Blob, File or
   * URL), with this machine's disk images (they must be the ones it was saved with). Returns
   * `ready`, which rejects with the reason a bad state is refused.
   * @param {StateSource} state
   * @returns {Promise<MachineController>} */
  restoreState(state) {
    return this.restart({ state });
  }

  /** Resolves when the machine is running; rejects with the Error shown on the page.
   * @returns {Promise<MachineController>} */
  get ready() {
    return this.#ready;
  }

  /** The error message, or null.
   * @returns {string | null} */
  error() {
    return this.#error;
  }

  // ---- more for the page and the widget ----

  /** @returns {MachineState} */
  get state() {
    return this.#state;
  }

  /** Progress of every file: [{label, name, loaded, total, streamed, done}].
   * @returns {FileProgress[]} */
  files() {
    return [...this.#files.values()];
  }

  /** Warnings and notes from the machine so far (strings).
   * @returns {string[]} */
  messages() {
    return this.#messages.slice();
  }

  /** One key of the PS/2 keyboard down (true) or up, by its KeyboardEvent.code ("ArrowDown").
   * @param {string} code
   * @param {boolean} pressed */
  key(code, pressed) {
    this.#send({ type: ToWorker.KEY, code, pressed: !!pressed });
  }

  /** PS/2 mouse motion (dy positive: down; dz: the wheel) and buttons (bit 0 left, 1 right,
   * 2 middle).
   * @param {number} dx
   * @param {number} dy
   * @param {number} dz
   * @param {number} buttons */
  mouse(dx, dy, dz, buttons) {
    this.#send({ type: ToWorker.MOUSE, dx, dy, dz, buttons });
  }

  /** Whether the worker should produce frames (off for a terminal-only widget).
   * @param {boolean} on */
  setFrames(on) {
    this.#framesOn = !!on;
    this.#send({ type: ToWorker.FRAMES, on: this.#framesOn });
  }

  /** Stop the machine and start a new one with changed options (e.g. a dropped disk image). A
   * change of what boots (a kernel, a disk, ...) without a state boots afresh.
   * @param {Partial<ResolvedOptions>} [changes]
   * @returns {Promise<MachineController>} */
  restart(changes = {}) {
    if (this.#fatal || this.#destroyed) return this.#ready;
    this.#terminate();
    const boots = BOOT_OPTIONS.some((name) => name in changes);
    this.options = { ...this.options, ...(boots && !("state" in changes) ? { state: null } : {}), ...changes };
    this.#clear();
    this.dispatchEvent(new CustomEvent("restart", { detail: null }));
    this.#setState("idle");
    return this.start();
  }

  /** Stop the machine for good: terminate its worker, reject the requests still waiting, and
   * remove the listener and timers the controller added to the page. start() afterwards
   * rejects; the state goes back to "idle". */
  destroy() {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#terminate();
    if (!this.#readySettled) {
      this.#readySettled = true;
      this.#rejectReady(new Error("the machine was stopped (destroy())"));
    }
    this.#setState("idle");
  }

  // ---- internals ----

  /** Whether there is a machine to save or record (running or paused). */
  #running() {
    return !(!this.#worker || this.#state === "error" || this.#state === "idle" || this.#state === "loading");
  }

  /** A step paused the machine: mirror that here at once.
   * @param {StepResult} result */
  #afterStep(result) {
    if (this.#state === "running") this.#setState("paused");
    return result;
  }

  /**
   * Ask the worker's machine inspector `op` (see protocol.js).
   * @template {InspectOpName} K
   * @param {K} op
   * @param {InspectArgs[K]} args
   * @returns {Promise<InspectResults[K]>}
   */
  #inspect(op, args) {
    if (!this.#running()) {
      return Promise.reject(new Error(`there is no running machine to inspect (it is ${this.#state})`));
    }
    const msg = /** @type {import("./protocol.js").InspectMessage} */ ({ type: ToWorker.INSPECT, id: 0, op, args });
    return this.#request(msg);
  }

  /** Send `msg` with a fresh id; a Promise of the worker's answer (its buffer or result).
   * @param {import("./protocol.js").SaveMessage | import("./protocol.js").RecordMessage | import("./protocol.js").InspectMessage} msg
   * @returns {Promise<any>} */
  #request(msg) {
    const id = this.#nextRequest++;
    return new Promise((resolve, reject) => {
      this.#requests.set(id, { resolve, reject });
      this.#send({ ...msg, id });
    });
  }

  /** @param {ToWorkerMessage} msg
   * @param {Transferable[]} [transfer] */
  #send(msg, transfer) {
    if (this.#worker) this.#worker.postMessage(msg, transfer || []);
  }

  /** Stop the worker and everything that runs for it (the watchdog and its listener, a frame
   * waiting for the display, the requests waiting for answers). */
  #terminate() {
    if (this.#worker) {
      this.#worker.terminate();
      this.#worker = null;
    }
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    if (this.#onVisible) {
      document.removeEventListener("visibilitychange", this.#onVisible);
      this.#onVisible = null;
    }
    if (this.#frameRequest) {
      cancelAnimationFrame(this.#frameRequest);
      this.#frameRequest = 0;
    }
    this.#pendingFrame = null;
    for (const { reject } of this.#requests.values()) reject(new Error("the machine was stopped before it answered"));
    this.#requests.clear();
  }

  #spawn() {
    /** @type {Worker} */
    let worker;
    try {
      worker = new Worker(WORKER_URL, { type: "module" });
    } catch (err) {
      this.#fail(`Could not start the emulator's worker (${WORKER_URL}): ${err instanceof Error ? err.message : err}`);
      return;
    }
    this.#worker = worker;
    /** @param {MessageEvent<FromWorkerMessage>} e */
    worker.onmessage = (e) => {
      this.#heardAt = performance.now();
      this.#onMessage(e.data);
    };
    // An uncaught exception in the worker, or worker.js failing to load: without this the machine
    // would just stop.
    worker.onerror = (e) => {
      e.preventDefault();
      const what = e.message || `could not load ${WORKER_URL} (missing file or a syntax error)`;
      this.#fail(`The emulator's worker failed: ${what}`);
      this.#terminate();
    };
    worker.onmessageerror = () => this.#fail("The emulator's worker sent a message that could not be read.");
    const { kernel, initrd, append, memory, hda, hdb, cdrom, fda, jit, jitThreshold, diskCache, state } = this.options;
    const { firmware, bios, vgaBios, boot, bootMenu } = this.options;
    this.#send({
      type: ToWorker.START,
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
        firmware: firmware ? { bios, vgaBios, boot: boot || "cad", bootMenu } : null,
        jit,
        jitThreshold,
        diskCache,
        state,
        // The bundled state may be missing from a site copied without it: then boot.
        stateIsDefault: state === imageFiles(this.options.images).state,
        paused: this.#wantPaused,
      },
    });
    if (!this.#framesOn) this.#send({ type: ToWorker.FRAMES, on: false });
    this.#setState("loading");
    // A worker can die without an error event (the browser killed it for memory). A running
    // worker posts stats several times a second; the check only runs while the tab is visible,
    // since a background tab's timers (and workers) may be held back. The listener and the
    // timer live exactly as long as the worker: #terminate() removes both.
    this.#heardAt = performance.now();
    this.#onVisible = () => {
      if (document.visibilityState === "visible") this.#heardAt = performance.now();
    };
    document.addEventListener("visibilitychange", this.#onVisible);
    this.#watchdog = setInterval(() => {
      if (
        this.#state === "running" &&
        document.visibilityState === "visible" &&
        performance.now() - this.#heardAt > WATCHDOG_MS
      ) {
        this.#fail(
          `The emulator has not answered for ${WATCHDOG_MS / 1000} s: its worker crashed or ran ` +
            "out of memory. Press Reset to start a new machine."
        );
        this.#terminate();
      }
    }, 1000);
  }

  /** @param {FromWorkerMessage} msg */
  #onMessage(msg) {
    switch (msg.type) {
      case FromWorker.STATE:
        // A pause/resume asked for locally is already mirrored; the worker's word is final.
        this.#setState(msg.state);
        break;
      case FromWorker.STARTED:
        if (!this.#readySettled) {
          this.#readySettled = true;
          this.#resolveReady(this);
        }
        break;
      case FromWorker.BOOT:
        this.#emit("boot", {});
        break;
      case FromWorker.RESTORED:
        this.#emit("restored", {});
        break;
      case FromWorker.BREAKPOINT:
        // The worker paused before the instruction; its "state" message says so too.
        this.#emit("breakpoint", { breakpoint: msg.breakpoint, registers: msg.registers });
        break;
      case FromWorker.SAVED:
      case FromWorker.RECORDED:
      case FromWorker.INSPECTED: {
        const waiting = this.#requests.get(msg.id);
        this.#requests.delete(msg.id);
        if (waiting && msg.error) waiting.reject(new Error(msg.error));
        else if (waiting) waiting.resolve(msg.type === FromWorker.INSPECTED ? msg.result : msg.buffer);
        break;
      }
      case FromWorker.PROGRESS:
        this.#files.set(msg.file.label, msg.file);
        this.#emit("progress", msg.file);
        break;
      case FromWorker.MESSAGE:
        this.#messages.push(msg.text);
        this.#emit("message", { text: msg.text });
        break;
      case FromWorker.ERROR:
        this.#fail(msg.message);
        break;
      case FromWorker.UPDATE:
        if (msg.serial) {
          // One "serial" event per run() slice that wrote bytes, with the guest's retired-
          // instruction counts at that slice's start and end: the bytes were written in between.
          /** @type {[number, number | null, number | null][]} */
          const marks = msg.serialInstructions || [[msg.serial.length, null, null]];
          let at = 0;
          for (const [end, before, after] of marks) {
            const bytes = msg.serial.subarray(at, end);
            at = end;
            const text = this.#decoder.decode(bytes, { stream: true });
            this.#serial += text;
            if (this.#serial.length > SERIAL_KEEP) this.#serial = this.#serial.slice(-SERIAL_KEEP / 2);
            this.#emit("serial", { bytes, text, instructions: after, instructionsBefore: before });
          }
        }
        if (msg.screenText !== undefined) {
          this.#screen = msg.screenText;
          this.#emit("screentext", { text: msg.screenText });
        }
        if (msg.stats) {
          this.#stats = msg.stats;
          this.#emit("stats", this.stats());
        }
        break;
      case FromWorker.FRAME:
        this.#pendingFrame = msg;
        this.#scheduleFrame();
        break;
      default:
        // Every kind is handled above: a new one must be added here too.
        /** @type {never} */ (msg);
    }
  }

  /** Hand the newest frame to listeners at the next animation frame, then ask for another. Frames
   * wait for the display (and stop in a background tab, where animation frames do not run). */
  #scheduleFrame() {
    if (this.#frameRequest) return;
    this.#frameRequest = requestAnimationFrame(() => {
      this.#frameRequest = 0;
      const f = this.#pendingFrame;
      this.#pendingFrame = null;
      if (!f) return;
      this.#emit("frame", { width: f.width, height: f.height, data: new Uint8ClampedArray(f.buffer) });
      this.#send({ type: ToWorker.FRAME_DONE });
    });
  }

  /** @param {MachineState} s */
  #setState(s) {
    if (this.#state === s) return;
    // An error is final until restart() (or destroy()).
    if (this.#state === "error" && s !== "idle") return;
    this.#state = s;
    this.#emit("state", { state: s });
  }

  /** @param {string} message */
  #fail(message) {
    if (this.#error === null) this.#error = message;
    this.#setState("error");
    if (!this.#readySettled) {
      this.#readySettled = true;
      this.#rejectReady(new Error(message));
    }
    this.#emit("error", { message });
  }

  /**
   * @template {keyof MachineEventMap} K
   * @param {K} type
   * @param {MachineEventMap[K]["detail"]} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
