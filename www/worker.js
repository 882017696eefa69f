// One wasm86 machine, running in a dedicated module Worker so the page never blocks on the guest.
//
// The main thread (wasm86.js, MachineController) sends commands; this worker downloads the kernel
// and initrd (with progress), opens the disks, builds the `Machine` of the wasm API, and runs it in
// slices of about 8 ms of wall time, yielding to the event loop between slices so that messages
// from the page and the streamed disks' fetch() completions get handled. After each slice it posts
// what changed: serial bytes, the frame (transferred, at most ~30 fps, only when render() says it
// may have changed), the VGA text when it changed, stats, warnings and errors.
//
// The messages both ways, with every field, are in protocol.js (ToWorker, FromWorker), shared
// with the page's side and checked by `tsc --checkJs` (make tsc).

import { ToWorker, FromWorker, InspectOp } from "./protocol.js";

/**
 * @typedef {import("./protocol.js").ToWorkerMessage} ToWorkerMessage
 * @typedef {import("./protocol.js").FromWorkerMessage} FromWorkerMessage
 * @typedef {import("./protocol.js").InputMessage} InputMessage
 * @typedef {import("./protocol.js").StartOptions} StartOptions
 * @typedef {import("./protocol.js").MachineState} MachineState
 * @typedef {import("./protocol.js").FileProgress} FileProgress
 * @typedef {import("./protocol.js").InspectArgs} InspectArgs
 * @typedef {import("./protocol.js").InspectResults} InspectResults
 * @typedef {import("./protocol.js").InspectOpName} InspectOpName
 */

/**
 * The part of the emulator's wasm API (pkg/wasm86.js, wasm-bindgen's output, loaded at run time
 * from `options.pkgUrl`) that this worker uses: a disk, a machine, the module. `make package`
 * checks that wasm-bindgen's pkg/wasm86.d.ts fits these (package/test/consumer.ts). Methods,
 * not function properties, so that wasm-bindgen's classes, which have more members, fit.
 * @typedef {{
 *   bytes_fetched(): number,
 *   size(): number,
 *   streamed(): boolean,
 * }} WasmDisk
 */

/**
 * A machine of the wasm API (see WasmDisk).
 * @typedef {{
 *   add_breakpoint(kind: string, at: number): boolean,
 *   attach_disk(slot: number, disk: WasmDisk): void,
 *   breakpoint_hit(): string,
 *   breakpoints(): string,
 *   clear_breakpoints(): void,
 *   counters(): string,
 *   disassemble(linear: number | undefined, count: number): string,
 *   downloaded_bytes(): number,
 *   cached_disk_bytes(): number,
 *   framebuffer(): Uint8Array,
 *   height(): number,
 *   insert_cdrom(disk: WasmDisk): void,
 *   insert_floppy(disk: WasmDisk): void,
 *   instructions(): number,
 *   jit_stats(): any,
 *   key(code: string, pressed: boolean): boolean,
 *   load_linux(kernel: Uint8Array, initrd: Uint8Array | undefined, append: string): void,
 *   mouse(dx: number, dy: number, dz: number, buttons: number): void,
 *   read_memory(linear: number, length: number): string,
 *   registers(): string,
 *   remove_breakpoint(kind: string, at: number): boolean,
 *   render(): boolean,
 *   reset(): void,
 *   reset_counters(): void,
 *   run(hostNowMs: number, maxInstructions: number): string,
 *   save_state(): Uint8Array,
 *   screen_text(): string,
 *   send_serial(bytes: Uint8Array): void,
 *   serial_output(): Uint8Array,
 *   set_boot_menu(waitMs: number): void,
 *   set_jit(threshold: number): void,
 *   set_kernel(kernel: Uint8Array, initrd: Uint8Array | undefined, append: string): void,
 *   start_recording(): void,
 *   step(n: number): string,
 *   step_over(): string,
 *   stop_recording(): Uint8Array | undefined,
 *   take_messages(): string[],
 *   translate(linear: number): string,
 *   type_text(text: string): void,
 *   width(): number,
 * }} WasmMachine
 */

