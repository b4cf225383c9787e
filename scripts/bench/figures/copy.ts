/**
 * Figure 5: cp of a file of random bytes (`--mb` MiB, default 100) into and out of a sandbox
 * through the tenant socket (`POST`/`GET /vm/h/cp`, streamed), in `binary` mode and in `tar`
 * mode (an archive of that one file; out: the directory holding it), against `cat` through
 * `runc exec` (stdin from the file / stdout read by this process). Each mode is checked
 * byte-exact once per direction (sha256 inside the sandbox for in; binary out is hashed here;
 * for tar out the archive is unpacked here with tar(1)). Also the CPU the daemon and the VM's agent spend per transfer
 * (/proc/<pid>/stat), which load moves much less than MB/s. MB = 10^6 bytes.
 */
import { createWriteStream, promises as fs, readFileSync, readdirSync } from "node:fs";
import { execFileSync, spawn } from "node:child_process";
import http from "node:http";
import crypto from "node:crypto";
import path from "node:path";
import { execBuffered, type BenchOptions, type DaemonLab } from "../lib/context.js";
import { downloadCount, uploadFile, type HttpTarget } from "../lib/http-load.js";
import { cpuMs } from "../lib/procs.js";
import { writeRandomFile } from "../lib/random-file.js";
import { row, type FigureResult } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";

const REPEATS = 3;
/** The issue's target: cp at least this share of the cat floor, each direction and mode. */
const TARGET_SHARE = 0.7;

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

/** The host pid of the VM's guest agent: the first `node` below the container's init. */
function agentPid(container: string): number {
  const init = (JSON.parse(execFileSync("runc", ["state", container], { encoding: "utf8" })) as { pid: number }).pid;
  const parentOf = (pid: string): number => {
    try {
      const st = readFileSync(`/proc/${pid}/stat`, "utf8");
      return Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
      return -1;
    }
  };
  const all = readdirSync("/proc").filter((p) => /^\d+$/.test(p));
  const queue = [init];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    let comm = "";
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      continue; // exited meanwhile
    }
    if (comm === "node") return pid;
    queue.push(...all.filter((p) => parentOf(p) === pid).map(Number));
  }
  throw new Error(`no agent process in container ${container}`);
}

/** GET `p` into `file`. @throws Error unless 200. */
function downloadToFile(target: HttpTarget, p: string, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: target.socketPath, method: "GET", path: p, headers: target.headers ?? {} }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`GET ${p}: ${res.statusCode}`));
        return;
      }
      const out = createWriteStream(file);
      res.pipe(out);
      out.once("finish", () => resolve());
      out.once("error", reject);
      res.once("error", reject);
    });
    req.once("error", reject);
    req.end();
  });
}

