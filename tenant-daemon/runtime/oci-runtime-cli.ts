/**
 * One OCI runtime binary (runc or crun) as a command line: every call goes through
 * shared/exec.ts `run()` with a timeout, and failures become PaddockError ERR_RUNTIME_FAILED
 * carrying the runtime's stderr. Holds no state beyond which binary to run; the sandboxes'
 * state lives in the runtime's own root (`/run/runc`, `/run/crun`).
 */
import { promises as fs } from "node:fs";
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import { trimStderr, type RunResult } from "../../shared/exec.js";
import { runCommand as run } from "../vm/spawn-server.js";
import type { RuntimeState, RuntimeStatus } from "./driver.js";
import type { OciRuntimeName } from "./oci-host.js";

/** `runc state` JSON (the fields Paddock reads). */
export interface RuncStateJson {
  id: string;
  /** Host pid of the sandbox's init (0 once stopped). */
  pid: number;
  /** `created`, `running`, `pausing`, `paused` or `stopped`. */
  status: string;
  /** Absolute path of the bundle directory. */
  bundle: string;
}

/** The runtime binary and how to call it. */
export class OciRuntimeCli {
  /**
   * @param name - `runc`, `crun` or `runsc` (appears in error messages and log file names).
   * @param binary - absolute path of the runtime binary.
   * @param timeoutMs - timeout of each command run through {@link exec}, ms.
   */
  constructor(
    readonly name: OciRuntimeName | "runsc",
    readonly binary: string,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Run the runtime with `args`. A non-zero exit throws unless `allowFailure`.
   * @throws PaddockError ERR_RUNTIME_FAILED with its stderr (also on a timeout, naming the command).
   */
  async exec(args: string[], opts: { allowFailure?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    try {
      return await run(this.binary, args, { timeoutMs: opts.timeoutMs ?? this.timeoutMs, allowFailure: opts.allowFailure, errorCode: "ERR_RUNTIME_FAILED" });
    } catch (err) {
      if (isPaddockError(err, "ERR_EXEC_TIMEOUT")) {
        throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} ${args.join(" ")}: ${err.message}`, { cause: err, details: err.details });
      }
      throw err;
    }
  }

  /** The ERR_RUNTIME_FAILED error for a failed `<runtime> <what> <id>` (message and details carry its trimmed stderr). */
  fail(what: string, id: string, result: RunResult): PaddockError {
    const stderr = trimStderr(result.stderr);
    return new PaddockError("ERR_RUNTIME_FAILED", `${this.name} ${what} ${id} failed (exit ${result.exitCode}): ${stderr}`, {
      details: { command: `${this.binary} ${what} ${id}`, exitCode: result.exitCode, stderr },
    });
  }

  /**
   * `<runtime> <verb> <id>` that must succeed (start, pause, resume).
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  async verb(verb: string, id: string): Promise<void> {
    const r = await this.exec([verb, id], { allowFailure: true });
    if (r.exitCode !== 0) throw this.fail(verb, id, r);
  }

  /**
   * `runc state <id>` as JSON; undefined when the runtime knows no such id.
   * @throws PaddockError ERR_RUNTIME_FAILED on any other failure.
   */
  async rawState(id: string): Promise<RuncStateJson | undefined> {
    const r = await this.exec(["state", id], { allowFailure: true });
    if (r.exitCode !== 0) {
      // runc: "container does not exist"; crun: "... No such file or directory".
      if (/does not exist|not exist|no such file/i.test(r.stderr)) return undefined;
      throw this.fail("state", id, r);
    }
    return JSON.parse(r.stdout) as RuncStateJson;
  }

  /**
   * The sandbox's state as the driver interface reports it: `pausing` counts as `running`,
   * unknown statuses as `stopped`, an unknown id as `absent`; the pid only while not stopped.
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  async state(id: string): Promise<RuntimeState> {
    const raw = await this.rawState(id);
    if (raw === undefined) return { status: "absent", pid: undefined };
    const status: RuntimeStatus =
      raw.status === "created" || raw.status === "running" || raw.status === "paused" || raw.status === "stopped"
        ? raw.status
        : raw.status === "pausing"
          ? "running"
          : "stopped";
    return { status, pid: status === "stopped" || !(raw.pid > 0) ? undefined : raw.pid };
  }

  /**
   * Ids from `runc list --format json` that start with `prefix`, sorted.
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  async list(prefix: string): Promise<string[]> {
    const r = await this.exec(["list", "--format", "json"]);
    const parsed = JSON.parse(r.stdout.trim() === "" ? "null" : r.stdout) as { id: string }[] | null;
    return (parsed ?? []).map((c) => c.id).filter((id) => id.startsWith(prefix)).sort();
  }
}

/** Error and warning messages of a runtime JSON log (`--log-format json`), trimmed to the tail; "" when the log is unreadable. */
export async function readRuntimeLog(logPath: string): Promise<string> {
  let text: string;
  try {
    text = await fs.readFile(logPath, "utf8");
  } catch {
    return "";
  }
  const msgs: string[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.msg !== undefined && entry.level !== "debug" && entry.level !== "info") msgs.push(entry.msg);
    } catch {
      msgs.push(line);
    }
  }
  return trimStderr(msgs.join("\n"));
}
