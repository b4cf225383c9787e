/**
 * What one supervisor start made on disk, so a refused start (main.ts `runSupervisor`: the run
 * dir belongs to another state dir, a listener cannot bind, a corrupt registry, …) removes what
 * it made and leaves a state or run dir that existed before as it was. Directories the start
 * created are removed only when empty (rmdir(2), never recursively): a guest-writable tree below
 * them (a tenant's VM files) is never walked. Files and directories it added to a watched
 * host-only directory (`<state>/supervisor`) are removed whole.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { errnoCode } from "../shared/errors.js";

/** The directories, files and new entries of one start, undone in reverse. */
export class StartFootprint {
  /** Directories this start created, parents before children. */
  private readonly dirs: string[] = [];
  /** Files this start created. */
  private readonly files: string[] = [];
  /** Host-only directories watched for new entries: their entries before the start, and names to leave. */
  private readonly watched: { dir: string; before: ReadonlySet<string>; keep: ReadonlySet<string> }[] = [];

  /**
   * `mkdir -p dir` (each created directory with `mode`), recording every directory it created.
   * @throws the mkdir's error (nothing recorded for it).
   */
  async mkdir(dir: string, mode: number): Promise<void> {
    const first = await fs.mkdir(dir, { recursive: true, mode });
    if (first === undefined) return;
    // mkdir -p created `first` and every directory from it down to `dir`.
    const chain: string[] = [];
    for (let d = path.resolve(dir); ; d = path.dirname(d)) {
      chain.unshift(d);
      if (d === path.resolve(first) || d === path.dirname(d)) break;
    }
    this.dirs.push(...chain);
  }

  /** Record a file this start created (absolute path). */
  madeFile(file: string): void {
    this.files.push(file);
  }

  /**
   * Remember the entries `dir` (host-only: nothing a guest writes) holds now; {@link removeEntries}
   * removes the ones added after, except `keep` (removed by their own step, e.g. a held lock).
   * A missing `dir` counts as empty.
   * @throws the readdir's error other than ENOENT.
   */
  async watch(dir: string, keep: readonly string[] = []): Promise<void> {
    const before = await fs.readdir(dir).catch((err: unknown) => {
      if (errnoCode(err) === "ENOENT") return [];
      throw err;
    });
    this.watched.push({ dir, before: new Set(before), keep: new Set(keep) });
  }

  /** Remove the recorded files and what was added to watched directories (best effort, never throws). */
  async removeEntries(): Promise<void> {
    for (const f of [...this.files].reverse()) await fs.rm(f, { force: true }).catch(() => undefined);
    for (const w of [...this.watched].reverse()) {
      const now = await fs.readdir(w.dir).catch(() => [] as string[]);
      for (const name of now) {
        if (w.before.has(name) || w.keep.has(name)) continue;
        await fs.rm(path.join(w.dir, name), { recursive: true, force: true }).catch(() => undefined);
      }
    }
  }

  /**
   * Remove the directories this start created, children first, each only if empty (best effort,
   * never throws): one another process has put something in since stays.
   */
  async removeDirs(): Promise<void> {
    for (const d of [...this.dirs].reverse()) await fs.rmdir(d).catch(() => undefined);
  }
}
