/**
 * The floors Paddock is measured against: an OCI bundle identical to a Paddock VM's (rendered
 * by tenant-daemon/runtime/oci-spec.ts renderOciSpec with the same toolbox binds, namespaces
 * and cgroup limits, the same user namespace setup over an idmapped image) over an overlay of
 * the base image, but running tini → `/bin/true`; run
 * with `runc run`, or step by step (create, start, delete) to show what each runc call costs.
 * Also `runc exec` and `nsenter` into a running sandbox. Everything it makes (overlay mount,
 * container, cgroup dirs, temp dir) is removed by {@link FloorBundle.dispose}.
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { run } from "../../../shared/exec.js";
import { renderOciSpec, GUEST_NODE_PATH, GUEST_TINI_PATH } from "../../../tenant-daemon/runtime/oci-spec.js";
import { defaultToolbox, hostHasSwapAccounting, removeCgroupDirs } from "../../../tenant-daemon/runtime/oci-driver.js";
import { idmapBind } from "../../../tenant-daemon/runtime/nsutil.js";
import { loadSeccompProfile } from "../../../tenant-daemon/runtime/seccomp.js";
import { nowMs } from "./stats.js";

/** What of the sandbox boundary a floor bundle keeps (see {@link FloorBundle.prepare}). */
export type FloorBoundary = "full" | "seccomp" | "userns" | "none";

/** The floor's id range: below the ranges daemons claim (shared/uid-ranges.ts starts at 2e9). */
const FLOOR_RANGE = { uidStart: 1_800_000_000, size: 65_536 };
import { spawnTimed } from "./procs.js";

/**
 * The process of the floor of any guest agent written in Node (figures 1 and 8): tini → the
 * toolbox's node serving HTTP on a Unix socket (a fresh name per run: runs of one bundle share
 * its rootfs), exiting 0 once it listens. Pass to {@link FloorBundle.prepare}.
 */
export const NODE_AGENT_FLOOR_ARGS: readonly string[] = [
  GUEST_TINI_PATH,
  "--",
  GUEST_NODE_PATH,
  "-e",
  `require("node:http").createServer((q, r) => r.end("{}")).listen("/tmp/floor-" + Math.random().toString(36).slice(2) + ".sock", () => process.exit(0));`,
];

/** Spawn with all stdio ignored (a detached sandbox must not hold our pipes); ms to exit. */
export function spawnQuiet(argv: readonly string[]): Promise<{ ms: number; code: number | null }> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const c = spawn(argv[0] as string, argv.slice(1), { stdio: "ignore" });
    c.once("error", reject);
    c.once("exit", (code) => resolve({ ms: nowMs() - t0, code }));
  });
}

/** A floor bundle over an overlay of `<imageDir>/rootfs`. Create with {@link FloorBundle.prepare}. */
export class FloorBundle {
  readonly dir: string;
  readonly rootfs: string;
  readonly cgroupParent: string;
  private mounted = false;
  private lowerMounted = false;
  private readonly made: string[] = [];
  private seq = 0;
  /** config.json's text, once {@link runOnce} has read it. */
  private spec: string | undefined;

  private constructor(dir: string, cgroupParent: string) {
    this.dir = dir;
    this.rootfs = path.join(dir, "rootfs");
    this.cgroupParent = cgroupParent;
  }

