/**
 * The audit log (issue 4 §4): admin actions and tenants' VM creates/deletes, one JSON object
 * per line in `<state>/supervisor/audit.log` (mode 0600, append-only).
 */
import { promises as fs } from "node:fs";
import { errnoCode } from "../shared/errors.js";

/** One audit entry. */
export interface AuditEntry {
  time: string;
  /** `admin` or `tenant:<id>`. */
  actor: string;
  /** e.g. `tenant.create`, `token.revoke`, `vm.create`. */
  action: string;
  tenant?: string;
  requestId?: string;
  /** HTTP status of the action's answer. */
  status?: number;
  details?: Record<string, unknown>;
}

/** Appends and reads audit entries; writes are serialised in this process. */
export class AuditLog {
  private chain: Promise<void> = Promise.resolve();

  constructor(readonly file: string) {}

  /** Append an entry (never throws; a failing audit write is reported through `onError`). */
  record(entry: Omit<AuditEntry, "time">, onError?: (err: unknown) => void): Promise<void> {
    const line = JSON.stringify({ time: new Date().toISOString(), ...entry }) + "\n";
    this.chain = this.chain.then(() => fs.appendFile(this.file, line, { mode: 0o600 })).catch((err: unknown) => onError?.(err));
    return this.chain;
  }

  /** The newest `limit` entries (oldest first), optionally of one tenant or action prefix. */
  async read(filter: { tenant?: string; action?: string; limit: number }): Promise<AuditEntry[]> {
    await this.chain;
    let text: string;
    try {
      text = await fs.readFile(this.file, "utf8");
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return [];
      throw err;
    }
    const out: AuditEntry[] = [];
    for (const line of text.split("\n")) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as AuditEntry;
        if (filter.tenant !== undefined && e.tenant !== filter.tenant) continue;
        if (filter.action !== undefined && !e.action.startsWith(filter.action)) continue;
        out.push(e);
      } catch {}
    }
    return out.slice(-filter.limit);
  }
}