/**
 * The wasm module (see WasmDisk).
 * @typedef {object} WasmApi
 * @property {() => Promise<{memory: WebAssembly.Memory}>} default initialises the module (fetches
 *   the .wasm next to it); its exports
 * @property {{new (memoryMib: number): WasmMachine,
 *   fromState(state: Uint8Array, hda?: WasmDisk | null, hdb?: WasmDisk | null, cdrom?: WasmDisk | null): WasmMachine,
 *   with_firmware(memoryMib: number, bios: Uint8Array, vgaBios: Uint8Array | undefined, boot: string): WasmMachine}} Machine
 * @property {{from_bytes(name: string, bytes: Uint8Array): WasmDisk, open_url(url: string, maxCacheMib?: number): Promise<WasmDisk>}} Disk
 * @property {() => number} jit_default_threshold
 */

/**
 * This worker's global scope, as far as it is used here (the DOM's lib types `self` as a
 * Window): what it posts is a FromWorkerMessage, what it gets a ToWorkerMessage.
 * @type {{postMessage(msg: FromWorkerMessage, transfer: Transferable[]): void,
 *   onmessage: ((e: MessageEvent<ToWorkerMessage>) => void) | null}}
 */
const scope = /** @type {any} */ (self);

/** Wall time one turn may run the guest before yielding (ms). */
const TURN_MS = 8;
/** Wall time after which the first slice of a turn is re-sized (ms): one slice ~ 1-2 ms. */
const SLICE_TARGET_MS = 1.5;
/** Minimum time between two frames (ms): ~30 fps. */
const FRAME_INTERVAL_MS = 33;
/** Minimum time between two screen_text() reads (ms). */
const TEXT_INTERVAL_MS = 100;
/** How often stats are posted when nothing else is (ms). */
const STATS_INTERVAL_MS = 250;
/** A guest that resets this often within RESET_WINDOW_MS is stuck in a reset loop. */
const MAX_RESETS = 5;
const RESET_WINDOW_MS = 10_000;

/** @type {WasmApi | null} the pkg/wasm86.js module namespace */
let wasm = null;
/** @type {WebAssembly.Memory | null} the module's memory (its size is in the stats) */
let wasmMemory = null;
/** @type {WasmMachine | null} */
let machine = null;
let jitOn = false; // the compiling tier was turned on for this machine
/** @type {MachineState} */
let state = "idle";
let paused = false; // paused by the page (also while loading: commands are applied at start)
let crashed = false;

// Guest time. The core's real-time mode takes the host clock in ms; we give it the time since the
// machine was built minus the time spent paused, so a pause freezes the guest's clock instead of
// making it catch up. When the tab is in the background the browser may run this worker rarely:
// the core then forgives any lag over 5 s (MAX_CATCH_UP_NS) rather than replaying minutes of
// timer ticks, so the guest's clock simply falls behind by the time it did not get (it never
// jumps: no timer tick is lost).
let clockBase = 0;
let pausedAt = 0;
const hostNow = () => performance.now() - clockBase;

// Slice sizing and stats.
let sliceInstructions = 200_000;
let lastFrameAt = -Infinity;
let frameInFlight = false;
let framesOn = true;
let lastTextAt = -Infinity;
/** @type {string | null} */
let lastText = null;
let lastStatsAt = -Infinity;
/** @type {[number, number][]} [time ms, instructions] samples over the last ~second */
let mipsWindow = [];
let fileBytes = 0; // kernel + initrd bytes downloaded (disks are counted by the machine)
/** @type {number[]} */
let resetTimes = [];
// Serial output taken after every run() slice, each chunk with the retired-instruction counts at
// the slice's start and end (the guest wrote those bytes in between); posted by publish().
/** @type {{bytes: Uint8Array, from: number, to: number}[]} */
let serialChunks = [];

// Turn scheduling: a MessageChannel yields without the 4 ms clamp of nested setTimeout.
const channel = new MessageChannel();
let turnQueued = false;
/** @type {ReturnType<typeof setTimeout> | null} */
let sleepTimer = null;
channel.port1.onmessage = () => {
  turnQueued = false;
  turn();
};

// Input that arrives before the machine exists is applied once it does.
/** @type {InputMessage[]} */
const pendingInput = [];

/**
 * @param {FromWorkerMessage} msg
 * @param {Transferable[]} [transfer]
 */
const post = (msg, transfer) => scope.postMessage(msg, transfer || []);

/** The bytes' buffer, for a transfer list (the emulator's arrays are never shared memory).
 * @param {Uint8Array} bytes
 * @returns {ArrayBuffer} */
const bufferOf = (bytes) => /** @type {ArrayBuffer} */ (bytes.buffer);

/** An exception's message (or the thrown value as text).
 * @param {unknown} err */
function errorText(err) {
  const message = err && typeof err === "object" && "message" in err ? err.message : null;
  return message ? String(message) : String(err);
}

