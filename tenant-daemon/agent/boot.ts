/**
 * `boot.json`: what the daemon tells the guest agent before the VM starts. Written by the
 * daemon into a host-only directory (`<runDir>/vms/<hostname>/boot/boot.json`, owned by the
 * VM's root, mode 0600) that is bound read-only into the guest at `/run/paddock-agent`.
 *
 * Format (snake_case, JSON):
 * ```json
 * {"hostname":"sbox-1","userdata":"#!/bin/sh\n…"|null,
 *  "default_user":{"name":"slicer","uid":1000,"gid":1000,"home":"/home/slicer"}|null,
 *  "secrets_dir":"/run/slicer/secrets","agent_version":"0.1.0",
 *  "resolv_conf":"nameserver …\n"|null,"agent_proof":"<64 hex>",
 *  "egress_proxy":{"env":{"HTTPS_PROXY":"http://169.254.169.250:3128",…},"ca_pem":"-----BEGIN CERTIFICATE-----…"}|null}
 * ```
 * `egress_proxy` (proxy-mode VMs, tenant-daemon/network/egress-proxy-wiring.ts): the environment
 * every exec and shell starts with, and the tenant's proxy CA certificate the agent installs
 * into the guest's trust store (egress-env.ts).
 * `resolv_conf` is written by the agent to the guest's /etc/resolv.conf (with /etc/hostname)
 * from inside the VM. `agent_proof` is a per-boot secret the agent sends back in
 * {@link AGENT_PROOF_HEADER} on every answer, so the daemon can check that an answer comes from
 * this VM's agent (tenant-daemon/agent-client/agent-endpoint.ts).
 */
import { readFileSync, renameSync, openSync, closeSync, fchownSync, rmSync, writeSync } from "node:fs";
import path from "node:path";

/** The default non-root account as the daemon knows it (null ⇒ agent looks up uid 1000, else root). */
export interface BootDefaultUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** Parsed `boot.json`. */
export interface AgentBootConfig {
  hostname: string;
  /** First-boot script (userdata), or null for none. */
  userdata: string | null;
  default_user: BootDefaultUser | null;
  /** Guest directory secrets are written to, normally `/run/slicer/secrets` (docs/slicer-api.md#secrets). */
  secrets_dir: string;
  agent_version: string;
  /** Content of the guest's /etc/resolv.conf, or null to leave the image's. */
  resolv_conf: string | null;
  /** Per-boot secret echoed in {@link AGENT_PROOF_HEADER}; "" ⇒ no header (host-process tests). */
  agent_proof: string;
  /** Proxy mode: session environment and the proxy CA (PEM); null ⇒ none. */
  egress_proxy: BootEgressProxy | null;
}

/** boot.json `egress_proxy`. */
export interface BootEgressProxy {
  env: Record<string, string>;
  ca_pem: string;
}

/** Largest CA PEM accepted in boot.json. */
const MAX_CA_PEM_BYTES = 64 * 1024;

