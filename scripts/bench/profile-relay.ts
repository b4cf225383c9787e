/**
 * The tenant daemon's relay of agent answers alone, without a VM (figures 4 and 5 of
 * scripts/bench/README.md measure it with one): a real guest agent (the build's
 * `dist/toolbox/agent.cjs`, a host process on a Unix socket) behind a relay process that runs
 * the build's `streamToAgent` (tenant-daemon/agent-client/agent-stream.ts) in a plain
 * `node:http` server under the daemon's node flags (shared/daemon-node-flags.ts). This process
 * is the client: a streamed exec of `--mb` MiB of text (every NDJSON frame parsed, as figure 4),
 * a binary cp in, a binary cp out and a tar cp out (`tarout`) of `--mb` MiB of random bytes
 * (checked byte-exact once; tar: the file's data in the archive).
 * Several builds (`--dist a,b`: `dist/` directories, e.g. a copy of main's next to this one)
 * run interleaved, build order flipping every round; printed: medians of CPU ms per 100 MiB of
 * the relay, the agent and this client (/proc/<pid>/stat, process.cpuUsage) and MB/s, with the
 * load average. Loopback Unix sockets only.
 *
 *   node dist/scripts/bench/profile-relay.js --dist dist,/path/to/base/dist [--mb 100] [--rounds 3] [--only exec,in,out,tarout] [--cpu-prof DIR] [--strace]
 *
 * `--cpu-prof DIR` runs the relays and agents under `node --cpu-prof` (profiles in DIR); `--strace` prints
 * `strace -c -f` of each relay and agent for its first transfer of each kind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { streamExec } from "./lib/http-load.js";
import { cpuMs } from "./lib/procs.js";
import { writeRandomFile } from "./lib/random-file.js";
import { nowMs } from "./lib/stats.js";

interface Lab {
  dist: string;
  agent: ChildProcess;
  relay: ChildProcess;
  dir: string;
  sock: string;
}

function waitFor(child: ChildProcess, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = "";
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${text}: ${out}`)), 30_000);
    const on = (b: Buffer): void => {
      out += b.toString();
      if (out.includes(text)) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stdout?.on("data", on);
    child.stderr?.on("data", on);
    child.once("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
}

async function startLab(dist: string, cpuProf: string | undefined): Promise<Lab> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-relay-"));
  const proof = crypto.randomBytes(32).toString("hex");
  await fs.writeFile(
    path.join(dir, "boot.json"),
    JSON.stringify({ hostname: "relay-vm", userdata: null, default_user: null, secrets_dir: path.join(dir, "secrets"), agent_version: "0.1.0-bench", agent_proof: proof }),
  );
  const tag = `${path.basename(path.dirname(path.resolve(dist)))}-${process.pid}`;
  const profOf = (who: string): string[] => (cpuProf === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${cpuProf}`, `--cpu-prof-name=${who}-${tag}.cpuprofile`]);
  const agent = spawn(process.execPath, [...profOf("agent"), path.join(dist, "toolbox/agent.cjs")], {
    env: { ...process.env, PADDOCK_AGENT_DIR: dir, PADDOCK_AGENT_USERDATA_GUARD: path.join(dir, "guard") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  await waitFor(agent, "listening on");
  const flags = ((await import(pathToFileURL(path.join(dist, "shared/daemon-node-flags.js")).href)) as { DAEMON_NODE_FLAGS: string[] }).DAEMON_NODE_FLAGS;
  const sock = path.join(dir, "relay.sock");
  const relay = spawn(process.execPath, [...flags, ...profOf("relay"), new URL(import.meta.url).pathname, "--relay-child", dist, path.join(dir, "agent.sock"), proof, sock], { stdio: ["ignore", "pipe", "pipe"] });
  await waitFor(relay, "relay ready");
  return { dist, agent, relay, dir, sock };
}

async function stopLab(lab: Lab): Promise<void> {
  for (const c of [lab.relay, lab.agent]) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const gone = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    await gone;
  }
  await fs.rm(lab.dir, { recursive: true, force: true });
}

/** The relay process: `streamToAgent` of `dist` behind `http.createServer` on `sock`. */
async function relayChild(dist: string, agentSock: string, proof: string, sock: string): Promise<void> {
  const mod = (await import(pathToFileURL(path.join(dist, "tenant-daemon/agent-client/agent-stream.js")).href)) as {
    streamToAgent: (e: unknown, req: http.IncomingMessage, res: http.ServerResponse, p: string, fail: (err: Error) => void) => void;
  };
  const endpoint = { hostname: "relay-vm", socketPath: agentSock, proof };
  const server = http.createServer((req, res) => {
    mod.streamToAgent(endpoint, req, res, `/v1${req.url ?? "/"}`, (err) => {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: err.message }));
    });
  });
  server.listen(sock, () => process.stdout.write("relay ready\n"));
  process.once("SIGTERM", () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

function upload(sock: string, p: string, file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method: "POST", path: p, headers: { "content-type": "application/octet-stream", "transfer-encoding": "chunked" } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    createReadStream(file).pipe(req);
  });
}

/**
 * GET `p` from `sock`, counting the body's bytes; `hash` gets the body's bytes in
 * `[skip, skip + take)` (a tar answer of one file: its data after the 512-byte header).
 */
function download(sock: string, p: string, hash?: crypto.Hash, skip = 0, take = Infinity): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: sock, path: p }, (res) => {
        let bytes = 0;
        res.on("data", (c: Buffer) => {
          const from = Math.max(0, skip - bytes), to = Math.min(c.length, skip + take - bytes);
          if (hash !== undefined && to > from) hash.update(c.subarray(from, to));
          bytes += c.length;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes }));
        res.on("error", reject);
      })
      .on("error", reject);
  });
}