/** The wasm module, where the caller knows that it is loaded. */
function theApi() {
  if (!wasm) throw new Error("the emulator is not loaded yet");
  return wasm;
}

/** The machine, where the caller knows that it exists. */
function theMachine() {
  if (!machine) throw new Error("there is no machine yet");
  return machine;
}

/** @param {MachineState} s */
function setState(s) {
  if (state !== s) {
    state = s;
    post({ type: FromWorker.STATE, state: s });
  }
}

/** Stop for good with an error the page shows in plain words. */
/** @param {string} message */
function fail(message) {
  crashed = true;
  cancelTurns();
  // The message first, so the page never sees the "error" state without its text.
  post({ type: FromWorker.ERROR, message });
  setState("error");
}

scope.onmessage = (e) => {
  const msg = e.data;
  try {
    handle(msg);
  } catch (err) {
    fail(describeCrash(err));
  }
};

/** @param {ToWorkerMessage} msg */
function handle(msg) {
  switch (msg.type) {
    case ToWorker.START:
      start(msg.options).catch((err) => fail(err && err.message ? err.message : String(err)));
      break;
    case ToWorker.PAUSE:
      if (!paused) {
        paused = true;
        pausedAt = performance.now();
        cancelTurns();
        if (machine && !crashed) setState("paused");
      }
      break;
    case ToWorker.RESUME:
      if (paused) {
        paused = false;
        clockBase += performance.now() - pausedAt;
        if (machine && !crashed) {
          setState("running");
          scheduleTurn();
        }
      }
      break;
    case ToWorker.RESET:
      if (machine && !crashed) {
        publish(performance.now());
        // Resets the board and boots the loaded kernel again (disks stay, queued input is dropped).
        machine.reset();
        post({ type: FromWorker.BOOT });
        scheduleTurn();
      }
      break;
    case ToWorker.FRAME_DONE:
      frameInFlight = false;
      break;
    case ToWorker.SAVE:
      if (!machine || crashed) {
        post({ type: FromWorker.SAVED, id: msg.id, error: "there is no running machine to save" });
      } else {
        // Between turns: the machine is at an instruction boundary.
        const bytes = machine.save_state();
        post({ type: FromWorker.SAVED, id: msg.id, buffer: bufferOf(bytes) }, [bufferOf(bytes)]);
      }
      break;
    case ToWorker.RECORD:
      if (!machine || crashed) {
        post({ type: FromWorker.RECORDED, id: msg.id, error: "there is no running machine to record" });
      } else if (msg.on) {
        // Between turns: the recording starts at an instruction boundary.
        machine.start_recording();
        post({ type: FromWorker.RECORDED, id: msg.id, on: true });
      } else {
        const bytes = machine.stop_recording();
        if (bytes) post({ type: FromWorker.RECORDED, id: msg.id, on: false, buffer: bufferOf(bytes) }, [bufferOf(bytes)]);
        else post({ type: FromWorker.RECORDED, id: msg.id, on: false });
      }
      break;
    case ToWorker.INSPECT:
      // Between turns: the machine is at an instruction boundary.
      if (!machine || crashed) {
        post({ type: FromWorker.INSPECTED, id: msg.id, error: "there is no running machine to inspect" });
      } else {
        let result;
        try {
          result = inspect(msg.op, msg.args || {});
        } catch (err) {
          post({ type: FromWorker.INSPECTED, id: msg.id, error: errorText(err) });
          break;
        }
        post({ type: FromWorker.INSPECTED, id: msg.id, result });
      }
      break;
    case ToWorker.FRAMES:
      framesOn = !!msg.on;
      break;
    case ToWorker.SERIAL:
    case ToWorker.TYPE:
    case ToWorker.KEY:
    case ToWorker.MOUSE:
      if (machine && !crashed) {
        applyInput(msg);
        scheduleTurn();
      } else if (!crashed) {
        pendingInput.push(msg);
      }
      break;
  }
}

/** A linear address or port from the page: a whole number in range (else an error that says so). */
/**
 * @param {unknown} value
 * @param {string} what
 * @returns {number}
 */
function address(value, what, max = 0xffff_ffff) {
  const n = typeof value === "string" ? Number(value.trim()) : Number(value);
  if (!Number.isInteger(n) || n < 0 || n > max) {
    throw new Error(`${what} ${JSON.stringify(value)}: not a whole number from 0 to 0x${max.toString(16)}`);
  }
  return n;
}

