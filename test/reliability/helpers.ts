/**
 * Shared checks of the reliability suite: the leak checker (scripts/leaks.sh), host leftovers
 * under a dir, state-file schema checks and RSS sampling. The supervisor itself is
 * test/helpers/supervisor.ts (`TestSupervisor`, child mode with `realDaemonConfig`: every
 * supervisor gets a random /20 of 198.18.0.0/15 as its pool, so parallel runs by others in
 * 169.254.0.0/16 never overlap).
 */
import { existsSync, promises as fs, readFileSync } from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { execa } from "execa";
import { CLI_MAIN, LEAKS_SH } from "../helpers/supervisor.js";
import { TEST_IMAGE_DIR } from "../helpers/prerequisites.js";

/** Root, the base image and a build: the suite's preconditions. */
export const privilegedReady = process.getuid?.() === 0 && existsSync(path.join(TEST_IMAGE_DIR, "debian-12")) && existsSync(CLI_MAIN);

/** A short random tenant id (`r` + 6 chars). */
export function rid(prefix = "r"): string {
  return prefix + crypto.randomBytes(4).toString("hex").slice(0, 6);
}

export { sleepMs, until } from "../helpers/wait.js";

/**
 * What scripts/leaks.sh lists for a tenant (list mode). Asserts the script's contract too:
 * exit 0 with "no Paddock leftovers" when clean, 1 with one line per leftover otherwise.
 * @returns the leftover lines (empty when clean).
 */
export async function leaksOf(tenantId: string): Promise<string[]> {
  const r = await execa(LEAKS_SH, ["--tenant", tenantId], { reject: false });
  if (r.exitCode === 0) {
    if (!/no Paddock leftovers/.test(r.stdout)) throw new Error(`leaks.sh exit 0 without its clean line: ${r.stdout}`);
    return [];
  }
  if (r.exitCode !== 1) throw new Error(`leaks.sh failed (${r.exitCode}): ${r.stderr}`);
  return r.stdout.split("\n").filter((l) => l.trim() !== "");
}

/** Everything mounted at or below `dir`, and loop devices backed by files below it. */
export async function hostLeftoversUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const mi = await fs.readFile("/proc/self/mountinfo", "utf8");
  for (const l of mi.split("\n")) {
    const mp = l.split(" ")[4] ?? "";
    if (mp.startsWith(dir + "/")) out.push(`mount ${mp}`);
  }
  for (const name of await fs.readdir("/sys/block").catch(() => [] as string[])) {
    if (!name.startsWith("loop")) continue;
    const backing = (await fs.readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "")).trim();
    if (backing.startsWith(dir + "/")) out.push(`loop ${name} ${backing}`);
  }
  return out;
}

/** A VM record as the daemon's state file holds it (the fields the suite relies on). */
interface VmRecordShape {
  hostname: string;
  hostGroup: string;
  index: number;
  persistent: boolean;
  ipCidr: string;
  /** A warm-pool VM, not handed out yet. */
  pooled?: boolean;
}

/**
 * Parse and check a tenant daemon's state.json (schema version 1). `vms` are the handed-out
 * VMs, each named at or below its group's counter; `warm` the warm-pool VMs (names above the
 * counter are theirs until handed out).
 * @throws Error naming the first problem.
 */
export function checkDaemonState(text: string, tenantId: string): { vms: Record<string, VmRecordShape>; warm: Record<string, VmRecordShape>; counters: Record<string, number> } {
  const s = JSON.parse(text) as { schemaVersion?: unknown; tenantId?: unknown; vms?: unknown; counters?: unknown };
  if (s.schemaVersion !== 1) throw new Error(`schemaVersion ${String(s.schemaVersion)}`);
  if (s.tenantId !== tenantId) throw new Error(`tenantId ${String(s.tenantId)}`);
  if (typeof s.vms !== "object" || s.vms === null || typeof s.counters !== "object" || s.counters === null) throw new Error("vms/counters missing");
  for (const [h, v] of Object.entries(s.vms as Record<string, VmRecordShape>)) {
    if (v.hostname !== h || typeof v.hostGroup !== "string" || !Number.isInteger(v.index) || typeof v.persistent !== "boolean" || typeof v.ipCidr !== "string") throw new Error(`bad VM record ${h}: ${JSON.stringify(v)}`);
    if (!h.startsWith(`${v.hostGroup}-`)) throw new Error(`VM ${h} not named after its group ${v.hostGroup}`);
    if (v.pooled === true) continue;
    const c = (s.counters as Record<string, number>)[v.hostGroup];
    if (c === undefined || c < v.index) throw new Error(`counter of ${v.hostGroup} (${String(c)}) below VM index ${v.index}`);
  }
  const all = Object.entries(s.vms as Record<string, VmRecordShape>);
  return {
    vms: Object.fromEntries(all.filter(([, v]) => v.pooled !== true)),
    warm: Object.fromEntries(all.filter(([, v]) => v.pooled === true)),
    counters: s.counters as Record<string, number>,
  };
}

/** A tenant record of the registry (fields the suite relies on). */
export interface RegistryTenant {
  id: string;
  status: string;
  blocks: Array<{ hostGroup: string; cidr: string }>;
  tokens: Array<{ id: string; hash: string; revokedAt?: string; expiresAt?: string }>;
  daemon: { pid?: number; state: string; restarts: number };
}

/**
 * Parse and check the supervisor registry (schema version 1): ids match keys, blocks unique.
 * @throws Error naming the first problem.
 */
export function checkRegistry(text: string): Record<string, RegistryTenant> {
  const s = JSON.parse(text) as { schemaVersion?: unknown; tenants?: Record<string, RegistryTenant> };
  if (s.schemaVersion !== 1 || typeof s.tenants !== "object" || s.tenants === null) throw new Error("registry schema");
  const blocks = new Set<string>();
  for (const [id, t] of Object.entries(s.tenants)) {
    if (t.id !== id) throw new Error(`registry key ${id} holds ${t.id}`);
    for (const b of t.blocks) {
      if (blocks.has(b.cidr)) throw new Error(`block ${b.cidr} given twice`);
      blocks.add(b.cidr);
    }
  }
  return s.tenants;
}

/**
 * Run rounds `fn(0)` … `fn(rounds - 1)` of a test in `lanes` concurrent lanes (lane k runs rounds
 * k, k + lanes, … in order), for rounds that share nothing (their own tenant, dirs and range).
 * Every lane runs to its end even when another fails, so nothing runs on into the after hooks.
 * @throws the first round's error, once all lanes have ended.
 */
export async function inLanes(rounds: number, lanes: number, fn: (round: number) => Promise<void>): Promise<void> {
  const ends = await Promise.allSettled(Array.from({ length: lanes }, async (_, lane) => {
    for (let i = lane; i < rounds; i += lanes) await fn(i);
  }));
  const failed = ends.find((e): e is PromiseRejectedResult => e.status === "rejected");
  if (failed) throw failed.reason;
}

/** Resident set size of a pid, bytes (0 when gone). */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runc containers, netns and links of a tenant that exist right now (via leaks.sh). */
export async function expectNoLeaks(tenantId: string, extraDirs: readonly string[] = []): Promise<string[]> {
  const lines = await leaksOf(tenantId);
  for (const d of extraDirs) lines.push(...(await hostLeftoversUnder(d)));
  return lines;
}