  /**
   * Mount the overlay and write config.json (tini → /bin/true, or `args`). `boundary` picks what
   * of the sandbox boundary the bundle keeps, to measure its cost at the runtime: `full` (a
   * Paddock VM's: user and cgroup namespaces, seccomp, no_new_privs), `seccomp` or `userns` only,
   * or `none`.
   */
  static async prepare(imageRootfs: string, args: readonly string[] = [GUEST_TINI_PATH, "--", "/bin/true"], boundary: FloorBoundary = "full"): Promise<FloorBundle> {
    const tag = crypto.randomBytes(3).toString("hex");
    const dir = await fs.mkdtemp("/tmp/pdkfloor-");
    const b = new FloorBundle(dir, `/paddock/bfloor${tag}`);
    try {
      // As a Paddock VM: guest root is FLOOR_RANGE's first uid, the image is bound idmapped.
      await fs.chmod(dir, 0o711);
      for (const d of ["rootfs", "upper", "work", "agent", "lower"]) await fs.mkdir(path.join(dir, d), { recursive: true });
      await fs.chown(path.join(dir, "upper"), FLOOR_RANGE.uidStart, FLOOR_RANGE.uidStart);
      await idmapBind(imageRootfs, path.join(dir, "lower"), FLOOR_RANGE);
      b.lowerMounted = true;
      await run("mount", ["-t", "overlay", "overlay", "-o", `nosuid,nodev,lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work`, b.rootfs]);
      b.mounted = true;
      const spec = renderOciSpec(
        {
          id: "floor",
          hostname: "floor",
          cpus: 1,
          ramBytes: 512 * 2 ** 20,
          pidsLimit: 1024,
          rootfsDir: b.rootfs,
          bundleDir: dir,
          bootDir: path.join(dir, "agent"), agentSocketPath: path.join(dir, "agent.sock"), userns: { path: undefined, ...FLOOR_RANGE },
          netnsPath: undefined,
          consoleLogPath: path.join(dir, "console.log"),
          cgroupPath: `${b.cgroupParent}/floor`,
          args,
        },
        defaultToolbox(),
        { swapAccounting: hostHasSwapAccounting(), ...(boundary === "full" || boundary === "seccomp" ? { seccomp: loadSeccompProfile() } : {}) },
      );
      if (boundary === "none" || boundary === "seccomp") {
        const linux = spec.linux as Partial<typeof spec.linux>;
        linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== "user" && n.type !== "cgroup");
        delete linux.uidMappings;
        delete linux.gidMappings;
        spec.process.noNewPrivileges = false;
      }
      await fs.writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
      return b;
    } catch (err) {
      await b.dispose();
      throw err;
    }
  }

  private nextId(): string {
    const id = `bfloor-${path.basename(this.dir).slice(-6)}-${++this.seq}`;
    this.made.push(id);
    return id;
  }

  /**
   * `runc run` the bundle in the foreground until its process exits (tini → /bin/true, or the
   * `args` given to {@link prepare}). Each run gets a cgroup of its own (`<cgroupParent>/<id>`,
   * in a config.json copy under `runs/<id>` over the same rootfs, written before the clock
   * starts), so concurrent runs never join one cgroup that the first to exit removes.
   * @returns ms. @throws Error when runc exits non-zero.
   */
  async runOnce(): Promise<number> {
    const id = this.nextId();
    // The bundle's config.json, read once (prepare wrote it; each run changes only its cgroup).
    this.spec ??= await fs.readFile(path.join(this.dir, "config.json"), "utf8");
    const spec = JSON.parse(this.spec) as { linux: { cgroupsPath?: string } };
    spec.linux.cgroupsPath = `${this.cgroupParent}/${id}`;
    const bundle = path.join(this.dir, "runs", id);
    await fs.mkdir(bundle, { recursive: true });
    await fs.writeFile(path.join(bundle, "config.json"), JSON.stringify(spec));
    const r = await spawnTimed(["runc", "run", "--bundle", bundle, id]);
    return r.ms;
  }

  /**
   * The same as separate runc calls: `create` (namespaces, mounts, cgroup; init waits),
   * `start` (exec tini), then wait for it to stop and `delete`. Each call's ms.
   */
  async steps(): Promise<{ createMs: number; startMs: number; stateMs: number; deleteMs: number }> {
    const id = this.nextId();
    const c = await spawnQuiet(["runc", "create", "--bundle", this.dir, id]);
    if (c.code !== 0) throw new Error(`runc create ${id} exited ${c.code}`);
    const s = await spawnQuiet(["runc", "start", id]);
    let stateMs = NaN;
    for (let i = 0; i < 200; i++) {
      const st = await spawnTimed(["runc", "state", id], { allowFailure: true });
      if (Number.isNaN(stateMs)) stateMs = st.ms;
      if (st.code !== 0 || /"status":\s*"stopped"/.test(st.stdout)) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const d = await spawnQuiet(["runc", "delete", "-f", id]);
    return { createMs: c.ms, startMs: s.ms, stateMs, deleteMs: d.ms };
  }

  /** Remove every container this bundle made, the cgroup dirs, the overlay and the temp dir. */
  async dispose(): Promise<void> {
    for (const id of this.made) await run("runc", ["delete", "-f", id], { allowFailure: true }).catch(() => undefined);
    for (const id of this.made) await removeCgroupDirs(`${this.cgroupParent}/${id}`).catch(() => undefined);
    await removeCgroupDirs(`${this.cgroupParent}/floor`).catch(() => undefined);
    await removeCgroupDirs(this.cgroupParent).catch(() => undefined);
    if (this.mounted) await run("umount", [this.rootfs], { allowFailure: true }).catch(() => undefined);
    if (this.lowerMounted) await run("umount", [path.join(this.dir, "lower")], { allowFailure: true }).catch(() => undefined);
    await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** `runc exec <id> argv…` timed (stdout collected). */
export function runcExec(id: string, argv: readonly string[]): Promise<{ ms: number; stdout: string }> {
  return spawnTimed(["runc", "exec", id, ...argv]);
}

/** Host pid of a sandbox's init (`runc state`). */
export async function sandboxPid(id: string): Promise<number> {
  const r = await run("runc", ["state", id]);
  return (JSON.parse(r.stdout) as { pid: number }).pid;
}

/** Pids of every process in a sandbox (`runc ps --format json`). */
export async function sandboxPids(id: string): Promise<number[]> {
  const r = await run("runc", ["ps", "--format", "json", id], { allowFailure: true });
  try {
    return JSON.parse(r.stdout) as number[];
  } catch {
    return [];
  }
}

/** `nsenter` into every namespace of `pid` (mount, uts, ipc, net, pid) and run argv; ms. */
export function nsenterExec(pid: number, argv: readonly string[]): Promise<{ ms: number; stdout: string }> {
  return spawnTimed(["nsenter", "-t", String(pid), "-m", "-u", "-i", "-n", "-p", "--", ...argv]);
}