export async function figureCopy(lab: DaemonLab, opts: BenchOptions): Promise<FigureResult> {
  const bytes = opts.mb * 2 ** 20;
  const mbps = (ms: number): number => bytes / 1e6 / (ms / 1000);
  const dir = await fs.mkdtemp("/tmp/pdkcp-");
  const src = path.join(dir, "src.bin");
  const srcTar = path.join(dir, "src.tar");
  const { probe, target, probeContainer } = lab;
  const cpPath = (p: string, mode: string): string => `/vm/${probe}/cp?path=${encodeURIComponent(p)}&mode=${mode}`;
  const daemonPid = lab.d.child?.pid as number;
  const agent = agentPid(probeContainer);
  const modes = ["binary", "tar"] as const;
  const mb: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  const push = (rec: Record<string, number[]>, key: string, v: number): void => void (rec[key] ??= []).push(v);
  /** Run `fn`, record MB/s under `key` and the CPU per 100 MiB of the daemon and the agent. */
  const timed = async (key: string, fn: () => Promise<number>): Promise<void> => {
    const d0 = await cpuMs(daemonPid), a0 = await cpuMs(agent);
    push(mb, key, mbps(await fn()));
    const per100 = 100 / opts.mb;
    push(cpu, `${key}.daemon`, ((await cpuMs(daemonPid)) - d0) * per100);
    push(cpu, `${key}.agent`, ((await cpuMs(agent)) - a0) * per100);
  };
  const catIn: number[] = [], catOut: number[] = [];
  const notes: string[] = [];
  try {
    const sha = await writeRandomFile(src, bytes);
    execFileSync("tar", ["-cf", srcTar, "-C", dir, "src.bin"]);
    for (let i = 0; i < REPEATS; i++) {
      for (const mode of modes) {
        const dest = mode === "binary" ? "/tmp/bench-cp.bin" : "/tmp/bench-cp.d";
        await timed(`${mode}-in`, async () => {
          const up = await uploadFile(target, cpPath(dest, mode), mode === "binary" ? src : srcTar);
          if (up.status !== 200) throw new Error(`cp in (${mode}) failed (${up.status}): ${up.text.slice(0, 300)}`);
          return up.ms;
        });
        if (i === 0) {
          const file = mode === "binary" ? dest : `${dest}/src.bin`;
          const inside = (await execBuffered(lab.d, probe, ["/usr/bin/sha256sum", file])).split(" ")[0];
          if (inside !== sha) throw new Error(`cp in (${mode}) corrupted the file: sha256 ${inside} != ${sha}`);
          notes.push(`cp in (${mode}) verified byte-exact (sha256 ${sha.slice(0, 16)}… inside the sandbox).`);
        }
        await timed(`${mode}-out`, async () => {
          const down = await downloadCount(target, cpPath(dest, mode));
          if (down.status !== 200 || down.bytes < bytes || (mode === "binary" && down.bytes !== bytes)) throw new Error(`cp out (${mode}) failed (${down.status}, ${down.bytes} bytes)`);
          return down.ms;
        });
        if (i === 0 && mode === "binary") {
          const outFile = path.join(dir, "out.bin");
          await downloadToFile(target, cpPath(dest, mode), outFile);
          const got = crypto.createHash("sha256").update(await fs.readFile(outFile)).digest("hex");
          if (got !== sha) throw new Error(`cp out (binary) corrupted the file: sha256 ${got} != ${sha}`);
          notes.push("cp out (binary) verified byte-exact (sha256 here).");
          await fs.rm(outFile, { force: true });
        }
        if (i === 0 && mode === "tar") {
          const outDir = path.join(dir, "out");
          await fs.mkdir(outDir);
          await downloadToFile(target, cpPath(dest, mode), path.join(dir, "out.tar"));
          execFileSync("tar", ["-xf", path.join(dir, "out.tar"), "-C", outDir]);
          const got = crypto.createHash("sha256").update(await fs.readFile(path.join(outDir, "src.bin"))).digest("hex");
          if (got !== sha) throw new Error(`cp out (tar) corrupted the file: sha256 ${got} != ${sha}`);
          notes.push("cp out (tar) verified byte-exact (unpacked here with tar(1)).");
          await fs.rm(outDir, { recursive: true, force: true });
          await fs.rm(path.join(dir, "out.tar"), { force: true });
        }
      }
      catIn.push(mbps(await runcCatIn(probeContainer, src, "/tmp/bench-cat.bin")));
      const o = await runcCatOut(probeContainer, "/tmp/bench-cat.bin");
      if (o.bytes !== bytes) throw new Error(`runc cat out read ${o.bytes} bytes, expected ${bytes}`);
      catOut.push(mbps(o.ms));
      await execBuffered(lab.d, probe, ["/bin/rm", "-rf", "/tmp/bench-cp.bin", "/tmp/bench-cp.d", "/tmp/bench-cat.bin"]);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  const hb = { higherIsBetter: true };
  const p50 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const floors = { in: catIn, out: catOut };
  const rows = [
    row("f5.cat-in", "baseline: runc exec sh -c 'cat > f' < file", "MB/s", "baseline", catIn, hb),
    row("f5.cat-out", "baseline: runc exec cat f, stdout read here", "MB/s", "baseline", catOut, hb),
  ];
  const targets: FigureResult["targets"] = [];
  for (const mode of modes) {
    for (const way of ["in", "out"] as const) {
      const key = `${mode}-${way}`;
      const id = mode === "binary" ? `f5.cp-${way}` : `f5.cp-${way}-tar`;
      const label = `Paddock: ${way === "in" ? "POST" : "GET"} /vm/h/cp?mode=${mode} (${way === "in" ? "host → VM" : "VM → host"})`;
      rows.push(row(id, label, "MB/s", "paddock", mb[key] ?? [], { ...hb, vs: `f5.cat-${way}` }));
      rows.push(row(`${id}.cpu-daemon`, `cause: daemon CPU per 100 MiB, cp ${way} (${mode})`, "ms", "cause", cpu[`${key}.daemon`] ?? [], { group: "cpu" }));
      rows.push(row(`${id}.cpu-agent`, `cause: agent CPU per 100 MiB, cp ${way} (${mode})`, "ms", "cause", cpu[`${key}.agent`] ?? [], { group: "cpu" }));
      const share = p50(mb[key] ?? []) / p50(floors[way]);
      targets.push({
        text: `cp ${way} (${mode}) ≥ ${TARGET_SHARE * 100} % of cat`,
        met: share >= TARGET_SHARE,
        measured: `${(share * 100).toFixed(0)} % (${p50(mb[key] ?? []).toFixed(1)} vs ${p50(floors[way]).toFixed(1)} MB/s p50)`,
        ...(share >= TARGET_SHARE ? {} : { cause: `CPU per 100 MiB p50: daemon ${p50(cpu[`${key}.daemon`] ?? []).toFixed(0)} ms, agent ${p50(cpu[`${key}.agent`] ?? []).toFixed(0)} ms` }),
      });
    }
  }
  return {
    num: 5,
    title: `cp of a ${opts.mb} MiB file in and out (binary and tar) vs cat through runc exec`,
    rows,
    targets,
    notes: [...notes, `${REPEATS} repeats per direction and mode, interleaved with the cat floor; the file lands on the VM's disk (/tmp on the sparse ext4 + overlay) in every variant. CPU from /proc/<pid>/stat (10 ms ticks) of the daemon and of the VM's agent (host pid ${agent}).`],
  };
}
