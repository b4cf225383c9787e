/**
 * Test fixture for the guest agent: runs the real agent program as a host process with
 * PADDOCK_AGENT_DIR pointing at a fresh temp dir, and talks HTTP to its Unix socket.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { AgentEndpoint } from "../../tenant-daemon/agent-client/agent-endpoint.js";

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/tenant-daemon/agent/main.js */
export const AGENT_MAIN = path.resolve(here, "../../tenant-daemon/agent/main.js");
/** dist/toolbox/agent.cjs: the bundle VMs run (scripts/build-agent-bundle.ts). */
export const AGENT_BUNDLE = path.resolve(here, "../../toolbox/agent.cjs");

/** A running test agent. */
export interface TestAgent {
  dir: string;
  socket: string;
  /** How the daemon reaches this agent: its socket and the proof its answers carry. */
  endpoint: AgentEndpoint;
  secretsDir: string;
  guardPath: string;
  proc: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** Options for {@link startTestAgent}. */
export interface TestAgentOptions {
  userdata?: string | null;
  defaultUser?: { name: string; uid: number; gid: number; home: string } | null;
  /** Reverse channel: the host listener the agent dials (PADDOCK_AGENT_DIAL) instead of listening. */
  dial?: string;
  /** Run the bundle ({@link AGENT_BUNDLE}) instead of the compiled module graph; a string: that path to the loader (e.g. through a symlink). */
  bundle?: boolean | string;
  /** The per-boot proof; default: a fresh random one. */
  proof?: string;
}

/** Start the agent and wait until it listens (raced against its exit). */
export async function startTestAgent(opts: TestAgentOptions = {}): Promise<TestAgent> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "pdk-agent-"));
  const proof = opts.proof ?? randomBytes(32).toString("hex");
  const secretsDir = path.join(dir, "secrets");
  const guardPath = path.join(dir, "guard", "userdata-ran");
  writeFileSync(
    path.join(dir, "boot.json"),
    JSON.stringify({
      hostname: "test-vm-1",
      userdata: opts.userdata ?? null,
      default_user: opts.defaultUser === undefined ? { name: "nobody", uid: 65534, gid: 65534, home: "/" } : opts.defaultUser,
      secrets_dir: secretsDir,
      agent_version: "0.1.0-test",
      agent_proof: proof,
    }),
  );
  const dialEnv = opts.dial === undefined ? {} : { PADDOCK_AGENT_DIAL: opts.dial };
  const proc = spawn(process.execPath, [typeof opts.bundle === "string" ? opts.bundle : opts.bundle === true ? AGENT_BUNDLE : AGENT_MAIN], {
    env: { ...process.env, PADDOCK_AGENT_DIR: dir, PADDOCK_AGENT_USERDATA_GUARD: guardPath, ...dialEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout?.on("data", (c: Buffer) => (out += c.toString()));
  proc.stderr?.on("data", (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start within 20 s: ${out}`)), 20_000);
    const onData = (): void => {
      if (out.includes("listening on") || out.includes(": dialing ")) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout?.on("data", onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code}: ${out}`));
    });
  });
  return {
    dir,
    socket: path.join(dir, "agent.sock"),
    endpoint: { hostname: "test-vm-1", socketPath: path.join(dir, "agent.sock"), proof },
    secretsDir,
    guardPath,
    proc,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A buffered HTTP answer. */
export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json: () => unknown;
}

/** One HTTP request over a Unix socket; `body` may be a Buffer, string or stream. */
export function call(
  socketPath: string,
  method: string,
  urlPath: string,
  options: { body?: Buffer | string | Readable; headers?: http.OutgoingHttpHeaders } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: options.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        const text = body.toString("utf8");
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json: () => JSON.parse(text) as unknown });
      });
    });
    req.on("error", reject);
    const b = options.body;
    if (b === undefined) req.end();
    else if (typeof b === "string" || Buffer.isBuffer(b)) req.end(b);
    else b.pipe(req);
  });
}

/** Parse an NDJSON body into frames, asserting every line ends in `\n`. */
export function ndjson(text: string): Record<string, unknown>[] {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("NDJSON body does not end in a newline");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Peak resident set size of a process in bytes (VmHWM). */
export function peakRssBytes(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Current resident set size of a process in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}
