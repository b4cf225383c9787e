/**
 * Process facts both apps need, read from the kernel: whether a pid is alive, and where
 * this installation of Paddock lives.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PaddockError } from "./errors.js";

/**
 * The fields of a /proc/<pid>/stat line from field 3 (the state letter) on, split on spaces
 * (pure): `pid (comm) S …`, where comm may hold spaces and `)`, so the split starts after the
 * last `)` (proc(5)). Field N of proc(5) is index N − 3.
 */
export function procStatFields(raw: string): string[] {
  return raw.slice(raw.lastIndexOf(")") + 2).split(" ");
}

/**
 * True when a process with this pid exists and is not a zombie (EPERM counts as alive). A
 * zombie holds no lock or file: a killed owner whose parent has not reaped it yet (an
 * orphan under a PID 1 that reaps late) must not keep its state locked.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    const state = procStatFields(readFileSync(`/proc/${pid}/stat`, "utf8"))[0];
    return state !== "Z" && state !== "X";
  } catch {
    return true; // no procfs (or raced with the exit): trust kill(0)
  }
}

/**
 * The project root: the nearest ancestor of `startDir` holding a package.json named
 * "paddock" (from dist/shared/ that is two levels up). Built artefacts (`dist/bin`,
 * `dist/toolbox`) and the seccomp profile are found from it.
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when there is none (a broken install).
 */
export function findProjectRoot(startDir = path.dirname(fileURLToPath(import.meta.url))): string {
  let dir = startDir;
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name === "paddock") return dir;
      } catch {
        // not ours
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `cannot find Paddock's project root (package.json) above ${startDir}`);
    dir = parent;
  }
}
