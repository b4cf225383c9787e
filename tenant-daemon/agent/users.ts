/**
 * Guest users: `/etc/passwd` lookups, the uid/gid convention
 * (docs/slicer-api.md#guest-users-and-paths) and path resolution (`~` expansion, absolute paths
 * only, no NUL bytes).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { badRequest, queryInt } from "./http-util.js";

/** A guest account. */
export interface GuestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** The identity a request runs as (after `uid`/`gid` resolution). */
export interface Identity {
  uid: number;
  gid: number;
  /** Account name, or the uid as a string when unknown. */
  name: string;
  /** Home directory; `/` when the account is unknown. */
  home: string;
}

/** Go's `NonRootUser` = math.MaxUint32 (https://github.com/slicervm/sdk/blob/master/types.go). */
export const NON_ROOT_SENTINEL = 4294967295;

/**
 * Parse `/etc/passwd` text into accounts (`name:x:uid:gid:gecos:home:shell`); malformed
 * lines are skipped.
 */
export function parsePasswd(text: string): GuestUser[] {
  const out: GuestUser[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || line.startsWith("#")) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0] as string, uid, gid, home: f[5] || "/", shell: f[6] || "/bin/sh" });
  }
  return out;
}

/** Reads accounts from a passwd file on every lookup (users may be added by userdata). */
export class UserDirectory {
  /**
   * @param sessionEnv - variables every exec and shell session starts with, under the request's
   *   own `env` (boot.json `egress_proxy.env`: the egress proxy of a proxy-mode VM).
   */
  constructor(
    private readonly passwdPath: string,
    private readonly configuredDefault: GuestUser | null,
    readonly sessionEnv: Readonly<Record<string, string>> = {},
  ) {}

  private users(): GuestUser[] {
    try {
      return parsePasswd(readFileSync(this.passwdPath, "utf8"));
    } catch {
      return [];
    }
  }

  /** Account by uid, if any. */
  byUid(uid: number): GuestUser | undefined {
    return this.users().find((u) => u.uid === uid);
  }

  /**
   * The default non-root user: boot.json's `default_user`, else uid 1000 from passwd,
   * else root (Slicer's images use `ubuntu`, 1000:1000; Paddock's, `slicer`).
   */
  defaultUser(): GuestUser {
    if (this.configuredDefault) return this.configuredDefault;
    return this.byUid(1000) ?? this.byUid(0) ?? { name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/sh" };
  }

  /**
   * Resolve the `uid`/`gid` query parameters: absent or 4294967295 ⇒ default
   * user; `0` ⇒ root. A uid without gid takes that account's primary gid (or gid = uid);
   * a gid without uid keeps the default user's uid.
   * @throws PaddockError 400 for values that are not integers in [0, 2^32-1].
   */
  resolve(q: URLSearchParams): Identity {
    const rawUid = queryInt(q, "uid");
    const rawGid = queryInt(q, "gid");
    for (const [n, v] of [["uid", rawUid], ["gid", rawGid]] as const) {
      if (v !== undefined && (v < 0 || v > NON_ROOT_SENTINEL)) throw badRequest(`${n} out of range`, "ERR_QUERY_INVALID");
    }
    const def = this.defaultUser();
    const uidGiven = rawUid !== undefined && rawUid !== NON_ROOT_SENTINEL;
    const gidGiven = rawGid !== undefined && rawGid !== NON_ROOT_SENTINEL;
    const uid = uidGiven ? rawUid : def.uid;
    const account = uid === def.uid ? def : this.byUid(uid);
    const gid = gidGiven ? rawGid : uidGiven ? (account?.gid ?? uid) : def.gid;
    return { uid, gid, name: account?.name ?? String(uid), home: account?.home ?? "/" };
  }
}

/**
 * Resolve a guest path from a request: rejects NUL bytes and relative paths, expands `~`
 * and `~/…` against `home`, and normalises `.`/`..` (the agent runs inside the guest's mount
 * namespace, so normalisation cannot reach host paths; docs/security.md).
 * @throws PaddockError ERR_PATH_INVALID (400).
 */
export function resolveGuestPath(raw: string | null, home: string, what = "path"): string {
  if (raw === null || raw === "") throw badRequest(`${what} is required`, "ERR_PATH_INVALID");
  if (raw.includes("\0")) throw badRequest(`${what} contains a NUL byte`, "ERR_PATH_INVALID");
  let p = raw;
  if (p === "~") p = home;
  else if (p.startsWith("~/")) p = path.posix.join(home, p.slice(2));
  if (!p.startsWith("/")) throw badRequest(`${what} must be absolute (or start with ~): ${JSON.stringify(raw)}`, "ERR_PATH_INVALID");
  const trailingSlash = p.length > 1 && p.endsWith("/");
  const norm = path.posix.normalize(p);
  return trailingSlash && !norm.endsWith("/") ? norm + "/" : norm;
}

/**
 * Resolve an exec `cwd` (`~` allowed, `..` refused).
 * @throws PaddockError ERR_PATH_INVALID (400).
 */
export function resolveCwd(raw: string | null, home: string): string {
  if (raw === null || raw === "") return home;
  if (raw.split("/").includes("..")) throw badRequest(`cwd must not contain '..': ${JSON.stringify(raw)}`, "ERR_PATH_INVALID");
  const p = resolveGuestPath(raw, home, "cwd");
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}
