// The worker protocol: every message between a MachineController (wasm86.js, on the page) and
// its worker (worker.js), in one place. Both sides import the message kinds from here, and
// `tsc --checkJs` (make tsc) checks every message against the typedefs below: a field sent
// under a wrong name or type, or a kind one side handles and the other never sends, is a type
// error, not a silent no-op.
//
// The page sends ToWorker messages (Worker.postMessage), the worker answers with FromWorker
// messages. Requests that expect an answer (save, record, inspect) carry an `id`, and the
// answer (saved, recorded, inspected) carries the same `id` and either its result or `error`.
// Buffers (serial bytes, frames, state files) are transferred, not copied.
//
// The types of what the automation API returns (Stats, Registers, Walk, ...) are here too: they
// are what the worker's machine answers, passed through unchanged.

/** The kinds of message the page sends to the worker (`msg.type`). */
export const ToWorker = Object.freeze({
  /** Build the machine and run it: {options: StartOptions}. The first message, sent once. */
  START: "start",
  /** Stop running the guest (its clock stops too). */
  PAUSE: "pause",
  /** Run the guest again after PAUSE or a step. */
  RESUME: "resume",
  /** Reset the board and boot the loaded kernel again. */
  RESET: "reset",
  /** Bytes for COM1: {bytes}. */
  SERIAL: "serial",
  /** Text to type on the PS/2 keyboard (US layout): {text}. */
  TYPE: "type",
  /** One key down or up, by KeyboardEvent.code: {code, pressed}. */
  KEY: "key",
  /** PS/2 mouse motion and buttons: {dx, dy, dz, buttons}. */
  MOUSE: "mouse",
  /** The page painted the last FRAME: the worker may send the next. */
  FRAME_DONE: "frameDone",
  /** Whether to send frames at all (off for a terminal-only widget): {on}. */
  FRAMES: "frames",
  /** Save the whole machine: {id}; answered by SAVED. */
  SAVE: "save",
  /** Start (on: true) or stop (on: false) recording: {id, on}; answered by RECORDED. */
  RECORD: "record",
  /** An inspector request: {id, op, args}; answered by INSPECTED. */
  INSPECT: "inspect",
});

/** The kinds of message the worker sends to the page (`msg.type`). */
export const FromWorker = Object.freeze({
  /** The machine's state changed: {state}. */
  STATE: "state",
  /** Download progress of one file: {file}. */
  PROGRESS: "progress",
  /** What changed in the last turn: {serial?, serialInstructions?, screenText?, stats?}. */
  UPDATE: "update",
  /** The answer to SAVE: {id, buffer} (a state file) or {id, error}. */
  SAVED: "saved",
  /** The answer to RECORD: {id, on, buffer?} (buffer: the recording, on stop) or {id, error}. */
  RECORDED: "recorded",
  /** The answer to INSPECT: {id, result} or {id, error}. */
  INSPECTED: "inspected",
  /** A breakpoint was reached; the machine paused before it: {breakpoint, registers}. */
  BREAKPOINT: "breakpoint",
  /** The machine runs (or is paused, if asked to start paused): sent once. */
  STARTED: "started",
  /** The kernel (or the BIOS) was loaded: first start, reset, guest reboot. */
  BOOT: "boot",
  /** The machine started from a saved state instead of booting. */
  RESTORED: "restored",
  /** A screen frame (RGBA, transferred): {width, height, buffer}. */
  FRAME: "frame",
  /** A warning or a note for the user: {text}. */
  MESSAGE: "message",
  /** The machine stopped for good: {message}, in plain words. */
  ERROR: "error",
});

/** The inspector's requests (`op` of an INSPECT message). */
export const InspectOp = Object.freeze({
  COUNTERS: "counters",
  RESET_COUNTERS: "resetCounters",
  REGISTERS: "registers",
  DISASSEMBLE: "disassemble",
  TRANSLATE: "translate",
  READ_MEMORY: "readMemory",
  STEP: "step",
  STEP_OVER: "stepOver",
  ADD_BREAKPOINT: "addBreakpoint",
  REMOVE_BREAKPOINT: "removeBreakpoint",
  CLEAR_BREAKPOINTS: "clearBreakpoints",
  BREAKPOINTS: "breakpoints",
});

