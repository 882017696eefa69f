// virtualization.html: the demos. Each button drives one <wasm86-machine> through its automation
// API (wasm86.js): it types commands on the serial console, reads the machine's event counters
// before and after, and fills a table of the page. Results are also kept in `window.lesson`
// (for scripts and tests).

import "./wasm86-machine.js";
import { INSPECTOR_STYLE, renderWalk, hex } from "./inspector.js";

/** The page's element with this id (every id used here is in the page's markup).
 * @param {string} id
 * @returns {any} */
const $ = (id) => document.getElementById(id);

/** The bundled shell's prompt, or busybox's cursor-position query right after it. */
const PROMPT = /# (?:\x1b\[6n|$)/;
/** Longest wait for one command (ms): a slow computer runs the emulator slowly. */
const COMMAND_MS = 180_000;

/** The demos' results, for scripts and tests.
 * @type {Record<string, any>} */
const lesson = {};
/** @type {any} */ (window).lesson = lesson;

// The walks are drawn with the inspector's style.
const style = document.createElement("style");
style.dataset.wasm86Inspector = "";
style.textContent = INSPECTOR_STYLE;
document.head.append(style);

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Send `command` + Enter to the widget's serial console and wait until the text that follows
 * matches `until` (default: the next shell prompt after the echoed line). Resolves with
 * {text, ms}: everything the guest printed, and the wall time from sending to the match.
 * @param {import("./wasm86-machine.js").Wasm86MachineElement} el
 * @param {string} command
 * @param {RegExp | null} [until]
 * @returns {Promise<{text: string, ms: number}>}
 */
function runCommand(el, command, until = null) {
  const m = el.machine;
  return new Promise((resolve, reject) => {
    let text = "";
    const t0 = performance.now();
    /** @param {Error} [err] */
    const done = (err) => {
      clearTimeout(timer);
      m.removeEventListener("serial", onSerial);
      m.removeEventListener("error", onError);
      if (err) reject(err);
      else resolve({ text, ms: performance.now() - t0 });
    };
    /** @param {CustomEvent<import("./wasm86.js").SerialDetail>} e */
    const onSerial = (e) => {
      text += e.detail.text;
      // The prompt after the echoed command line (the echo ends with a line break).
      const after = until ? text : text.slice(text.indexOf("\n") + 1);
      if (until ? until.test(text) : text.includes("\n") && PROMPT.test(after)) done();
    };
    const onError = () => done(new Error(m.error() || "the machine failed"));
    const timer = setTimeout(() => done(new Error(`no answer to ${JSON.stringify(command.slice(0, 40))} within ${COMMAND_MS / 1000} s`)), COMMAND_MS);
    m.addEventListener("serial", onSerial);
    m.addEventListener("error", onError);
    m.sendSerial(`${command}\n`);
  });
}

/** Start the widget (if it is not running yet) and wait until its shell answers an empty line
 * with a prompt, so that what is typed next is a command of its own. */
/** @param {import("./wasm86-machine.js").Wasm86MachineElement} el */
async function ready(el) {
  const m = el.machine;
  await m.start();
  if (m.state === "paused") m.resume();
  // A machine that booted instead of starting from the saved Linux: its first prompt.
  if (!PROMPT.test(m.serialText().slice(-64)) && /Linux version/.test(m.serialText())) {
    await runCommand(el, "", PROMPT);
  } else {
    await runCommand(el, "");
  }
  // xterm.js answers the prompt's cursor-position query; let that reach the guest first.
  await sleep(100);
}

/** The values of counter row `name` in group `title` (first column only unless `all`). */
/**
 * @param {import("./protocol.js").Counters} counters
 * @param {string} title
 * @param {string} name
 * @returns {any}
 */
function counter(counters, title, name, all = false) {
  const g = counters.groups.find((x) => x.title === title);
  const row = g && g.rows.find((r) => r.name === name);
  if (!row) return all ? [] : NaN;
  return all ? row.values : row.values[0];
}

