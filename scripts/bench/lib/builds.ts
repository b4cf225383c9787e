/**
 * The Paddock builds a bench run measures: the current tree (this checkout's dist/) and, with
 * `--baseline <git-ref>`, that commit built in a git worktree of its own under
 * `/var/tmp/paddock-bench-baseline/<sha>` (`PADDOCK_BENCH_BASELINE_DIR` moves it): `npm ci` and
 * `npm run build` once per commit, then reused (a `.paddock-bench-built` file marks a finished
 * build; a half-built dir is removed and built again). Each build starts its own processes from
 * its own dist/: the supervisor from `dist/cli/paddock.js`, which spawns daemons from its own
 * `dist/tenant-daemon/launch.js` (supervisor/supervisor-config.ts), and a daemon alone the way
 * that supervisor would: `node <its DAEMON_NODE_FLAGS> launch.js` when the build has the bundle
 * (shared/daemon-node-flags.ts at that commit), else `node main.js`.
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import lockfile from "proper-lockfile";
import { run } from "../../../shared/exec.js";
import { DAEMON_NODE_FLAGS } from "../../../shared/daemon-node-flags.js";
import { DAEMON_MAIN, PROJECT_ROOT } from "../../lib/daemon-harness.js";

/** Where baseline builds are cached, one dir per commit. */
export const BASELINE_CACHE = process.env.PADDOCK_BENCH_BASELINE_DIR ?? "/var/tmp/paddock-bench-baseline";
const BUILT_MARKER = ".paddock-bench-built";

/** One build of Paddock the bench can start processes from. */
export interface PaddockBuild {
  /** `current` (this checkout) or `baseline` (`--baseline <ref>`). */
  name: "current" | "baseline";
  /** Project root of the build (has package.json and dist/). */
  root: string;
  /** Commit (40 hex), and the ref it was named by. */
  commit: string;
  ref: string;
  /** The commit's subject line. */
  subject: string;
  /** True when the current tree has uncommitted changes outside the bench's own output (the baseline never has; {@link treeDirty}). */
  dirty: boolean;
  /** `dist/cli/paddock.js` (`paddock up` runs the supervisor). */
  cli: string;
  /** `dist/tenant-daemon/main.js` (the ESM entry; `purge` works with either entry). */
  daemonMain: string;
  /** node arguments before `up|purge <config>` for a daemon alone, as the build's supervisor spawns it. */
  daemonArgv: string[];
}

/** Where a build's processes start from (a subset of {@link PaddockBuild}). */
export type BuildPaths = Pick<PaddockBuild, "root" | "cli" | "daemonMain" | "daemonArgv">;

/**
 * How this checkout's supervisor runs a tenant daemon (supervisor/daemon-process.ts): the bundled
 * `dist/tenant-daemon/launch.js` under DAEMON_NODE_FLAGS. node arguments before `up <config>`.
 */
export const CURRENT_DAEMON_ARGV: readonly string[] = Object.freeze([...DAEMON_NODE_FLAGS, path.join(PROJECT_ROOT, "dist/tenant-daemon/launch.js")]);

/** This checkout's paths, known without asking git. */
export const CURRENT_PATHS: BuildPaths = Object.freeze({ root: PROJECT_ROOT, cli: path.join(PROJECT_ROOT, "dist/cli/paddock.js"), daemonMain: DAEMON_MAIN, daemonArgv: [...CURRENT_DAEMON_ARGV] });

/**
 * How the build at `root` runs a tenant daemon: its own V8 flags and the bundled `launch.js`
 * when it has them, else `main.js` without flags (builds before the bundle). The environment it
 * runs with is read per build the same way: scripts/lib/daemon-harness.ts `daemonEnvOf`.
 */
export async function daemonArgvOf(root: string): Promise<string[]> {
  const launch = path.join(root, "dist/tenant-daemon/launch.js");
  const flagsFile = path.join(root, "dist/shared/daemon-node-flags.js");
  if (!existsSync(launch)) return [path.join(root, "dist/tenant-daemon/main.js")];
  let flags: readonly string[] = [];
  if (existsSync(flagsFile)) {
    const mod = (await import(pathToFileURL(flagsFile).href)) as { DAEMON_NODE_FLAGS?: readonly string[] };
    flags = mod.DAEMON_NODE_FLAGS ?? [];
  }
  return [...flags, launch];
}

async function git(args: readonly string[], cwd = PROJECT_ROOT): Promise<string> {
  return (await run("git", ["-C", cwd, ...args], { timeoutMs: 120_000 })).stdout.trim();
}