/** After a step or a breakpoint: the machine pauses (the page resumes it), and the page sees
 * what the instructions did (serial output, the screen, the counts) at once. */
/** @param {string} why */
function pauseForInspector(why) {
  if (!paused) {
    paused = true;
    pausedAt = performance.now();
    cancelTurns();
    setState("paused");
  }
  const now = performance.now();
  lastTextAt = -Infinity;
  lastStatsAt = -Infinity;
  publish(now);
  if (why === "reset") post({ type: FromWorker.BOOT });
}

/** An inspector request (see the protocol above): the answer, as plain data. Stepping pauses
 * the machine first. */
/**
 * @template {InspectOpName} K
 * @param {K} op
 * @param {InspectArgs[K]} given
 * @returns {InspectResults[InspectOpName]}
 */
function inspect(op, given) {
  const machine = theMachine();
  // Each case reads the fields of its own op's arguments.
  const args = /** @type {any} */ (given);
  switch (/** @type {InspectOpName} */ (op)) {
    case InspectOp.COUNTERS:
      return JSON.parse(machine.counters());
    case InspectOp.RESET_COUNTERS:
      machine.reset_counters();
      return null;
    case InspectOp.REGISTERS:
      return JSON.parse(machine.registers());
    case InspectOp.DISASSEMBLE: {
      const at = args.linear == null ? undefined : address(args.linear, "address");
      return JSON.parse(machine.disassemble(at, Math.max(1, Math.min(256, Number(args.count) || 16))));
    }
    case InspectOp.TRANSLATE:
      return JSON.parse(machine.translate(address(args.linear, "address")));
    case InspectOp.READ_MEMORY:
      return JSON.parse(machine.read_memory(address(args.linear, "address"), Math.max(0, Math.min(4096, Number(args.length) || 0))));
    case InspectOp.STEP:
    case InspectOp.STEP_OVER: {
      const why = op === "step" ? machine.step(Math.max(1, Math.min(1e6, Number(args.count) || 1))) : machine.step_over();
      takeSerial(machine.instructions(), machine.instructions());
      pauseForInspector(why);
      return { stopped: why, registers: JSON.parse(machine.registers()) };
    }
    case InspectOp.ADD_BREAKPOINT:
    case InspectOp.REMOVE_BREAKPOINT: {
      const kind = args.kind === "port" ? "port" : "linear";
      const at = address(args.at, kind === "port" ? "port" : "address", kind === "port" ? 0xffff : 0xffff_ffff);
      if (op === "addBreakpoint") machine.add_breakpoint(kind, at);
      else machine.remove_breakpoint(kind, at);
      return JSON.parse(machine.breakpoints());
    }
    case InspectOp.CLEAR_BREAKPOINTS:
      machine.clear_breakpoints();
      return [];
    case InspectOp.BREAKPOINTS:
      return JSON.parse(machine.breakpoints());
    default:
      throw new Error(`unknown inspector request ${JSON.stringify(op)}`);
  }
}

/** @param {InputMessage} msg */
function applyInput(msg) {
  const machine = theMachine();
  switch (msg.type) {
    case ToWorker.SERIAL:
      machine.send_serial(msg.bytes);
      break;
    case ToWorker.TYPE:
      machine.type_text(msg.text);
      break;
    case ToWorker.KEY:
      machine.key(msg.code, msg.pressed);
      break;
    case ToWorker.MOUSE:
      machine.mouse(msg.dx, msg.dy, msg.dz, msg.buttons);
      break;
  }
}

/** The name a URL's last path segment gives a file, for the status line and messages. */
/** @param {string} url */
function fileName(url) {
  try {
    const path = new URL(url).pathname;
    return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)) || url;
  } catch {
    return String(url);
  }
}

/** Download `url` whole, posting progress; errors name the file and say what went wrong. */
/**
 * @param {string} label
 * @param {string} url
 * @returns {Promise<Uint8Array>}
 */