/** @param {number} n */
const fmt = (n) => (Number.isFinite(n) ? n.toLocaleString("en-US") : "?");

/** Run `fn` for a button: the button is disabled meanwhile, errors go to `status`. */
/**
 * @param {string} button
 * @param {string} status
 * @param {(say: (text: string) => void) => Promise<string | undefined>} fn
 */
function demo(button, status, fn) {
  $(button).addEventListener("click", async () => {
    $(button).disabled = true;
    $(status).textContent = "running…";
    $(status).classList.remove("failed");
    try {
      const said = await fn((text) => ($(status).textContent = text));
      $(status).textContent = said || "done";
    } catch (err) {
      $(status).textContent = `failed: ${err instanceof Error ? err.message : err}`;
      $(status).classList.add("failed");
    } finally {
      $(button).disabled = false;
    }
  });
}

/** A program's bytes as a shell command busybox's printf turns back into the file. */
/** @param {Uint8Array} bytes @param {string} path */
function printfCommand(bytes, path) {
  let escaped = "";
  for (const b of bytes) escaped += `\\${b.toString(8).padStart(3, "0")}`;
  return `printf '${escaped}' > ${path}; chmod +x ${path}; ${path}; echo rc:$?`;
}

// ---- 1. POPF at CPL 3 ----

