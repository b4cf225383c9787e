/**
 * The floor of figure 5's cp-in topology on this machine, without Paddock: a client uploads
 * `--mb` MiB of random bytes through a relay process to a writer process that puts them in a
 * file (Unix sockets, host processes), next to `sh -c 'cat > f' < file` (what figure 5 runs in
 * the VM). Cases, interleaved, order flipping every round:
 *
 * - `cat`: `sh -c 'cat > f'` with the file as stdin.
 * - `net`: the client pipes the file into a `net` socket; the relay pipes socket to socket
 *   (`a.pipe(b)`); the writer gathers the socket's chunks and writes each 1 MiB with one
 *   `writev` behind the reader (as tenant-daemon/agent/write-behind.ts), then answers one byte.
 * - `direct`: the `net` client straight to the `net` writer, no relay (needs `net` in `--only`).
 * - `http`: the same over HTTP as Paddock's path: a chunked POST (scripts/bench/lib/http-load.ts
 *   `uploadFile`), a `node:http` relay (`req.pipe(http.request(…))`, its answer piped back) and
 *   a `node:http` writer (same 1 MiB write-behind).
 * - `tap`: `http` with a relay whose chunked request bodies skip the server's parser (a
 *   prototype, `tapRelay` below).
 * - `rawhttp`: `http`'s client and writer with `net`'s relay between them: what a relay that
 *   passes the request's bytes on without parsing them would reach.
 *
 * Printed: medians of MB/s and CPU ms per 100 MiB of the relay and the writer
 * (/proc/<pid>/stat), with the load average. Every case's file is checked by size; the first
 * round's by sha256.
 *
 *   node dist/scripts/bench/floor-cp-in.js [--mb 100] [--rounds 5] [--only cat,direct,net,rawhttp,tap,http]
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { cpuMs } from "./lib/procs.js";
import { writeRandomFile } from "./lib/random-file.js";
import { nowMs } from "./lib/stats.js";

const BATCH = 1024 * 1024;

/** 1 MiB write-behind of `chunks` into `file`; resolves when all is written. */
function writer(file: string): { add: (c: Buffer) => void; done: () => Promise<void> } {
  const fhP = fs.open(file, "w");
  let batch: Buffer[] = [];
  let size = 0;
  let inFlight: Promise<unknown> = fhP;
  const flush = (): void => {
    const data = batch;
    batch = [];
    size = 0;
    inFlight = inFlight.then(async () => {
      const fh = await fhP;
      let rest = data;
      while (rest.length > 0) {
        let { bytesWritten } = await fh.writev(rest);
        let i = 0;
        while (i < rest.length && bytesWritten >= (rest[i] as Buffer).length) bytesWritten -= (rest[i++] as Buffer).length;
        rest = rest.slice(i);
        if (bytesWritten > 0) rest[0] = (rest[0] as Buffer).subarray(bytesWritten);
      }
    });
  };
  return {
    add: (c) => {
      batch.push(c);
      size += c.length;
      if (size >= BATCH) flush();
    },
    done: async () => {
      flush();
      await inFlight;
      await (await fhP).close();
    },
  };
}