async function download(label, url) {
  const name = fileName(url);
  let res;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new Error(
      `${label} ${url}: could not download it (${errorText(err)}). The server may be down, or it is ` +
        `on another site that does not allow cross-origin requests (CORS).`
    );
  }
  if (!res.ok) {
    throw new Error(`${label} ${url}: the server answered HTTP ${res.status} ${res.statusText}`.trim());
  }
  // Content-Length is the size on the wire; with Content-Encoding it is not the file's size, and
  // the progress shown is then only approximate.
  const total = Number(res.headers.get("Content-Length")) || 0;
  const progress = { label, name, loaded: 0, total, streamed: false, done: false };
  post({ type: FromWorker.PROGRESS, file: progress });
  const chunks = [];
  let lastPost = 0;
  if (res.body) {
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      progress.loaded += value.length;
      fileBytes += value.length;
      const now = performance.now();
      if (now - lastPost > 100) {
        lastPost = now;
        post({ type: FromWorker.PROGRESS, file: progress });
      }
    }
  } else {
    const buf = new Uint8Array(await res.arrayBuffer());
    chunks.push(buf);
    progress.loaded = buf.length;
    fileBytes += buf.length;
  }
  const bytes = new Uint8Array(progress.loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  progress.total = progress.loaded;
  progress.done = true;
  post({ type: FromWorker.PROGRESS, file: progress });
  return bytes;
}

/**
 * Open one disk given as a URL (streamed with Range requests) or a local File.
 * @param {string} slot
 * @param {string | Blob} source
 * @param {number | null} diskCache MiB of chunks a streamed disk keeps (null: the core's default)
 * @returns {Promise<{disk: WasmDisk, name: string, local: boolean}>}
 */
async function openDisk(slot, source, diskCache) {
  const wasm = theApi();
  if (slot === "fda" && typeof source === "string") {
    // A floppy is small and its controller wants every sector at once: download it whole.
    const bytes = await download("fda", source);
    try {
      return { disk: wasm.Disk.from_bytes(fileName(source), bytes), name: fileName(source), local: false };
    } catch (err) {
      throw new Error(`fda ${source}: ${errorText(err)}`);
    }
  }
  if (typeof source === "string") {
    post({
      type: FromWorker.PROGRESS,
      file: { label: slot, name: fileName(source), loaded: 0, total: 0, streamed: true, done: false },
    });
    let disk;
    try {
      disk = await wasm.Disk.open_url(source, diskCache ?? undefined);
    } catch (err) {
      // The API's messages start with the URL.
      const why = errorText(err);
      throw new Error(why.startsWith(source) ? `${slot} ${why}` : `${slot} ${source}: ${why}`);
    }
    return { disk, name: fileName(source), local: false };
  }
  // A File (or Blob) the user chose or dropped: read it whole.
  const name = source instanceof File ? source.name : "local image";
  post({
    type: FromWorker.PROGRESS,
    file: { label: slot, name, loaded: 0, total: source.size, streamed: false, local: true, done: false },
  });
  const bytes = new Uint8Array(await source.arrayBuffer());
  try {
    return { disk: wasm.Disk.from_bytes(name, bytes), name, local: true };
  } catch (err) {
    throw new Error(`${slot} ${name}: ${errorText(err)}`);
  }
}

/**
 * What a state option is called in messages.
 * @param {NonNullable<StartOptions["state"]>} source
 */
function stateName(source) {
  if (typeof source === "string") return `state ${source}`;
  return `state ${source instanceof File ? source.name : "(given by the page)"}`;
}

/**
 * The bytes of a saved state: a URL (downloaded with progress), a File or Blob, or bytes.
 * @param {NonNullable<StartOptions["state"]>} source
 * @returns {Promise<Uint8Array>}
 */
async function loadState(source) {
  if (typeof source === "string") return download("state", source);
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  const name = source instanceof File ? source.name : "saved state";
  post({ type: FromWorker.PROGRESS, file: { label: "state", name, loaded: 0, total: source.size, local: true, done: false } });
  const bytes = new Uint8Array(await source.arrayBuffer());
  post({
    type: FromWorker.PROGRESS,
    file: { label: "state", name, loaded: bytes.length, total: bytes.length, local: true, done: true },
  });
  return bytes;
}

