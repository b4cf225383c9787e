/**
 * Figure 5: cp of a binary file (random bytes, `--mb` MiB, default 100) into and out of a
 * sandbox through the tenant socket (`POST`/`GET /vm/h/cp?mode=binary`, streamed), against
 * `cat` through `runc exec` (stdin from the file / stdout read by this process). The copy is
 * checked byte-exact once (sha256 inside the sandbox). MB = 10^6 bytes.
 */
import { promises as fs } from "node:fs";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import path from "node:path";
import { execBuffered, type BenchOptions, type DaemonLab } from "../lib/context.js";
import { downloadCount, uploadFile } from "../lib/http-load.js";
import { row, type FigureResult } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";

const REPEATS = 3;

async function writeRandomFile(file: string, bytes: number): Promise<string> {
  const hash = crypto.createHash("sha256");
  const h = await fs.open(file, "w");
  try {
    for (let left = bytes; left > 0; left -= 2 ** 20) {
      const buf = crypto.randomBytes(Math.min(2 ** 20, left));
      hash.update(buf);
      await h.write(buf);
    }
  } finally {
    await h.close();
  }
  return hash.digest("hex");
}

/** `runc exec <id> sh -c 'cat > dest'` with stdin = the file. @returns ms. */
async function runcCatIn(id: string, file: string, dest: string): Promise<number> {
  const h = await fs.open(file, "r");
  try {
    return await new Promise<number>((resolve, reject) => {
      const t0 = nowMs();
      const c = spawn("runc", ["exec", id, "/bin/sh", "-c", `cat > ${dest}`], { stdio: [h.fd, "ignore", "pipe"] });
      let err = "";
      c.stderr?.on("data", (b: Buffer) => (err += b.toString()));
      c.once("error", reject);
      c.once("close", (code) => (code === 0 ? resolve(nowMs() - t0) : reject(new Error(`runc exec cat in exited ${code}: ${err}`))));
    });
  } finally {
    await h.close();
  }
}

/** `runc exec <id> cat src`, stdout counted here. @returns ms and bytes. */
function runcCatOut(id: string, src: string): Promise<{ ms: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const c = spawn("runc", ["exec", id, "/bin/cat", src], { stdio: ["ignore", "pipe", "pipe"] });
    let bytes = 0;
    let err = "";
    c.stdout.on("data", (b: Buffer) => (bytes += b.length));
    c.stderr.on("data", (b: Buffer) => (err += b.toString()));
    c.once("error", reject);
    c.once("close", (code) => (code === 0 ? resolve({ ms: nowMs() - t0, bytes }) : reject(new Error(`runc exec cat out exited ${code}: ${err}`))));
  });
}

export async function figureCopy(lab: DaemonLab, opts: BenchOptions): Promise<FigureResult> {
  const bytes = opts.mb * 2 ** 20;
  const mbps = (ms: number): number => bytes / 1e6 / (ms / 1000);
  const dir = await fs.mkdtemp("/tmp/pdkcp-");
  const src = path.join(dir, "src.bin");
  const { probe, target, probeContainer } = lab;
  const cpIn: number[] = [], cpOut: number[] = [], catIn: number[] = [], catOut: number[] = [];
  const notes: string[] = [];
  try {
    const sha = await writeRandomFile(src, bytes);
    for (let i = 0; i < REPEATS; i++) {
      const up = await uploadFile(target, `/vm/${probe}/cp?path=${encodeURIComponent("/tmp/bench-cp.bin")}&mode=binary`, src);
      if (up.status !== 200) throw new Error(`cp in failed (${up.status}): ${up.text.slice(0, 300)}`);
      cpIn.push(mbps(up.ms));
      if (i === 0) {
        const inside = (await execBuffered(lab.d, probe, ["/usr/bin/sha256sum", "/tmp/bench-cp.bin"])).split(" ")[0];
        if (inside !== sha) throw new Error(`cp in corrupted the file: sha256 ${inside} != ${sha}`);
        notes.push(`cp in verified byte-exact (sha256 ${sha.slice(0, 16)}… inside the sandbox).`);
      }
      const down = await downloadCount(target, `/vm/${probe}/cp?path=${encodeURIComponent("/tmp/bench-cp.bin")}&mode=binary`);
      if (down.status !== 200 || down.bytes !== bytes) throw new Error(`cp out failed (${down.status}, ${down.bytes} bytes)`);
      cpOut.push(mbps(down.ms));
      catIn.push(mbps(await runcCatIn(probeContainer, src, "/tmp/bench-cat.bin")));
      const o = await runcCatOut(probeContainer, "/tmp/bench-cat.bin");
      if (o.bytes !== bytes) throw new Error(`runc cat out read ${o.bytes} bytes, expected ${bytes}`);
      catOut.push(mbps(o.ms));
      await execBuffered(lab.d, probe, ["/bin/rm", "-f", "/tmp/bench-cp.bin", "/tmp/bench-cat.bin"]);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  const hb = { higherIsBetter: true };
  return {
    num: 5,
    title: `cp of a ${opts.mb} MiB binary file in and out vs cat through runc exec`,
    rows: [
      row("f5.cp-in", "Paddock: POST /vm/h/cp (host → VM)", "MB/s", "paddock", cpIn, { ...hb, vs: "f5.cat-in" }),
      row("f5.cat-in", "baseline: runc exec sh -c 'cat > f' < file", "MB/s", "baseline", catIn, hb),
      row("f5.cp-out", "Paddock: GET /vm/h/cp (VM → host)", "MB/s", "paddock", cpOut, { ...hb, vs: "f5.cat-out" }),
      row("f5.cat-out", "baseline: runc exec cat f, stdout read here", "MB/s", "baseline", catOut, hb),
    ],
    targets: [],
    notes: [...notes, `${REPEATS} repeats per direction, interleaved; the file lands on the VM's disk (/tmp on the sparse ext4 + overlay) in both variants.`],
  };
}