demo("popf-run", "popf-status", async (say) => {
  const el = $("popf-machine");
  const res = await fetch("lesson/popf");
  if (!res.ok) throw new Error(`lesson/popf: HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  say("starting the machine…");
  await ready(el);
  say(`copying the ${bytes.length}-byte program into the guest and running it…`);
  const m = el.machine;
  await m.resetCounters();
  // The echo of the command line shows "rc:$?"; the program's exit status prints "rc:0".
  const { text } = await runCommand(el, printfCommand(bytes, "/tmp/popf"), /rc:\d+\r?\n[^]*# /);
  const counters = await m.counters();
  const rc = /rc:(\d+)/.exec(text.slice(text.lastIndexOf("rc:")));
  const S = "sensitive unprivileged instructions";
  const rows = {
    pushf: counter(counters, S, "PUSHF", true),
    popf: counter(counters, S, "POPF", true),
    silent: counter(counters, S, "POPF that could not change IF (silently)", true),
    gp: counter(counters, "exceptions", "#GP general protection (13)", true),
  };
  /** @param {string} id @param {number | undefined} v */
  const cell = (id, v) => ($(id).textContent = v === undefined ? "0" : fmt(v));
  // Columns: total, at CPL 0, at CPL 3 (exceptions: total, at CPL 3).
  cell("popf-pushf-total", rows.pushf[0]);
  cell("popf-pushf-cpl3", rows.pushf[2]);
  cell("popf-popf-total", rows.popf[0]);
  cell("popf-popf-cpl3", rows.popf[2]);
  cell("popf-silent", rows.silent[0]);
  cell("popf-gp-total", rows.gp[0]);
  cell("popf-gp-cpl3", rows.gp[1]);
  lesson.popf = { exitStatus: rc ? Number(rc[1]) : null, ...rows, instructions: counters.instructions };
  return `the program exited with status ${rc ? rc[1] : "?"}; ${fmt(counters.instructions)} instructions ran in all (the shell's too)`;
});

// ---- 2. What events cost ----

const COST_COMMANDS = {
  ls: "ls -l /bin",
  loop: "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done",
};

demo("cost-run", "cost-status", async (say) => {
  const el = $("cost-machine");
  say("starting the machine…");
  await ready(el);
  const m = el.machine;
  /** @type {Record<string, any>} */
  const results = {};
  for (const [key, command] of Object.entries(COST_COMMANDS)) {
    say(`running ${command}…`);
    await m.resetCounters();
    const { ms } = await runCommand(el, command);
    const c = await m.counters();
    /** @param {string} title @param {string} name */
    const row = (title, name) => counter(c, title, name);
    results[key] = {
      instructions: c.instructions,
      pageFaults: row("exceptions", "#PF page fault (14)"),
      int80: row("interrupts", "software INT 0x80") || 0,
      sysenter: row("privileged and intercepted instructions", "SYSENTER"),
      cr3: row("memory management", "CR3 loads (address-space switches)"),
      tlbMisses: row("memory management", "TLB misses (page walks)"),
      timer: row("interrupts", "IRQ 0 timer (PIT)") || 0,
      serial: row("interrupts", "IRQ 4 COM1") || 0,
      ms,
    };
    await sleep(100);
  }
  for (const [key, r] of Object.entries(results)) {
    for (const [name, v] of Object.entries(r)) {
      const td = document.querySelector(`#cost-table td[data-col="${key}"][data-row="${name}"]`);
      if (td) td.textContent = name === "ms" ? `${Math.round(v)} ms` : fmt(v);
    }
  }
  lesson.cost = results;
  $("cost-reading").textContent = costReading(/** @type {{ls: any, loop: any}} */ (results));
  $("cost-reading").hidden = false;
  return "done: both commands ran";
});

/** What the two columns say, in words that only claim what the numbers show. */
/** @param {{ls: any, loop: any}} results */
function costReading({ ls, loop }) {
  /** @param {any} r */
  const calls = (r) => r.int80 + r.sysenter;
  /** @param {number} a @param {number} b */
  const times = (a, b) => (b > 0 ? `${(a / b).toFixed(a / b < 10 ? 1 : 0)} times` : "many times");
  const parts = [];
  if (loop.instructions > ls.instructions) {
    parts.push(`The loop ran ${times(loop.instructions, ls.instructions)} as many instructions as ls -l /bin`);
  } else {
    parts.push(`ls -l /bin ran ${times(ls.instructions, loop.instructions)} as many instructions as the loop`);
  }
  if (ls.pageFaults > loop.pageFaults) {
    parts.push(`but ls took ${fmt(ls.pageFaults)} page faults to the loop's ${fmt(loop.pageFaults)}`);
  }
  if (calls(ls) > calls(loop)) {
    parts.push(`and made ${fmt(calls(ls))} system calls to the loop's ${fmt(calls(loop))}`);
  }
  let text = `${parts.join(", ")}.`;
  if (ls.cr3 > loop.cr3) {
    text += ` It also switched address spaces (CR3 loads) ${fmt(ls.cr3)} times to the loop's ${fmt(loop.cr3)}.`;
  }
  text +=
    " Each of those events leaves the program for the kernel; under a hypervisor that traps them, each could also" +
    " leave the guest for the hypervisor, while the loop's instructions would run at full speed.";
  return text;
}

// ---- 3. Walking a page table ----

const walkMachine = () => $("walk-machine");

demo("walk-user", "walk-status", async (say) => {
  const el = walkMachine();
  const m = el.machine;
  say("starting the machine…");
  await m.start();
  // A loop of an earlier press may still run: Ctrl-C ends it.
  if (m.state === "paused") m.resume();
  m.sendSerial("\x03");
  await sleep(300);
  await ready(el);
  // A loop that keeps the shell busy in user mode, then pause it there (retrying when the
  // pause lands in the kernel, in a timer interrupt).
  m.sendSerial("i=0; while [ $i -lt 10000000 ]; do i=$((i+1)); done\n");
  await sleep(800);
  let r = null;
  for (let tries = 0; tries < 50; tries++) {
    m.pause();
    r = await m.registers();
    if (r.cpl === 3) break;
    m.resume();
    await sleep(20 + 10 * tries);
  }
  if (!r || r.cpl !== 3) throw new Error("the CPU was never caught at CPL 3; try again");
  if (el.inspector) el.inspector.walk(null);
  const [user, kernel] = await Promise.all([m.translate(r.linearEip), m.translate(0xc0000000)]);
  lesson.walk = { registers: r, user, kernel };
  const figure = $("walk-figure");
  figure.replaceChildren();
  for (const [title, w, name] of [
    [`The shell's next instruction, EIP = ${hex(r.linearEip)} (CPL 3)`, user, "EIP"],
    ["The kernel's first page, 0xc0000000", kernel, null],
  ]) {
    const box = document.createElement("div");
    box.className = "w86i walk-col";
    const h = document.createElement("h4");
    h.textContent = title;
    box.append(h, renderWalk(w, name));
    figure.append(box);
  }
  figure.hidden = false;
  return `paused at CPL 3 in the shell, CR3 = ${hex(r.cr3)}; the inspector's walk shows EIP. Continue ends the loop.`;
});

demo("walk-kernel", "walk-status", async () => {
  const el = walkMachine();
  await el.machine.start();
  if (el.inspector) await el.inspector.walk(0xc0000000);
  return "the inspector shows the walk of 0xc0000000";
});

demo("walk-continue", "walk-status", async () => {
  const m = walkMachine().machine;
  if (m.state === "idle") return "not started";
  m.resume();
  // Ctrl-C ends the loop.
  m.sendSerial("\x03");
  return "running";
});

// ---- 4. Interpretation versus compilation ----

const JIT_LOOP = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done";
const D = "decoded and compiled code";

/** The compiling tier's rows of a counters() answer. */
/** @param {import("./protocol.js").Counters} c @param {number} ms */
function codeCounters(c, ms) {
  return {
    instructions: c.instructions,
    compiled: counter(c, D, "instructions run compiled"),
    perMille: counter(c, D, "instructions run compiled, per mille"),
    regions: counter(c, D, "regions compiled to wasm"),
    blocks: counter(c, D, "blocks decoded"),
    stale: counter(c, D, "blocks made stale by writes to their code page"),
    ms,
  };
}

demo("jit-run", "jit-status", async (say) => {
  const el = $("jit-machine");
  say("starting the machine…");
  await ready(el);
  const m = el.machine;
  /** @type {any[]} */
  const runs = [];
  // The shell waiting at its prompt: the kernel's idle loop and the timer.
  say("two seconds at the prompt…");
  await m.resetCounters();
  const t0 = performance.now();
  await sleep(2000);
  runs.push(codeCounters(await m.counters(), performance.now() - t0));
  for (const n of [1, 2]) {
    say(`run ${n} of the loop…`);
    await m.resetCounters();
    const { ms } = await runCommand(el, JIT_LOOP);
    runs.push(codeCounters(await m.counters(), ms));
    await sleep(100);
  }
  runs.forEach((r, i) => {
    for (const [name, v] of Object.entries(r)) {
      const td = document.querySelector(`#jit-table td[data-col="${i}"][data-row="${name}"]`);
      if (td) td.textContent = name === "ms" ? `${Math.round(v)} ms` : name === "perMille" ? `${v} ‰` : fmt(v);
    }
  });
  lesson.jit = runs;
  $("jit-reading").textContent = jitReading(/** @type {[any, any, any]} */ (runs));
  $("jit-reading").hidden = false;
  return "done: idle, then the loop twice";
});

/** What the three columns say, claiming only what the numbers show. */
/** @param {[any, any, any]} runs */
function jitReading([idle, first, second]) {
  /** @param {number} perMille */
  const pct = (perMille) => `${(perMille / 10).toFixed(1)}%`;
  let text =
    `At the prompt the machine ran ${fmt(idle.instructions)} instructions in two seconds` +
    (idle.compiled === 0 ? ", none of them compiled." : `, ${pct(idle.perMille)} of them compiled.`);
  text +=
    ` The loop's first run compiled ${fmt(first.regions)} region${first.regions === 1 ? "" : "s"} and ran ` +
    `${pct(first.perMille)} of its instructions compiled; the second run compiled ` +
    `${second.regions === 0 ? "nothing new" : `${fmt(second.regions)} more`} and ran ${pct(second.perMille)} compiled`;
  text += second.regions === 0 && second.compiled > 0 ? ", with the code compiled during the first." : ".";
  text += ` The other ${pct(1000 - second.perMille)} of the second run was interpreted.`;
  return text;
}
