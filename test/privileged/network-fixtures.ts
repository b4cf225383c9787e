/**
 * Fixtures for the tenant network's privileged tests: test hosts in network namespaces we
 * create (addresses only from 198.18.0.0/15), TCP listeners and probes run inside them,
 * and leftover checks. Every fixture returns a cleanup that ends exactly what it started.
 * The pieces the network benchmark shares (ids, blocks, configs, test hosts) live in
 * scripts/lib/net-fixtures.ts and are re-exported here.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { run } from "../../shared/exec.js";
import { aliasPrefix, connLimitTableName, netnsPrefix, tableName } from "../../tenant-daemon/network/names.js";

export { ip4, makeTestHost, randomBlock, randomTenant, tempDir, tenantConfig, type TestHost } from "../../scripts/lib/net-fixtures.js";

/** A running TCP listener (see {@link listen}); `stop` ends its process and waits for it. */
export interface Listener {
  stop(): Promise<void>;
}

const SERVER = "const net=require('net');const [h,p]=process.argv.slice(1);net.createServer(c=>c.end('ok\\n')).listen(Number(p),h,()=>console.log('ready'));";

/**
 * Start a TCP listener answering `ok` to every connection on host:port, in netns `ns` (or
 * the host when undefined), and wait until it listens.
 * @throws Error with its stderr when it exits first or is not ready within 15 s.
 */
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

/** What a tenant still has on the host: aliased links, netns and its tables (the main one or the connection bounds). */
export async function leftovers(tenantId: string): Promise<{ links: string[]; netns: string[]; table: boolean }> {
  const links = JSON.parse((await run("ip", ["-j", "link", "show"])).stdout) as { ifname: string; ifalias?: string }[];
  const nsOut = (await run("ip", ["-j", "netns", "list"])).stdout.trim();
  const netns = (nsOut ? (JSON.parse(nsOut) as { name: string }[]) : []).map((n) => n.name);
  const tables = (await run("nft", ["list", "tables"])).stdout;
  return {
    links: links.filter((l) => l.ifalias?.startsWith(aliasPrefix(tenantId))).map((l) => l.ifname),
    netns: netns.filter((n) => n.startsWith(netnsPrefix(tenantId))),
    table: tables.split("\n").some((l) => [`table inet ${tableName(tenantId)}`, `table inet ${connLimitTableName(tenantId)}`].includes(l.trim())),
  };
}