// ---- what the machine reports ----

/**
 * The machine's state: "idle" (not started), "loading" (downloading, building), "running",
 * "paused", or "error" (stopped for good; `error()` says why).
 * @typedef {"idle" | "loading" | "running" | "paused" | "error"} MachineState
 */

/**
 * Progress of one file the machine loads.
 * @typedef {object} FileProgress
 * @property {string} label what the file is for: "kernel", "initrd", "hda", "hdb", "cdrom",
 *   "fda", "bios", "vga bios", "state"
 * @property {string} name the file's name (the last part of its URL, or a local file's name)
 * @property {number} loaded bytes downloaded (or read) so far
 * @property {number} total its size in bytes (0 while unknown)
 * @property {boolean} [streamed] a disk read on demand with HTTP Range requests
 * @property {boolean} [local] a file the user chose or dropped
 * @property {boolean} done loading finished
 */

/**
 * The compiling tier's counters (null in stats() while it is off).
 * @typedef {object} JitStats
 * @property {number} regionsCompiled
 * @property {number} regionsLive
 * @property {number} guestBytes
 * @property {number} wasmBytes
 * @property {number} compiledInstructions guest instructions that ran compiled
 * @property {number} entries
 * @property {number} inlineInstructions
 * @property {number} stepInstructions
 * @property {number} failures
 * @property {number} compileMs time spent compiling and instantiating modules
 * @property {string | null} [error] why the tier turned itself off, if it did
 */

/**
 * What the worker reports after a turn (stats() adds the state).
 * @typedef {object} WorkerStats
 * @property {number} instructions guest instructions retired since power-on
 * @property {number} mips millions of guest instructions per second, over the last second
 * @property {number} downloadedBytes kernel, initrd, state and all disk bytes fetched
 * @property {number} memoryBytes the size of the emulator's wasm memory (guest RAM, the streamed
 *   disks' caches and everything else the core holds; it grows and never shrinks)
 * @property {number} diskCacheBytes streamed disks' chunks held in memory now (each disk's at
 *   most its cap, the diskCache option)
 * @property {JitStats | null} jit
 */

/**
 * stats() of the automation API.
 * @typedef {WorkerStats & {state: MachineState}} Stats
 */

/**
 * A breakpoint: before the instruction at a linear address, or before any instruction that
 * accesses an I/O port.
 * @typedef {object} Breakpoint
 * @property {"linear" | "port"} kind
 * @property {number} at
 */

/**
 * A segment register with its descriptor cache.
 * @typedef {object} SegmentRegister
 * @property {string} name "ES", "CS", "SS", "DS", "FS", "GS", "LDTR" or "TR"
 * @property {number} selector
 * @property {number} index the selector's descriptor index
 * @property {boolean} ldt the selector names the LDT
 * @property {number} rpl
 * @property {number} base
 * @property {number} limit
 * @property {number} access
 * @property {string} kind
 * @property {number} dpl
 * @property {boolean} present
 * @property {boolean} big
 * @property {boolean} granular
 */

/**
 * The CPU's registers (registers(), and each step's and breakpoint's `registers`).
 * @typedef {object} Registers
 * @property {number} eax
 * @property {number} ecx
 * @property {number} edx
 * @property {number} ebx
 * @property {number} esp
 * @property {number} ebp
 * @property {number} esi
 * @property {number} edi
 * @property {number} eip
 * @property {number} linearEip CS base + EIP
 * @property {number} eflags
 * @property {string[]} flags the names of the set EFLAGS bits
 * @property {number} iopl
 * @property {SegmentRegister[]} segments ES, CS, SS, DS, FS, GS
 * @property {SegmentRegister} ldtr
 * @property {SegmentRegister} tr
 * @property {{base: number, limit: number}} gdtr
 * @property {{base: number, limit: number}} idtr
 * @property {number} cr0
 * @property {string[]} cr0Bits
 * @property {number} cr2
 * @property {number} cr3
 * @property {number} cr4
 * @property {string[]} cr4Bits
 * @property {number[]} dr DR0 to DR7
 * @property {number} cpl
 * @property {"real" | "protected" | "v86"} mode
 * @property {boolean} paging
 * @property {number} codeSize 16 or 32
 * @property {number} stackSize 16 or 32
 * @property {boolean} halted
 * @property {number} instructions
 */