/** @param {StartOptions} options */
async function start(options) {
  if (machine || state === "loading") return;
  setState("loading");
  paused = paused || !!options.paused;

  try {
    wasm = /** @type {WasmApi} */ (await import(options.pkgUrl));
    wasmMemory = (await wasm.default()).memory;
  } catch (err) {
    throw new Error(
      `Could not load the emulator (${options.pkgUrl}): ${errorText(err)}. Build it with ` +
        "`make wasm`, then assemble the site with scripts/site.sh."
    );
  }

  // Everything is fetched at once; the kernel and initrd are needed whole before boot, and
  // only for a reboot when the machine starts from a saved state. Booting through the BIOS
  // needs its ROMs instead of a kernel.
  const firmware = options.firmware;
  const kernelP = firmware
    ? download("bios", firmware.bios)
    : download("kernel", options.kernel);
  const initrdP = firmware
    ? firmware.vgaBios
      ? download("vga bios", firmware.vgaBios)
      : Promise.resolve(undefined)
    : options.initrd
      ? download("initrd", options.initrd)
      : Promise.resolve(undefined);
  /** @type {Promise<Uint8Array | null> | null} */
  let stateP = options.state ? loadState(options.state) : null;
  if (stateP && options.stateIsDefault) {
    // The site's own saved Linux: if it cannot be had, boot instead (after saying why).
    stateP = stateP.catch((err) => {
      post({ type: FromWorker.MESSAGE, text: `Booting instead of restoring the saved Linux: ${errorText(err)}` });
      return null;
    });
  }
  /** @type {Promise<{slot: string, disk: WasmDisk, name: string, local: boolean}>[]} */
  const diskPs = [];
  for (const slot of /** @type {const} */ (["hda", "hdb", "cdrom", "fda"])) {
    const source = options[slot];
    if (source) diskPs.push(openDisk(slot, source, options.diskCache).then((d) => ({ slot, ...d })));
  }
  // Settle all before throwing, so a second failure does not become an unhandled rejection.
  const needed = stateP ? [stateP, ...diskPs] : [kernelP, initrdP, ...diskPs];
  if (stateP) {
    kernelP.catch(() => {});
    initrdP.catch(() => {});
  }
  let results = await Promise.allSettled(needed);
  if (stateP && results[0].status === "fulfilled" && results[0].value === null) {
    // No default state: boot the kernel after all.
    stateP = null;
    results = await Promise.allSettled([kernelP, initrdP, ...diskPs]);
  }
  const failed = results.flatMap((r) => (r.status === "rejected" ? [errorText(r.reason)] : []));
  if (failed.length) throw new Error(failed.join("\n"));
  // [state, ...disks] or [kernel, initrd, ...disks]
  const values = /** @type {any[]} */ (results.map((r) => (r.status === "fulfilled" ? r.value : null)));
  /** @type {{slot: string, disk: WasmDisk, name: string, local: boolean}[]} */
  const disks = stateP ? values.slice(1) : values.slice(2);

  if (stateP && options.state) {
    const bySlot = Object.fromEntries(disks.map((d) => [d.slot, d.disk]));
    try {
      machine = wasm.Machine.fromState(values[0], bySlot.hda, bySlot.hdb, bySlot.cdrom);
    } catch (err) {
      throw new Error(`${stateName(options.state)}: ${describe(err)}`);
    }
    // The kernel the page would boot is the one a reset boots.
    Promise.all([kernelP, initrdP]).then(
      ([kernel, initrd]) => {
        if (!machine) return;
        try {
          machine.set_kernel(kernel, initrd, options.append);
        } catch (err) {
          post({ type: FromWorker.MESSAGE, text: `Reset cannot boot ${options.kernel}: ${describe(err)}` });
        }
      },
      (err) => post({ type: FromWorker.MESSAGE, text: `Reset will not work: ${errorText(err)}` })
    );
  } else {
    try {
      machine = firmware
        ? wasm.Machine.with_firmware(options.memory, values[0], values[1], firmware.boot)
        : new wasm.Machine(options.memory);
      if (firmware && firmware.bootMenu !== null && firmware.bootMenu !== undefined) {
        machine.set_boot_menu(firmware.bootMenu);
      }
    } catch (err) {
      throw new Error(`Could not create the machine: ${describe(err)}`);
    }
  }
  if (!machine) throw new Error("Could not create the machine");
  jitOn = !!options.jit;
  if (jitOn) {
    try {
      machine.set_jit(options.jitThreshold || wasm.jit_default_threshold());
    } catch (err) {
      jitOn = false;
      post({ type: FromWorker.MESSAGE, text: `The compiling tier stays off: ${describe(err)}` });
    }
  }
  const [kernel, initrd] = stateP ? [null, null] : values;
  for (const { slot, disk, name, local } of disks) {
    const info = {
      label: slot,
      name,
      local,
      loaded: disk.bytes_fetched(),
      total: disk.size(),
      streamed: disk.streamed(),
      done: true,
    };
    // A warning (e.g. the server ignores Range) comes through take_messages() once attached.
    // A restored machine got its disks from fromState.
    if (!stateP) {
      try {
        if (slot === "cdrom") machine.insert_cdrom(disk);
        else if (slot === "fda") machine.insert_floppy(disk);
        else machine.attach_disk(slot === "hda" ? 0 : 1, disk);
      } catch (err) {
        throw new Error(`${slot} ${name}: ${describe(err)}`);
      }
    }
    post({ type: FromWorker.PROGRESS, file: info });
  }
  if (stateP) {
    post({ type: FromWorker.RESTORED });
  } else if (firmware) {
    // The CPU starts at the BIOS's reset vector: nothing to load.
    post({ type: FromWorker.BOOT });
  } else {
    try {
      machine.load_linux(kernel, initrd, options.append);
    } catch (err) {
      // The API says "kernel: ..." or "initrd ...": add which file that was.
      const why = describe(err);
      if (why.startsWith("kernel: ")) throw new Error(`kernel ${options.kernel}: ${why.slice(8)}`);
      if (why.startsWith("initrd")) throw new Error(`${why} (initrd ${options.initrd})`);
      throw new Error(`kernel ${options.kernel}: ${why}`);
    }
    post({ type: FromWorker.BOOT });
  }

  for (const msg of pendingInput.splice(0)) applyInput(msg);
  clockBase = performance.now();
  if (paused) {
    pausedAt = clockBase;
    setState("paused");
  } else {
    setState("running");
  }
  post({ type: FromWorker.STARTED });
  if (!paused) scheduleTurn();
}