async function buildAt(name: PaddockBuild["name"], root: string, ref: string, dirty: boolean): Promise<PaddockBuild> {
  const commit = await git(["rev-parse", "HEAD"], root);
  return {
    name,
    root,
    commit,
    ref,
    subject: await git(["log", "-1", "--format=%s", commit], root),
    dirty,
    cli: path.join(root, "dist/cli/paddock.js"),
    daemonMain: path.join(root, "dist/tenant-daemon/main.js"),
    daemonArgv: await daemonArgvOf(root),
  };
}

/**
 * What the bench itself writes into the tree, relative to the repository root: the page
 * `--write-docs` (write-docs.ts) renders and the run results (run.ts). A change there says
 * nothing about the dist/ that was measured, so {@link treeDirty} ignores exactly these.
 */
export const BENCH_OUTPUT_PATHS: readonly string[] = Object.freeze(["docs/benchmarks.md", "bench-results"]);

/**
 * True when the checkout at `root` has uncommitted changes to tracked files other than
 * {@link BENCH_OUTPUT_PATHS} (`git status --porcelain --untracked-files=no` with those paths
 * excluded by top-level pathspecs, https://git-scm.com/docs/gitglossary#Documentation/gitglossary.txt-exclude).
 * @throws when git fails (not a repository).
 */
export async function treeDirty(root: string = PROJECT_ROOT): Promise<boolean> {
  const excludes = BENCH_OUTPUT_PATHS.map((p) => `:(top,exclude)${p}`);
  return (await git(["status", "--porcelain", "--untracked-files=no", "--", ":(top)", ...excludes], root)).length > 0;
}

/** The build of this checkout (its dist/ is what `npm run bench` just built). */
export async function currentBuild(): Promise<PaddockBuild> {
  return buildAt("current", PROJECT_ROOT, "HEAD", await treeDirty());
}

/**
 * Resolve `ref` in this repository and return its build, building it first when the cache has
 * none: `git worktree add --detach <cache>/<sha> <sha>`, `npm ci`, `npm run build` (its own
 * postbuild: agent and daemon bundles). One bench at a time builds a given commit (a lock file
 * next to its dir). A failed build leaves no dir behind.
 * @throws Error naming the step that failed (its output's tail) or an unknown ref.
 */
export async function prepareBaseline(ref: string, log: (msg: string) => void): Promise<PaddockBuild> {
  const sha = await git(["rev-parse", "--verify", "--end-of-options", `${ref}^{commit}`]).catch((err: unknown) => {
    throw new Error(`--baseline ${ref}: not a commit in ${PROJECT_ROOT}: ${(err as Error).message}`);
  });
  await fs.mkdir(BASELINE_CACHE, { recursive: true });
  const dir = path.join(BASELINE_CACHE, sha);
  const lockTarget = path.join(BASELINE_CACHE, `${sha}.lock-target`);
  await fs.writeFile(lockTarget, "", { flag: "a" });
  const release = await lockfile.lock(lockTarget, { stale: 60_000, update: 10_000, retries: { retries: 600, minTimeout: 1000, maxTimeout: 1000 } });
  try {
    if (existsSync(path.join(dir, BUILT_MARKER))) {
      log(`baseline ${ref} = ${sha.slice(0, 12)}: cached build in ${dir}`);
      return await buildAt("baseline", dir, ref, false);
    }
    await removeWorktree(dir);
    log(`baseline ${ref} = ${sha.slice(0, 12)}: git worktree add ${dir}`);
    try {
      // -f: a dir removed by hand leaves its worktree registered.
      await git(["worktree", "add", "-f", "--detach", dir, sha]);
      log("baseline: npm ci");
      await run("npm", ["ci", "--no-audit", "--no-fund"], { cwd: dir, timeoutMs: 1_800_000 });
      log("baseline: npm run build");
      await run("npm", ["run", "build"], { cwd: dir, timeoutMs: 1_800_000 });
      await fs.writeFile(path.join(dir, BUILT_MARKER), `${new Date().toISOString()}\n`);
    } catch (err) {
      await removeWorktree(dir);
      throw new Error(`building baseline ${ref} (${sha.slice(0, 12)}) failed: ${(err as Error).message.slice(-3000)}`);
    }
    return await buildAt("baseline", dir, ref, false);
  } finally {
    await release();
  }
}

/** Remove a baseline worktree (registered or not) and its dir. */
async function removeWorktree(dir: string): Promise<void> {
  await run("git", ["-C", PROJECT_ROOT, "worktree", "remove", "--force", dir], { allowFailure: true, timeoutMs: 120_000 });
  await fs.rm(dir, { recursive: true, force: true });
}