/**
 * The event counters (counters()).
 * @typedef {object} Counters
 * @property {number} instructions
 * @property {{title: string, columns: string[], rows: {name: string, values: number[]}[]}[]} groups
 */

/**
 * One disassembled instruction.
 * @typedef {object} DisassemblyLine
 * @property {number} linear
 * @property {number} ip
 * @property {number[]} bytes
 * @property {string} text
 */

/**
 * One step of a page-table walk, named by `step` ("identity", "cr3", "pde", "pte", "page",
 * "a20"), with that step's fields (addresses, the entry's index, value and bits, ...).
 * @typedef {{step: string} & Record<string, any>} WalkStep
 */

/**
 * The translation of a linear address, step by step (translate()).
 * @typedef {object} Walk
 * @property {number} linear
 * @property {boolean} paging
 * @property {boolean} pse
 * @property {boolean} writeProtect
 * @property {boolean} a20
 * @property {WalkStep[]} steps
 * @property {number | null} physical
 * @property {number | null} pageSize
 * @property {"pde" | "pte" | null} notPresent
 * @property {{userRead: boolean, userWrite: boolean, supervisorWrite: boolean} | null} permissions
 */

/**
 * What step() and stepOver() give: why the machine stopped, and the registers then.
 * @typedef {object} StepResult
 * @property {string} stopped
 * @property {Registers} registers
 */

// ---- the inspector's requests: arguments and answers by op ----

/**
 * @typedef {object} InspectArgs
 * @property {{}} counters
 * @property {{}} resetCounters
 * @property {{}} registers
 * @property {{linear: number | null, count: number}} disassemble
 * @property {{linear: number}} translate
 * @property {{linear: number, length: number}} readMemory
 * @property {{count: number}} step
 * @property {{}} stepOver
 * @property {Breakpoint} addBreakpoint
 * @property {Breakpoint} removeBreakpoint
 * @property {{}} clearBreakpoints
 * @property {{}} breakpoints
 */

/**
 * @typedef {object} InspectResults
 * @property {Counters} counters
 * @property {null} resetCounters
 * @property {Registers} registers
 * @property {DisassemblyLine[]} disassemble
 * @property {Walk} translate
 * @property {(number | null)[]} readMemory
 * @property {StepResult} step
 * @property {StepResult} stepOver
 * @property {Breakpoint[]} addBreakpoint
 * @property {Breakpoint[]} removeBreakpoint
 * @property {Breakpoint[]} clearBreakpoints
 * @property {Breakpoint[]} breakpoints
 */

/** @typedef {keyof InspectArgs} InspectOpName */

// ---- page -> worker ----

/**
 * What the worker needs to build the machine (the controller's resolved options, plus where
 * the emulator's wasm package is).
 * @typedef {object} StartOptions
 * @property {string} pkgUrl the wasm-bindgen module (pkg/wasm86.js)
 * @property {string} kernel
 * @property {string | null} initrd
 * @property {string} append
 * @property {number} memory MiB
 * @property {string | Blob | null} hda
 * @property {string | Blob | null} hdb
 * @property {string | Blob | null} cdrom
 * @property {string | Blob | null} fda
 * @property {{bios: string, vgaBios: string | null, boot: string, bootMenu: number | null} | null} firmware
 *   through the BIOS: the ROMs and the boot order (no kernel is loaded)
 * @property {boolean} jit
 * @property {number | null} jitThreshold
 * @property {number | null} diskCache MiB of chunks each streamed disk keeps (null: the core's default)
 * @property {string | Blob | ArrayBuffer | ArrayBufferView | null} state
 * @property {boolean} stateIsDefault the bundled saved Linux: if it cannot be had, boot instead
 * @property {boolean} paused start paused
 */