/** An error's message, with out-of-memory said in plain words.
 * @param {unknown} err */
function describe(err) {
  const text = errorText(err);
  if (err instanceof RangeError || /out of memory|memory access out of bounds|allocat/i.test(text)) {
    return `${text} (the browser could not give the emulator enough memory: try a smaller ?memory=)`;
  }
  return text;
}

/** What to say when the machine itself threw or trapped while running.
 * @param {unknown} err */
function describeCrash(err) {
  if (err instanceof WebAssembly.RuntimeError) {
    return (
      `The emulator stopped on an internal error (${err.message}). This is a bug in wasm86, ` +
      `not in the guest; press Reset to start a new machine.`
    );
  }
  return `The emulator stopped: ${describe(err)}. Press Reset to start a new machine.`;
}

function scheduleTurn() {
  if (paused || crashed || !machine) return;
  if (sleepTimer !== null) {
    clearTimeout(sleepTimer);
    sleepTimer = null;
  }
  if (!turnQueued) {
    turnQueued = true;
    channel.port2.postMessage(0);
  }
}

/** @param {number} ms */
function sleepThenTurn(ms) {
  if (paused || crashed || turnQueued || sleepTimer !== null) return;
  sleepTimer = setTimeout(() => {
    sleepTimer = null;
    turn();
  }, ms);
}

function cancelTurns() {
  if (sleepTimer !== null) {
    clearTimeout(sleepTimer);
    sleepTimer = null;
  }
  // A queued MessageChannel turn still arrives; turn() checks `paused` and `crashed`.
}

/** One turn: run the guest for ~TURN_MS, publish what changed, and schedule the next turn. */
function turn() {
  if (paused || crashed || !machine) return;
  let rest = false; // the guest is idle: wait a little
  try {
    const t0 = performance.now();
    let now = t0;
    do {
      const before = machine.instructions();
      const s0 = now;
      const result = machine.run(hostNow(), sliceInstructions);
      now = performance.now();
      const after = machine.instructions();
      takeSerial(before, after);
      const ran = after - before;
      if (result === "reset") {
        onGuestReset();
        if (crashed) return;
        continue;
      }
      if (result === "idle") {
        rest = true;
        break;
      }
      if (result === "breakpoint") {
        // Stopped before the instruction a breakpoint names: pause there for the inspector.
        const hit = JSON.parse(machine.breakpoint_hit());
        pauseForInspector("breakpoint");
        post({ type: FromWorker.BREAKPOINT, breakpoint: hit, registers: JSON.parse(machine.registers()) });
        return;
      }
      // A "budget" slice that ran much less than asked stopped because the busy guest's clock
      // got ahead of the host's. End the turn, but do not sleep: the machine slows its clock
      // down in a few milliseconds (Machine::run_realtime), and a 2 ms timer (4 ms once
      // nested) each time it touched the lead cost a busy guest 5-7% of its wall time
      // (isprime in a worker paced like this one: 529-538 MIPS with the timer, 551-575
      // without; `make bench-web`'s page at 513). A guest with nothing to do stops as "idle".
      if (ran < sliceInstructions / 2) break;
      // Aim for slices of ~SLICE_TARGET_MS so the wall-time check stays fine-grained.
      const ms = now - s0;
      if (ms > 0.05) {
        const ideal = (ran / ms) * SLICE_TARGET_MS;
        sliceInstructions = Math.round(Math.min(5e6, Math.max(10_000, (sliceInstructions + ideal) / 2)));
      }
    } while (now - t0 < TURN_MS);
    publish(now);
  } catch (err) {
    fail(describeCrash(err));
    return;
  }
  if (rest) sleepThenTurn(2);
  else scheduleTurn();
}