/** Child roles: `relay net|http <listen> <target>` and `writer net|http <listen>`. */
async function child(role: string, kind: string, listen: string, target: string): Promise<void> {
  let server: net.Server | http.Server;
  if (role === "writer" && kind === "net") {
    server = net.createServer({ allowHalfOpen: true }, (s) => {
      let w: ReturnType<typeof writer> | undefined;
      let head = "";
      s.on("data", (c: Buffer) => {
        if (w === undefined) {
          // First line: the file to write.
          const nl = c.indexOf(10);
          head += c.subarray(0, nl < 0 ? c.length : nl).toString();
          if (nl < 0) return;
          w = writer(head);
          c = c.subarray(nl + 1);
        }
        if (c.length > 0) w.add(c);
      });
      s.on("end", () => void w?.done().then(() => s.end("k")));
    });
  } else if (role === "writer") {
    server = http.createServer((req, res) => {
      const w = writer(new URL(req.url ?? "/", "http://x").searchParams.get("path") as string);
      req.on("data", (c: Buffer) => w.add(c));
      req.on("end", () => void w.done().then(() => res.end("{}")));
    });
  } else if (kind === "net") {
    server = net.createServer({ allowHalfOpen: true }, (a) => {
      const b = net.connect({ path: target, allowHalfOpen: true });
      a.pipe(b);
      b.pipe(a);
    });
  } else if (kind === "tap") {
    server = tapRelay(target);
  } else {
    server = http.createServer((req, res) => {
      const up = http.request({ socketPath: target, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      req.pipe(up);
    });
  }
  server.listen(listen, () => process.stdout.write("ready\n"));
  process.once("SIGTERM", () => process.exit(0));
}

/**
 * A prototype, not Paddock's code: a `node:http` relay whose chunked request bodies skip the
 * server's parser. The server's socket is kept off the C++ parser (`_handle._consumed`), the
 * parser is fed each request's head only, and a chunked body's bytes (its framing walked, not
 * otherwise checked) go to the upstream request's socket as they were read; the parser then
 * gets a last chunk so the request ends. No trailers, no pipelining checks, no budget.
 */
function tapRelay(target: string): http.Server {
  type TapSocket = net.Socket & { tapClaim?: (to: net.Socket) => void; tapWant?: () => void };
  const server = http.createServer((req, res) => {
    const up = http.request({ socketPath: target, method: req.method, path: req.url, headers: req.headers, agent: false }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
      ur.on("end", () => up.destroy());
    });
    const sock = req.socket as TapSocket;
    if (req.headers["transfer-encoding"] === "chunked" && sock.tapWant !== undefined) {
      sock.tapWant();
      up.flushHeaders();
      up.once("socket", (s: net.Socket) => process.nextTick(() => sock.tapClaim?.(s)));
    } else req.pipe(up);
  });
  server.prependListener("connection", (so: TapSocket) => {
    (so as unknown as { _handle: { _consumed: boolean } })._handle._consumed = true;
    process.nextTick(() => {
      const parse = so.listeners("data")[0] as (d: Buffer) => void;
      so.removeListener("data", parse);
      let to: net.Socket | undefined;
      let claimed = false;
      let held: Buffer[] = [];
      // Framing walk: 0 = size line, 1 = data, 2 = CRLF after data, 3 = CRLF after the last chunk.
      let state = 0, left = 0, line = "";
      const raw = (d: Buffer): Buffer | undefined => {
        let i = 0;
        while (i < d.length) {
          if (state === 0) {
            const nl = d.indexOf(10, i);
            if (nl < 0) { line += d.toString("latin1", i); i = d.length; break; }
            line += d.toString("latin1", i, nl + 1);
            i = nl + 1;
            left = parseInt(line, 16);
            line = "";
            state = left === 0 ? 3 : 1;
            if (state === 3) left = 2;
          } else if (state === 1) {
            const n = Math.min(left, d.length - i);
            left -= n;
            i += n;
            if (left === 0) { state = 2; left = 2; }
          } else {
            const n = Math.min(left, d.length - i);
            left -= n;
            i += n;
            if (left === 0) {
              if (state === 3) {
                if (to !== undefined && !to.write(d.subarray(0, i))) {
                  so.pause();
                  to.once("drain", () => so.resume());
                }
                state = 0;
                claimed = false;
                to = undefined;
                parse(Buffer.from("0\r\n\r\n"));
                return d.subarray(i);
              }
              state = 0;
            }
          }
        }
        if (to !== undefined && !to.write(d)) {
          so.pause();
          to.once("drain", () => so.resume());
        }
        return undefined;
      };
      so.tapClaim = (s) => {
        to = s;
        const h = held;
        held = [];
        for (const d of h) onData(d);
      };
      const onData = (d: Buffer): void => {
        while (d.length > 0) {
          if (claimed) {
            if (to === undefined) { held.push(d); return; }
            const rest = raw(d);
            if (rest === undefined) return;
            d = rest;
            continue;
          }
          const end = d.indexOf("\r\n\r\n");
          if (end < 0) { parse(d); return; }
          // The request handler runs inside this call and asks for the body raw (tapWant).
          claimPending = true;
          parse(d.subarray(0, end + 4));
          claimed = claimPending && wantsRaw;
          claimPending = false;
          wantsRaw = false;
          d = d.subarray(end + 4);
          if (!claimed) {
            // Not claimed: the rest of this connection goes to the parser as usual.
            so.removeListener("data", onData);
            so.on("data", parse);
            if (d.length > 0) parse(d);
            return;
          }
        }
      };
      let claimPending = false;
      let wantsRaw = false;
      so.tapWant = () => {
        if (claimPending) wantsRaw = true;
      };
      so.on("data", onData);
    });
  });
  return server;
}

function start(args: string[]): Promise<ChildProcess> {
  const c = spawn(process.execPath, [new URL(import.meta.url).pathname, "--child", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    c.stdout?.once("data", () => resolve(c));
    c.once("exit", (code) => reject(new Error(`child ${args.join(" ")} exited ${code}`)));
  });
}

function sendNet(sock: string, src: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path: sock, allowHalfOpen: true });
    s.on("error", reject);
    s.on("data", () => undefined);
    s.on("end", () => resolve());
    s.write(`${dest}\n`);
    createReadStream(src).pipe(s);
  });
}

