/**
 * Proxy mode inside the guest (boot.json `egress_proxy`, tenant-daemon/network/egress-proxy-wiring.ts),
 * done by the agent from inside the VM so the host never writes a guest path:
 *
 * 1. `/etc/profile.d/paddock-egress-proxy.sh`: the proxy variables for login shells (exec and
 *    shell sessions get them from the agent directly: users.ts `sessionEnv`);
 * 2. the tenant's proxy CA into the trust store: `/usr/local/share/ca-certificates/
 *    paddock-egress-proxy.crt` (kept by every later `update-ca-certificates`), appended at once
 *    to `/etc/ssl/certs/ca-certificates.crt` (what curl and OpenSSL read) unless already there,
 *    then `update-ca-certificates` in the background for the hashed directory
 *    (update-ca-certificates(8)); `NODE_EXTRA_CA_CERTS` in the session environment points
 *    node at the same file.
 *
 * Failures are reported and the agent serves anyway: the guest's root may have made these paths odd.
 */
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { BootEgressProxy } from "./boot.js";

/** The CA's file name under the local CA directory. */
export const EGRESS_CA_FILE = "paddock-egress-proxy.crt";
/** The local CA directory of Debian's ca-certificates, relative to the guest's root. */
const LOCAL_CA_DIR = "usr/local/share/ca-certificates";

/** The session environment of a proxy-mode guest: boot.json's, plus node's extra CA file. */
export function egressSessionEnv(egress: BootEgressProxy | null, root = "/"): Record<string, string> {
  if (egress === null) return {};
  return { ...egress.env, NODE_EXTRA_CA_CERTS: path.join(root, LOCAL_CA_DIR, EGRESS_CA_FILE) };
}

/**
 * Apply proxy mode under `etcDir` (the guest's /etc; its parent is taken as the guest's root).
 * @param log - one line per failure.
 */
export function applyEgressProxy(etcDir: string, egress: BootEgressProxy, log: (line: string) => void): void {
  const root = path.dirname(etcDir);
  const env = egressSessionEnv(egress, root);
  try {
    mkdirSync(path.join(etcDir, "profile.d"), { recursive: true, mode: 0o755 });
    // Values are checked plain (boot.ts: no quotes, `$`, backslashes or newlines): single quotes are safe.
    const lines = Object.entries(env).map(([k, v]) => `export ${k}='${v}'`);
    writeFileSync(path.join(etcDir, "profile.d", "paddock-egress-proxy.sh"), `# Written by Paddock (egress proxy)\n${lines.join("\n")}\n`, { mode: 0o644 });
  } catch (err) {
    log(`writing profile.d/paddock-egress-proxy.sh failed: ${message(err)}`);
  }
  const pem = egress.ca_pem.endsWith("\n") ? egress.ca_pem : `${egress.ca_pem}\n`;
  try {
    const dir = path.join(root, LOCAL_CA_DIR);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileSync(path.join(dir, EGRESS_CA_FILE), pem, { mode: 0o644 });
    const bundle = path.join(etcDir, "ssl", "certs", "ca-certificates.crt");
    if (existsSync(bundle) && !readFileSync(bundle, "utf8").includes(pem.trim())) appendFileSync(bundle, pem);
  } catch (err) {
    log(`installing the egress proxy CA failed: ${message(err)}`);
    return;
  }
  const update = spawn("update-ca-certificates", [], { stdio: "ignore", detached: false });
  update.on("error", (err) => log(`update-ca-certificates: ${message(err)}`));
  update.on("exit", (code) => {
    if (code !== 0) log(`update-ca-certificates exited with ${code ?? "a signal"}`);
  });
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
