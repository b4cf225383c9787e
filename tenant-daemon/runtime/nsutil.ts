/**
 * Node side of `paddock-nsutil` (tenant-daemon/runtime/native/paddock-nsutil.c, built to
 * `dist/bin/paddock-nsutil` by `npm run build`): user-namespace pins, idmapped mounts and the
 * agent listener handed to a sandbox. Every call is one short spawn (about 5 ms), through the
 * daemon's command runner (tenant-daemon/vm/spawn-server.ts).
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { runCommand as run } from "../vm/spawn-server.js";
import { findProjectRoot } from "../../shared/proc.js";
import type { UidRange } from "../../shared/uid-ranges.js";

const TIMEOUT_MS = 15_000;

/**
 * Absolute path of the built helper (`<project>/dist/bin/paddock-nsutil`).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when it was not built.
 */
export function nsutilPath(): string {
  // Found from the project root, not this module's directory: in the daemon's bundle
  // (scripts/build-daemon-bundle.ts) every module's URL is the bundle's.
  const p = path.join(findProjectRoot(), "dist", "bin", "paddock-nsutil");
  if (!existsSync(p)) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `${p} is missing; run \`npm run build\` (needs a C compiler: apt-get install gcc)`);
  return p;
}

/**
 * Create a VM's user namespace (ids 0..size-1 → `range.uidStart`..) and a network namespace
 * owned by it, pinned at `usernsFile` and `netnsFile` (neither may exist). The netns file is the
 * one `ip netns` uses (`/var/run/netns/<name>`), so `ip -n <name>` and `ip netns del` work on it.
 * `options.disableIpv6`: the same run sets `net.ipv6.conf.default.disable_ipv6=1` in the new
 * netns (a kernel without IPv6 skips it), so links made in it later start without IPv6 and no
 * `nsenter … sysctl` spawn is needed; loopback keeps ::1.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED with the helper's stderr (nothing left behind).
 */
export async function pinUserAndNetns(usernsFile: string, netnsFile: string, range: UidRange, options: { disableIpv6?: boolean } = {}): Promise<void> {
  await Promise.all([fs.mkdir(path.dirname(usernsFile), { recursive: true, mode: 0o700 }), fs.mkdir(path.dirname(netnsFile), { recursive: true, mode: 0o755 })]);
  const args = ["pin", usernsFile, netnsFile, String(range.uidStart), String(range.size), ...(options.disableIpv6 === true ? ["noipv6"] : [])];
  await run(nsutilPath(), args, { timeoutMs: TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
}

/**
 * Remove a namespace pin made by {@link pinUserAndNetns} (lazy unmount, then unlink); a missing
 * file is fine. The namespace itself goes when its last user does.
 * @throws PaddockError ERR_RUNTIME_FAILED when the file stays.
 */
export async function unpinNamespace(file: string): Promise<void> {
  await run("umount", ["-l", file], { timeoutMs: TIMEOUT_MS, allowFailure: true });
  try {
    await fs.unlink(file);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return;
    throw new PaddockError("ERR_RUNTIME_FAILED", `cannot remove namespace pin ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Bind `src` at `dst` read-only, nosuid, nodev, showing on-disk ids 0..size-1 as
 * `range.uidStart`.. (an idmapped mount; `dst` must be an existing directory).
 * @throws PaddockError ERR_STORAGE_FAILED (kernel or filesystem without idmapped mounts, …)
 */
export async function idmapBind(src: string, dst: string, range: UidRange): Promise<void> {
  await run(nsutilPath(), ["idmap", src, dst, String(range.uidStart), String(range.size)], { timeoutMs: TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
}

/**
 * argv prefix that makes the idmapped bind of {@link idmapBind} (`src` at `dst`) and then runs
 * a command, in one process: `[helper, "idmap", src, dst, uidStart, size]`, followed by the
 * command. When the bind fails the command does not run (exit 1, the reason on stderr).
 */
export function idmapPrefix(src: string, dst: string, range: UidRange): string[] {
  return [nsutilPath(), "idmap", src, dst, String(range.uidStart), String(range.size)];
}

/**
 * argv prefix that runs a command with a listening Unix socket bound at `socketPath` (mode
 * 0600, must not exist) as its fd 3: `[helper, "listen", socketPath]`, followed by the command.
 */
export function listenPrefix(socketPath: string): string[] {
  return [nsutilPath(), "listen", socketPath];
}

/**
 * argv prefix that runs a command with its stdout and stderr on a pipe read by a detached
 * `paddock-nsutil logcap` reader (its own session, reparented to init): the reader appends to
 * `file` and rotates it to `<file>.1` … `<file>.<keep>` whenever it reaches `rotateBytes`, so
 * at most `(keep + 1) × rotateBytes` bytes are kept; it exits once every process holding the
 * pipe (the command and whatever inherits its stdio, e.g. a detached sandbox) has exited.
 * `file`'s directory must exist and be host-only. Followed by the command.
 */
export function logcapPrefix(file: string, rotateBytes: number, keep: number): string[] {
  return [nsutilPath(), "logcap", file, String(Math.max(1, Math.floor(rotateBytes))), String(keep)];
}

/**
 * argv prefix that runs a command (runsc) in a private mount namespace where `/proc/sys/net` is
 * hidden, so runsc 0.0~20221219 starts its netstack on Linux ≥ 6.11 (docs/gvisor-findings.md
 * §3.3): `[helper, "hidesysctl", scratchDir]`, followed by the command. `scratchDir` must be an
 * existing host-only directory (the helper mounts a proc instance below it, in its namespace only).
 */
export function hideSysctlPrefix(scratchDir: string): string[] {
  return [nsutilPath(), "hidesysctl", scratchDir];
}
