/**
 * Output for people (aligned tables, key/value blocks, progress on a TTY) and scripts (`--json`).
 */
import type { Writable } from "node:stream";

/**
 * An aligned text table: one header row, columns separated by three spaces, no trailing spaces.
 * Pure. Cells are printed as given (newlines replaced by spaces).
 */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const clean = (s: string) => s.replace(/[\r\n\t]+/g, " ");
  const all = [headers.map(clean), ...rows.map((r) => headers.map((_, i) => clean(r[i] ?? "")))];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => [...(r[i] ?? "")].length)));
  return (
    all
      .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c + " ".repeat((widths[i] ?? 0) - [...c].length))).join("   ").trimEnd())
      .join("\n") + "\n"
  );
}

/**
 * The line a command prints when it found its subject in the state it was asked for and did
 * nothing (exit 0): `SUBJECT is already STATE; OUTCOME` and a newline. Pure.
 * @param subject - what was asked about, e.g. a VM hostname or `tenant t1`.
 * @param state - the state it was in, e.g. `paused`, `suspended (reason)`.
 * @param outcome - what was not done; default `nothing done`.
 */
export function alreadyLine(subject: string, state: string, outcome = "nothing done"): string {
  return `${subject} is already ${state}; ${outcome}\n`;
}

/**
 * The line of a `paddock vm pause` or `suspend` whose VM had been paused or suspended by its host
 * group's idle rule (the daemon's `Paddock-Idle-Claimed` header, shared/slicer/vm-power.ts): it is
 * the user's now, so requests no longer wake it, and how to undo it (pure).
 */
export function idleClaimedLine(hostname: string, action: "pause" | "suspend"): string {
  return action === "pause"
    ? `${hostname} was idle-paused; now paused by you: requests no longer wake it (they answer 409 ERR_VM_PAUSED); resume with \`paddock vm resume ${hostname}\`\n`
    : `${hostname} was idle-suspended; now suspended by you: requests no longer restore it; restore with \`paddock vm restore ${hostname}\`\n`;
}

/** `key: value` lines with aligned values (pure). */
export function renderKeyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k}:${" ".repeat(width - k.length + 1)}${v}`).join("\n") + "\n";
}

/** Human byte size with binary units: `512 B`, `1.0 KiB`, `4.0 GiB` (pure). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** Age of an RFC3339 timestamp relative to `nowMs`: `45s`, `12m`, `3h`, `2d` (pure). */
export function formatAge(timestamp: string | undefined, nowMs: number): string {
  if (!timestamp) return "-";
  const t = Date.parse(timestamp);
  if (!Number.isFinite(t) || t <= 0) return "-";
  const s = Math.max(0, Math.round((nowMs - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

/** JSON for scripts: pretty, newline-terminated. */
export function renderJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}

/**
 * A one-line progress indicator on a TTY stream (redrawn in place with `\r`); a no-op on
 * anything else, so pipes and logs stay clean.
 */
export class Progress {
  private readonly tty: boolean;
  private timer: NodeJS.Timeout | undefined;
  private last = "";
  private readonly startedMs = Date.now();

  constructor(private readonly stream: Writable & { isTTY?: boolean; columns?: number }) {
    this.tty = stream.isTTY === true;
  }

  /** Seconds since creation, one decimal. */
  elapsed(): string {
    return `${((Date.now() - this.startedMs) / 1000).toFixed(1)}s`;
  }

  /** Redraw the line now. */
  update(text: string): void {
    if (!this.tty) return;
    const width = Math.max(20, (this.stream.columns || 80) - 1); // 0 columns: a TTY without a window size
    const line = text.length > width ? text.slice(0, width) : text;
    this.stream.write(`\r${line}${" ".repeat(Math.max(0, this.last.length - line.length))}`);
    this.last = line;
  }

  /** Redraw `render()` every `intervalMs` until {@link done}. */
  every(intervalMs: number, render: () => string): void {
    if (!this.tty) return;
    this.update(render());
    this.timer = setInterval(() => this.update(render()), intervalMs);
  }

  /** Stop redrawing and clear the line (or leave `finalText` on it). */
  done(finalText?: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.tty) return;
    if (finalText !== undefined) this.stream.write(`\r${finalText}${" ".repeat(Math.max(0, this.last.length - finalText.length))}\n`);
    else if (this.last !== "") this.stream.write(`\r${" ".repeat(this.last.length)}\r`);
    this.last = "";
  }
}