/** @typedef {{type: typeof ToWorker.START, options: StartOptions}} StartMessage */
/** @typedef {{type: typeof ToWorker.PAUSE}} PauseMessage */
/** @typedef {{type: typeof ToWorker.RESUME}} ResumeMessage */
/** @typedef {{type: typeof ToWorker.RESET}} ResetMessage */
/** @typedef {{type: typeof ToWorker.SERIAL, bytes: Uint8Array}} SerialMessage */
/** @typedef {{type: typeof ToWorker.TYPE, text: string}} TypeMessage */
/** @typedef {{type: typeof ToWorker.KEY, code: string, pressed: boolean}} KeyMessage */
/** @typedef {{type: typeof ToWorker.MOUSE, dx: number, dy: number, dz: number, buttons: number}} MouseMessage */
/** @typedef {{type: typeof ToWorker.FRAME_DONE}} FrameDoneMessage */
/** @typedef {{type: typeof ToWorker.FRAMES, on: boolean}} FramesMessage */
/** @typedef {{type: typeof ToWorker.SAVE, id: number}} SaveMessage */
/** @typedef {{type: typeof ToWorker.RECORD, id: number, on: boolean}} RecordMessage */
/**
 * @typedef {{[K in InspectOpName]: {type: typeof ToWorker.INSPECT, id: number, op: K, args: InspectArgs[K]}}[InspectOpName]} InspectMessage
 */

/** Input for the machine (queued by the worker until the machine exists).
 * @typedef {SerialMessage | TypeMessage | KeyMessage | MouseMessage} InputMessage */

/**
 * Every message the page sends.
 * @typedef {StartMessage | PauseMessage | ResumeMessage | ResetMessage | InputMessage
 *   | FrameDoneMessage | FramesMessage | SaveMessage | RecordMessage | InspectMessage} ToWorkerMessage
 */

// ---- worker -> page ----

/** @typedef {{type: typeof FromWorker.STATE, state: MachineState}} StateMessage */
/** @typedef {{type: typeof FromWorker.PROGRESS, file: FileProgress}} ProgressMessage */
/**
 * What changed in one turn. `serial`: the bytes the guest wrote to COM1; `serialInstructions`:
 * per run() slice that wrote some of them, [where its bytes end in `serial`, the retired-
 * instruction count at its start, at its end]; `screenText`: the VGA text when it changed (at
 * most 10 times a second); `stats`: at least 4 times a second.
 * @typedef {object} UpdateMessage
 * @property {typeof FromWorker.UPDATE} type
 * @property {Uint8Array} [serial]
 * @property {[number, number, number][]} [serialInstructions]
 * @property {string} [screenText]
 * @property {WorkerStats} [stats]
 */
/** @typedef {{type: typeof FromWorker.SAVED, id: number, buffer?: ArrayBuffer, error?: string}} SavedMessage */
/** @typedef {{type: typeof FromWorker.RECORDED, id: number, on?: boolean, buffer?: ArrayBuffer, error?: string}} RecordedMessage */
/** @typedef {{type: typeof FromWorker.INSPECTED, id: number, result?: unknown, error?: string}} InspectedMessage */
/** @typedef {{type: typeof FromWorker.BREAKPOINT, breakpoint: Breakpoint, registers: Registers}} BreakpointMessage */
/** @typedef {{type: typeof FromWorker.STARTED}} StartedMessage */
/** @typedef {{type: typeof FromWorker.BOOT}} BootMessage */
/** @typedef {{type: typeof FromWorker.RESTORED}} RestoredMessage */
/** @typedef {{type: typeof FromWorker.FRAME, width: number, height: number, buffer: ArrayBuffer}} FrameMessage */
/** @typedef {{type: typeof FromWorker.MESSAGE, text: string}} NoteMessage */
/** @typedef {{type: typeof FromWorker.ERROR, message: string}} ErrorMessage */

/**
 * Every message the worker sends.
 * @typedef {StateMessage | ProgressMessage | UpdateMessage | SavedMessage | RecordedMessage
 *   | InspectedMessage | BreakpointMessage | StartedMessage | BootMessage | RestoredMessage
 *   | FrameMessage | NoteMessage | ErrorMessage} FromWorkerMessage
 */