function parseEgressProxy(v: unknown): BootEgressProxy | null {
  if (v === undefined || v === null) return null;
  if (!isRecord(v) || !isRecord(v.env) || typeof v.ca_pem !== "string") throw new Error("boot.json: egress_proxy must be {env: object, ca_pem: string} or null");
  const env: Record<string, string> = {};
  for (const [k, val] of Object.entries(v.env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof val !== "string" || /[\0\n\r'"\\$`]/.test(val)) throw new Error(`boot.json: egress_proxy.env.${k} is not a plain NAME=value`);
    env[k] = val;
  }
  if (!v.ca_pem.startsWith("-----BEGIN CERTIFICATE-----") || Buffer.byteLength(v.ca_pem) > MAX_CA_PEM_BYTES) throw new Error("boot.json: egress_proxy.ca_pem must be a PEM certificate of at most 64 KiB");
  return { env, ca_pem: v.ca_pem };
}

/** Response header carrying {@link AgentBootConfig.agent_proof} on every agent answer (101 included). */
export const AGENT_PROOF_HEADER = "x-paddock-agent-proof";

/** The file name inside the agent directory. */
export const BOOT_FILE_NAME = "boot.json";
/** The socket name inside the agent directory. */
export const AGENT_SOCKET_NAME = "agent.sock";
/** Default guest secrets directory (Slicer's). */
export const DEFAULT_SECRETS_DIR = "/run/slicer/secrets";

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Validate a parsed boot.json value.
 * @throws Error naming the first bad field.
 */
export function parseBootConfig(value: unknown): AgentBootConfig {
  if (!isRecord(value)) throw new Error("boot.json: expected a JSON object");
  const { hostname, userdata, default_user: du, secrets_dir: sd, agent_version: av, resolv_conf: rc, agent_proof: proof, egress_proxy: egress } = value;
  if (typeof hostname !== "string" || hostname === "") throw new Error("boot.json: hostname must be a non-empty string");
  if (userdata !== null && userdata !== undefined && typeof userdata !== "string") throw new Error("boot.json: userdata must be a string or null");
  let defaultUser: BootDefaultUser | null = null;
  if (du !== null && du !== undefined) {
    if (!isRecord(du)) throw new Error("boot.json: default_user must be an object or null");
    const { name, uid, gid, home } = du;
    if (typeof name !== "string" || !Number.isInteger(uid) || !Number.isInteger(gid) || typeof home !== "string") {
      throw new Error("boot.json: default_user needs name (string), uid, gid (integers), home (string)");
    }
    defaultUser = { name, uid: uid as number, gid: gid as number, home };
  }
  if (sd !== undefined && (typeof sd !== "string" || !sd.startsWith("/"))) throw new Error("boot.json: secrets_dir must be an absolute path");
  if (rc !== undefined && rc !== null && typeof rc !== "string") throw new Error("boot.json: resolv_conf must be a string or null");
  if (proof !== undefined && (typeof proof !== "string" || !/^[0-9a-f]*$/.test(proof))) throw new Error("boot.json: agent_proof must be a hex string");
  return {
    hostname,
    userdata: typeof userdata === "string" && userdata !== "" ? userdata : null,
    default_user: defaultUser,
    secrets_dir: typeof sd === "string" ? sd : DEFAULT_SECRETS_DIR,
    agent_version: typeof av === "string" && av !== "" ? av : "0.0.0",
    resolv_conf: typeof rc === "string" ? rc : null,
    agent_proof: typeof proof === "string" ? proof : "",
    egress_proxy: parseEgressProxy(egress),
  };
}

/**
 * Read and validate `<agentDir>/boot.json` (agent side).
 * @throws Error when missing or invalid.
 */
export function readBootConfig(agentDir: string): AgentBootConfig {
  const file = path.join(agentDir, BOOT_FILE_NAME);
  return parseBootConfig(JSON.parse(readFileSync(file, "utf8")) as unknown);
}

/**
 * Write `<bootDir>/boot.json` (daemon side, before the VM starts): a fresh file, mode 0600,
 * owned by `owner` (the VM's root on the host, so the guest's root can read it through the
 * read-only bind and nobody else in the guest can), renamed into place. Not fsynced: the file
 * lives in the run dir, is rewritten on every boot and read only by a sandbox started after
 * this returns (a host crash ends the sandbox too), and the daemon calls this synchronously, so
 * an fsync would stall every other request on a loaded disk. `bootDir` must exist and be
 * host-only.
 * @throws Error from the filesystem or when `config` is invalid.
 */
export function writeAgentBootConfig(bootDir: string, config: AgentBootConfig, owner?: { uid: number; gid: number }): void {
  const checked = parseBootConfig(config);
  const file = path.join(bootDir, BOOT_FILE_NAME);
  const tmp = `${file}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, JSON.stringify(checked) + "\n");
    if (owner !== undefined) fchownSync(fd, owner.uid, owner.gid);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
