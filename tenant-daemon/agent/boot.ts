/**
 * `boot.json`: what the daemon tells the guest agent before the VM starts. Written by the
 * daemon into the host side of the agent directory (`<runDir>/vms/<hostname>/boot.json`),
 * read by the agent at `/run/paddock-agent/boot.json` (brief, issue 3).
 *
 * Format (snake_case, JSON):
 * ```json
 * {"hostname":"sbox-1","userdata":"#!/bin/sh\n…"|null,
 *  "default_user":{"name":"slicer","uid":1000,"gid":1000,"home":"/home/slicer"}|null,
 *  "secrets_dir":"/run/slicer/secrets","agent_version":"0.1.0"}
 * ```
 */
import { readFileSync, writeFileSync, renameSync, openSync, fsyncSync, closeSync } from "node:fs";
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
  /** First-boot script (spec §3.7), or null for none. */
  userdata: string | null;
  default_user: BootDefaultUser | null;
  /** Guest directory secrets are written to (spec §3.8), normally `/run/slicer/secrets`. */
  secrets_dir: string;
  agent_version: string;
}

/** The file name inside the agent directory. */
export const BOOT_FILE_NAME = "boot.json";
/** The socket name inside the agent directory. */
export const AGENT_SOCKET_NAME = "agent.sock";
/** Version reported by the agent's health (`agent_version`). */
export const AGENT_VERSION = "0.1.0";
/** Default guest secrets directory (spec §3.8). */
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
  const { hostname, userdata, default_user: du, secrets_dir: sd, agent_version: av } = value;
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
  return {
    hostname,
    userdata: typeof userdata === "string" && userdata !== "" ? userdata : null,
    default_user: defaultUser,
    secrets_dir: typeof sd === "string" ? sd : DEFAULT_SECRETS_DIR,
    agent_version: typeof av === "string" && av !== "" ? av : "0.0.0",
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
 * Write `<agentDir>/boot.json` atomically, mode 0600 (daemon side, before the VM starts;
 * the agent runs as root in the guest). `agentDir` must exist.
 * @throws Error from the filesystem or when `config` is invalid.
 */
export function writeAgentBootConfig(agentDir: string, config: AgentBootConfig): void {
  const checked = parseBootConfig(config);
  const file = path.join(agentDir, BOOT_FILE_NAME);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(checked) + "\n", { mode: 0o600 });
  const fd = openSync(tmp, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