function strace(pid: number): { stop: () => Promise<string> } {
  const c = spawn("strace", ["-c", "-f", "-p", String(pid)], { stdio: ["ignore", "ignore", "pipe"] });
  let out = "";
  c.stderr.on("data", (b: Buffer) => (out += b.toString()));
  return {
    stop: async () => {
      const gone = new Promise((r) => c.once("exit", r));
      c.kill("SIGINT");
      await gone;
      return out;
    },
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

async function main(): Promise<void> {
  if (process.argv[2] === "--relay-child") {
    const [dist, agentSock, proof, sock] = process.argv.slice(3) as [string, string, string, string];
    await relayChild(dist, agentSock, proof, sock);
    return;
  }
  const { values } = parseArgs({
    options: {
      dist: { type: "string", default: "dist" },
      mb: { type: "string", default: "100" },
      rounds: { type: "string", default: "3" },
      only: { type: "string", default: "exec,in,out" },
      "cpu-prof": { type: "string" },
      strace: { type: "boolean", default: false },
    },
  });
  const dists = (values.dist ?? "dist").split(",").map((d) => path.resolve(d));
  const mb = Number(values.mb);
  const bytes = mb * 2 ** 20;
  const per100 = 100 / mb;
  const kinds = (values.only ?? "").split(",");
  const labs: Lab[] = [];
  const src = path.join(os.tmpdir(), `pdk-relay-src-${process.pid}.bin`);
  const wantHex = await writeRandomFile(src, bytes);
  type Sample = { relay: number; agent: number; client: number; mbps: number };
  const samples = new Map<string, Sample[]>();
  const loads: number[] = [];
  try {
    for (const d of dists) labs.push(await startLab(d, values["cpu-prof"]));
    // `out` downloads what `in` uploaded; without `in` the file is put there directly.
    if (!kinds.includes("in")) for (const lab of labs) await fs.copyFile(src, path.join(lab.dir, "up.bin"));
    const q = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", `head -c ${bytes} /dev/zero | tr '\\0' a`], ["uid", "0"]]);
    const straced = new Set<string>();
    for (let round = 0; round < Number(values.rounds); round++) {
      const order = round % 2 === 0 ? labs : [...labs].reverse();
      for (const lab of order) {
        for (const kind of kinds) {
          const dest = path.join(lab.dir, "up.bin");
          const key = `${kind} ${lab.dist}`;
          const st = values.strace && !straced.has(key) ? { relay: strace(lab.relay.pid as number), agent: strace(lab.agent.pid as number) } : undefined;
          if (st) await new Promise((r) => setTimeout(r, 300));
          loads.push(os.loadavg()[0] as number);
          const r0 = await cpuMs(lab.relay.pid as number), a0 = await cpuMs(lab.agent.pid as number), c0 = process.cpuUsage();
          const t0 = nowMs();
          let ok = true;
          if (kind === "exec") {
            const r = await streamExec({ name: "relay", socketPath: lab.sock }, `/exec?${q}`);
            ok = r.status === 200 && r.payloadBytes === bytes && r.exitCode === 0;
          } else if (kind === "in") {
            ok = (await upload(lab.sock, `/cp?path=${encodeURIComponent(dest)}&mode=binary&uid=0`, src)) === 200;
          } else if (kind === "out") {
            const h = round === 0 ? crypto.createHash("sha256") : undefined;
            const r = await download(lab.sock, `/cp?path=${encodeURIComponent(dest)}&mode=binary&uid=0`, h);
            ok = r.status === 200 && r.bytes === bytes && (h === undefined || h.digest("hex") === wantHex);
          } else {
            // tar of the one file: a 512-byte header, the data, padding to 512, two zero blocks.
            const h = round === 0 ? crypto.createHash("sha256") : undefined;
            const r = await download(lab.sock, `/cp?path=${encodeURIComponent(dest)}&mode=tar&uid=0`, h, 512, bytes);
            ok = r.status === 200 && r.bytes === 512 + Math.ceil(bytes / 512) * 512 + 1024 && (h === undefined || h.digest("hex") === wantHex);
          }
          const ms = nowMs() - t0;
          const c = process.cpuUsage(c0);
          const s: Sample = {
            relay: ((await cpuMs(lab.relay.pid as number)) - r0) * per100,
            agent: ((await cpuMs(lab.agent.pid as number)) - a0) * per100,
            client: ((c.user + c.system) / 1000) * per100,
            mbps: bytes / 1e6 / (ms / 1000),
          };
          if (st) {
            straced.add(key);
            for (const [who, t] of Object.entries(st)) {
              process.stdout.write(`--- strace -c -f ${who}, ${key}\n${(await t.stop()).split("\n").filter((l) => !l.startsWith("strace:")).slice(0, 12).join("\n")}\n`);
            }
          }
          if (!ok) throw new Error(`${key}: transfer failed or not byte-exact`);
          samples.set(key, [...(samples.get(key) ?? []), s]);
        }
      }
    }
  } finally {
    for (const lab of labs) await stopLab(lab);
    await fs.rm(src, { force: true });
  }
  process.stdout.write(`load average (1 min) during the runs: ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}; medians of ${values.rounds}\n`);
  process.stdout.write("| path | build | MB/s | relay CPU ms/100 MiB | agent | client |\n|---|---|---|---|---|---|\n");
  for (const [key, ss] of samples) {
    const [kind, dist] = key.split(" ");
    const m = (f: (s: Sample) => number): string => median(ss.map(f)).toFixed(0);
    process.stdout.write(`| ${kind} | ${dist} | ${median(ss.map((s) => s.mbps)).toFixed(1)} | ${m((s) => s.relay)} | ${m((s) => s.agent)} | ${m((s) => s.client)} |\n`);
  }
}

await main();
