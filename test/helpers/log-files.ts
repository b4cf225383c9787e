/**
 * Probes of the bounded log files (the `paddock-nsutil logcap` reader writes and rotates the
 * daemons' and the VMs' logs; tenant-daemon/runtime/native/paddock-nsutil.c): who writes a
 * file, and how big a file is.
 */
import { promises as fs } from "node:fs";

/** Pids of `paddock-nsutil logcap` readers writing `file` (from /proc). */
export async function logcapReaders(file: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const argv = (await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv[0]?.endsWith("paddock-nsutil") && argv[1] === "logcap" && argv[2] === file) out.push(Number(pid));
  }
  return out;
}

/** The size of `file` in bytes, or `ifMissing` when it cannot be read. */
export function fileSize(file: string, ifMissing: number): Promise<number> {
  return fs.stat(file).then((s) => s.size, () => ifMissing);
}
