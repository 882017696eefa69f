// Two builds of wasm86 in one worker, for `make bench-ab` (scripts/bench-ab.sh): each boots the
// benchmark guest and runs the same workload, and the two take turns in short slices, so that
// whatever else the machine does (this project's machines are shared and noisy: one build's
// figure moves by up to 1.5x between runs of the same command) falls on both alike. Only the
// time spent inside each build's own run() between its workload's markers counts.
//
// Query: a, b (package directories next to this script, each holding wasm86.js and
// wasm86_bg.wasm), w (the /bench/run workload: isprime, gzip, forkexec), n (rounds of the
// workload per build, default 3), slice (instructions per turn, default 3,000,000).
// Posts "AB-RESULT {json}" when both are done, or "AB-ERROR message".

const q = new URLSearchParams(self.location.search);
const builds = [q.get("a"), q.get("b")];
const workload = q.get("w") || "isprime";
const rounds = Number(q.get("n") || 3);
const slice = Number(q.get("slice") || 3_000_000);

const fetchBytes = async (url) => {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};

async function main() {
  const kernel = await fetchBytes("images/bzImage");
  const initrd = await fetchBytes("images/bench-initramfs.cpio.gz");
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const runs = [];
  for (const dir of builds) {
    const pkg = await import(`./${dir}/wasm86.js`);
    await pkg.default({ module_or_path: `./${dir}/wasm86_bg.wasm` });
    const machine = new pkg.Machine(128);
    machine.load_linux(kernel, initrd, "console=ttyS0");
    runs.push({ dir, machine, out: "", typed: false, inWorkload: false, ms: 0, instructions: 0, rounds: [] });
  }
  const type = (r, text) => r.machine.send_serial(encoder.encode(text));
  for (;;) {
    for (const r of runs) {
      if (r.rounds.length >= rounds) continue;
      const before = r.machine.instructions();
      const t0 = performance.now();
      r.machine.run(t0, slice);
      const t1 = performance.now();
      if (r.inWorkload) {
        r.ms += t1 - t0;
        r.instructions += r.machine.instructions() - before;
      }
      const bytes = r.machine.serial_output();
      if (!bytes.length) continue;
      r.out += decoder.decode(bytes);
      // busybox's line editor asks where the cursor is; a terminal would answer.
      if (r.out.includes("\x1b[6n")) {
        r.out = r.out.replaceAll("\x1b[6n", "");
        type(r, "\x1b[1;1R");
      }
      if (!r.typed && r.out.includes("/ # ")) {
        r.out = "";
        r.typed = true;
        type(r, `/bench/run ${workload}\n`);
      }
      let nl;
      while ((nl = r.out.indexOf("\n")) >= 0) {
        const line = r.out.slice(0, nl).trim();
        r.out = r.out.slice(nl + 1);
        const m = line.match(/^WASM86-BENCH (begin|end|done|error)/);
        if (!m) continue;
        if (m[1] === "error") throw new Error(`${r.dir}: the guest reported ${line}`);
        if (m[1] === "begin") r.inWorkload = true;
        if (m[1] === "end") {
          r.inWorkload = false;
          r.rounds.push({ instructions: r.instructions, ms: r.ms, mips: r.instructions / r.ms / 1e3 });
          r.instructions = 0;
          r.ms = 0;
        }
        if (m[1] === "done" && r.rounds.length < rounds) type(r, `/bench/run ${workload}\n`);
      }
    }
    if (runs.every((r) => r.rounds.length >= rounds)) break;
  }
  return { workload, slice, builds: runs.map((r) => ({ dir: r.dir, rounds: r.rounds })) };
}

main().then(
  (result) => postMessage("AB-RESULT " + JSON.stringify(result)),
  (err) => postMessage("AB-ERROR " + (err && err.message ? err.message : String(err)))
);
