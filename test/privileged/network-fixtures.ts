/**
 * Fixtures for the tenant network's privileged tests: test hosts in network namespaces we
 * create (addresses only from 198.18.0.0/15), TCP listeners and probes run inside them,
 * and leftover checks. Every fixture returns a cleanup that ends exactly what it started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { formatIpv4, parseIpv4 } from "../../shared/cidr.js";
import { run } from "../../shared/exec.js";
import { parseTenantConfig, type TenantConfig } from "../../shared/tenant-config.js";
import { aliasPrefix, netnsPrefix, tableName } from "../../tenant-daemon/network/names.js";

/** A fresh tenant id (`t` + 7 random chars). */
export function randomTenant(): string {
  return "t" + randomBytes(8).toString("hex").slice(0, 7);
}

const used = new Set<number>();
/** A random unused /22 (as its base) in 198.19.0.0/16 for VM ranges, or a /30 in 198.18.0.0/16 for test hosts. */
export function randomBlock(kind: "vm22" | "host30"): number {
  for (;;) {
    const base = kind === "vm22" ? (parseIpv4("198.19.0.0") as number) + Math.floor(Math.random() * 64) * 1024 : (parseIpv4("198.18.0.0") as number) + Math.floor(Math.random() * 16384) * 4;
    const key = base >>> 10;
    if (kind === "vm22" ? !used.has(key) : !used.has(base)) {
      used.add(kind === "vm22" ? key : base);
      return base >>> 0;
    }
  }
}

export const ip4 = formatIpv4;

/** A tenant config with the given host groups. */
export function tenantConfig(tenantId: string, hostGroups: unknown[], paddock: Record<string, unknown> = {}): TenantConfig {
  return parseTenantConfig({ config: { host_groups: hostGroups }, paddock: { tenant_id: tenantId, ...paddock } }, "<test>", { baseDir: os.tmpdir(), env: {} });
}

export async function tempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), "pdk-net-"));
}

/** A test host: netns `pth-<id>` linked to the host by veth `pth<id>`; host side .1, test host .2 of a /30. */
export interface TestHost {
  ns: string;
  /** Test host address. */
  ip: string;
  /** Host-side address (on the host's veth end). */
  hostSideIp: string;
  veth: string;
  remove(): Promise<void>;
}

export async function makeTestHost(): Promise<TestHost> {
  const id = randomBytes(4).toString("hex");
  const ns = `pth-${id}`;
  const veth = `pth${id}`;
  const base = randomBlock("host30");
  const hostSideIp = ip4(base + 1);
  const ip = ip4(base + 2);
  const remove = async (): Promise<void> => {
    await run("ip", ["link", "del", veth], { allowFailure: true });
    await run("ip", ["netns", "del", ns], { allowFailure: true });
  };
  try {
    await run("ip", ["netns", "add", ns]);
    await run("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    await run("ip", ["addr", "add", `${hostSideIp}/30`, "dev", veth]);
    await run("ip", ["link", "set", veth, "up"]);
    await run("ip", ["-n", ns, "-batch", "-"], { input: `link set lo up\naddr add ${ip}/30 dev eth0\nlink set eth0 up\nroute add default via ${hostSideIp}\n` });
  } catch (err) {
    await remove();
    throw err;
  }
  return { ns, ip, hostSideIp, veth, remove };
}

/** A TCP listener answering `ok` to every connection, in `ns` (or the host when undefined). */
export interface Listener {
  stop(): Promise<void>;
}

const SERVER = "const net=require('net');const [h,p]=process.argv.slice(1);net.createServer(c=>c.end('ok\\n')).listen(Number(p),h,()=>console.log('ready'));";

export async function listen(ns: string | undefined, host: string, port: number): Promise<Listener> {
  const argv = ns === undefined ? [process.execPath, "-e", SERVER, host, String(port)] : ["ip", "netns", "exec", ns, process.execPath, "-e", SERVER, host, String(port)];
  const child: ChildProcess = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += String(d)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`listener ${host}:${port} not ready: ${stderr}`)), 15_000);
    child.stdout?.on("data", (d: Buffer) => {
      if (String(d).includes("ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`listener ${host}:${port} exited ${code}: ${stderr}`));
    });
  }).catch(async (err: unknown) => {
    child.kill("SIGKILL");
    await exited;
    throw err;
  });
  return {
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

const CLIENT = "const net=require('net');const [h,p,ms]=process.argv.slice(1);const c=net.connect({host:h,port:Number(p)});" +
  "setTimeout(()=>{console.log('timeout');process.exit(2)},Number(ms));" +
  "c.on('data',d=>{console.log(String(d).trim());process.exit(0)});c.on('error',e=>{console.log('error '+e.code);process.exit(3)});";

/**
 * Connect from inside `ns` (or the host) to host:port: `ok` when the listener answered,
 * `timeout` when packets were dropped, `error <code>` otherwise.
 */
export async function probe(ns: string | undefined, host: string, port: number, timeoutMs = 1500): Promise<string> {
  const argv = ns === undefined ? [process.execPath, "-e", CLIENT, host, String(port), String(timeoutMs)] : ["netns", "exec", ns, process.execPath, "-e", CLIENT, host, String(port), String(timeoutMs)];
  const r = await run(ns === undefined ? process.execPath : "ip", ns === undefined ? argv.slice(1) : argv, { allowFailure: true, timeoutMs: timeoutMs + 15_000 });
  return r.stdout.trim();
}

/** What a tenant still has on the host: aliased links, netns and its table. */
export async function leftovers(tenantId: string): Promise<{ links: string[]; netns: string[]; table: boolean }> {
  const links = JSON.parse((await run("ip", ["-j", "link", "show"])).stdout) as { ifname: string; ifalias?: string }[];
  const nsOut = (await run("ip", ["-j", "netns", "list"])).stdout.trim();
  const netns = (nsOut ? (JSON.parse(nsOut) as { name: string }[]) : []).map((n) => n.name);
  const tables = (await run("nft", ["list", "tables"])).stdout;
  return {
    links: links.filter((l) => l.ifalias?.startsWith(aliasPrefix(tenantId))).map((l) => l.ifname),
    netns: netns.filter((n) => n.startsWith(netnsPrefix(tenantId))),
    table: tables.split("\n").some((l) => l.trim() === `table inet ${tableName(tenantId)}`),
  };
}