function sendHttp(sock: string, src: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method: "POST", path: `/cp?path=${encodeURIComponent(dest)}`, headers: { "content-type": "application/octet-stream", "transfer-encoding": "chunked" } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on("error", reject);
    createReadStream(src).pipe(req);
  });
}

function sendCat(src: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    void fs.open(src, "r").then((h) => {
      const c = spawn("sh", ["-c", `cat > '${dest}'`], { stdio: [h.fd, "ignore", "inherit"] });
      c.once("close", (code) => {
        void h.close();
        if (code === 0) resolve();
        else reject(new Error(`cat exited ${code}`));
      });
    }, reject);
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

async function main(): Promise<void> {
  if (process.argv[2] === "--child") {
    const [role, kind, listen, target] = process.argv.slice(3) as [string, string, string, string];
    await child(role, kind, listen, target);
    return;
  }
  const { values } = parseArgs({ options: { mb: { type: "string", default: "100" }, rounds: { type: "string", default: "5" }, only: { type: "string", default: "cat,direct,net,rawhttp,tap,http" } } });
  const bytes = Number(values.mb) * 2 ** 20;
  const per100 = 100 / Number(values.mb);
  const kinds = (values.only ?? "").split(",");
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-floor-"));
  const src = path.join(dir, "src.bin");
  const wantHex = await writeRandomFile(src, bytes);
  const procs: Record<string, { relay: ChildProcess; writer: ChildProcess; sock: string }> = {};
  const samples = new Map<string, { mbps: number; relay: number; writer: number }[]>();
  const loads: number[] = [];
  try {
    for (const k of kinds.filter((k) => k !== "cat" && k !== "direct")) {
      const ws = path.join(dir, `${k}-w.sock`), rs = path.join(dir, `${k}-r.sock`);
      const w = await start(["writer", k === "rawhttp" || k === "tap" ? "http" : k, ws, ""]);
      const r = await start(["relay", k === "rawhttp" ? "net" : k, rs, ws]);
      procs[k] = { relay: r, writer: w, sock: rs };
    }
    for (let round = 0; round < Number(values.rounds); round++) {
      const order = round % 2 === 0 ? kinds : [...kinds].reverse();
      for (const k of order) {
        const dest = path.join(dir, `dest-${k}.bin`);
        await fs.rm(dest, { force: true });
        loads.push(os.loadavg()[0] as number);
        // `direct`: the client straight to the `net` case's writer, no relay.
        const p = k === "direct" ? procs["net"] : procs[k];
        const r0 = p ? await cpuMs(p.relay.pid as number) : 0, w0 = p ? await cpuMs(p.writer.pid as number) : 0;
        const t0 = nowMs();
        if (k === "cat") await sendCat(src, dest);
        else if (k === "net") await sendNet(p?.sock as string, src, dest);
        else if (k === "direct") await sendNet(path.join(dir, "net-w.sock"), src, dest);
        else await sendHttp(p?.sock as string, src, dest);
        const ms = nowMs() - t0;
        const s = { mbps: bytes / 1e6 / (ms / 1000), relay: p ? ((await cpuMs(p.relay.pid as number)) - r0) * per100 : 0, writer: p ? ((await cpuMs(p.writer.pid as number)) - w0) * per100 : 0 };
        if ((await fs.stat(dest)).size !== bytes) throw new Error(`${k}: wrong size`);
        if (round === 0) {
          const h = crypto.createHash("sha256");
          for await (const c of createReadStream(dest)) h.update(c as Buffer);
          if (h.digest("hex") !== wantHex) throw new Error(`${k}: not byte-exact`);
        }
        samples.set(k, [...(samples.get(k) ?? []), s]);
      }
    }
  } finally {
    for (const p of Object.values(procs)) for (const c of [p.relay, p.writer]) c.kill("SIGTERM");
    await fs.rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`load average (1 min): ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}; medians of ${values.rounds}\n`);
  process.stdout.write("| case | MB/s | relay CPU ms/100 MiB | writer CPU ms/100 MiB |\n|---|---|---|---|\n");
  for (const [k, ss] of samples) {
    process.stdout.write(`| ${k} | ${median(ss.map((s) => s.mbps)).toFixed(1)} | ${median(ss.map((s) => s.relay)).toFixed(0)} | ${median(ss.map((s) => s.writer)).toFixed(0)} |\n`);
  }
}

await main();
