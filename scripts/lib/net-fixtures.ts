/**
 * Network fixtures shared by the tenant network's privileged tests (through
 * test/privileged/network-fixtures.ts) and scripts/bench/network-bench.ts: random tenant ids
 * and address blocks (only from 198.18.0.0/15), parsed tenant configs, temp dirs, and test
 * hosts in network namespaces we create. A test host's `remove` ends exactly what it started.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { formatIpv4, parseIpv4 } from "../../shared/cidr.js";
import { run } from "../../shared/exec.js";
import { parseTenantConfig, type TenantConfig } from "../../shared/tenant-config.js";

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

/** An IPv4 address as a number (0..2^32-1) → dotted quad (shared/cidr.ts `formatIpv4`). */
export const ip4 = formatIpv4;

/**
 * A tenant config with the given host groups (Slicer YAML shape) and extra `paddock:` keys,
 * parsed by the daemon's own parser (relative paths against the OS temp dir).
 * @throws PaddockError ERR_CONFIG_INVALID as the parser does.
 */
export function tenantConfig(tenantId: string, hostGroups: unknown[], paddock: Record<string, unknown> = {}): TenantConfig {
  return parseTenantConfig({ config: { host_groups: hostGroups }, paddock: { tenant_id: tenantId, ...paddock } }, "<test>", { baseDir: os.tmpdir(), env: {} });
}

/** A fresh `pdk-net-*` dir under the OS temp dir; the caller removes it. */
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

/**
 * Create a test host (netns, veth pair, addresses, default route via the host side).
 * @throws Error from ip(8), after removing what it had made.
 */
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