function onGuestReset() {
  const now = performance.now();
  resetTimes = resetTimes.filter((t) => now - t < RESET_WINDOW_MS);
  resetTimes.push(now);
  if (resetTimes.length >= MAX_RESETS) {
    fail(
      `The guest reset itself ${MAX_RESETS} times within ${RESET_WINDOW_MS / 1000} s (a triple ` +
        "fault or a reboot loop), so it was stopped. Check the kernel and its command line."
    );
    return;
  }
  // run() has already booted the kernel again. What the old boot printed last goes out before
  // the new boot's first bytes.
  publish(performance.now());
  post({ type: FromWorker.MESSAGE, text: "The guest rebooted; the kernel was booted again." });
  post({ type: FromWorker.BOOT });
}

/** Take what the guest wrote to COM1 during the slice that ran from `from` to `to` retired
 * instructions.
 * @param {number} from
 * @param {number} to */
function takeSerial(from, to) {
  const bytes = theMachine().serial_output();
  if (bytes.length) serialChunks.push({ bytes, from, to });
}

/** Post what changed since the last turn.
 * @param {number} now performance.now() */
function publish(now) {
  const machine = theMachine();
  /** @type {import("./protocol.js").UpdateMessage} */
  const update = { type: FromWorker.UPDATE };
  let any = false;

  // Serial bytes go out as one buffer plus, per slice that wrote some, [end offset, instructions
  // at the slice's start, at its end] (the page's "serial" event reports them per chunk).
  const count = machine.instructions();
  takeSerial(count, count);
  let serial = new Uint8Array(0);
  if (serialChunks.length) {
    serial = new Uint8Array(serialChunks.reduce((n, c) => n + c.bytes.length, 0));
    /** @type {[number, number, number][]} */
    const marks = [];
    let at = 0;
    for (const c of serialChunks) {
      serial.set(c.bytes, at);
      at += c.bytes.length;
      marks.push([at, c.from, c.to]);
    }
    serialChunks = [];
    update.serial = serial;
    update.serialInstructions = marks;
    any = true;
  }
  for (const text of machine.take_messages()) post({ type: FromWorker.MESSAGE, text });

  if (now - lastTextAt >= TEXT_INTERVAL_MS) {
    lastTextAt = now;
    const text = machine.screen_text();
    if (text !== lastText) {
      lastText = text;
      update.screenText = text;
      any = true;
    }
  }

  if (now - lastStatsAt >= STATS_INTERVAL_MS || any) {
    const instructions = machine.instructions();
    mipsWindow.push([now, instructions]);
    while (mipsWindow.length > 2 && now - mipsWindow[1][0] >= 1000) mipsWindow.shift();
    const [t0, i0] = mipsWindow[0];
    const mips = now > t0 ? (instructions - i0) / (now - t0) / 1000 : 0;
    update.stats = {
      instructions,
      mips,
      downloadedBytes: fileBytes + machine.downloaded_bytes(),
      memoryBytes: wasmMemory ? wasmMemory.buffer.byteLength : 0,
      diskCacheBytes: machine.cached_disk_bytes(),
      jit: jitOn ? machine.jit_stats() : null,
    };
    lastStatsAt = now;
    any = true;
  }
  if (any) post(update, serial.length ? [serial.buffer] : []);

  if (framesOn && !frameInFlight && now - lastFrameAt >= FRAME_INTERVAL_MS && machine.render()) {
    let fb = machine.framebuffer();
    // framebuffer() returns a copy; if it ever were a view of wasm memory, transferring its buffer
    // would detach the emulator's memory, so copy then.
    if (fb.byteOffset !== 0 || fb.buffer.byteLength !== fb.byteLength) fb = fb.slice();
    post({ type: FromWorker.FRAME, width: machine.width(), height: machine.height(), buffer: bufferOf(fb) }, [bufferOf(fb)]);
    frameInFlight = true;
    lastFrameAt = now;
  }
}
