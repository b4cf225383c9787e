/**
 * `paddock new NAME`: the YAML `slicer new NAME` writes, as a pure renderer
 * (docs/slicer-api.md#paddock-new).
 *
 * Differences from Slicer, on purpose:
 * - `hypervisor: firecracker` only when Firecracker can run (a KVM host and a Paddock with a
 *   Firecracker driver: this release has none, see FIRECRACKER_DRIVER); otherwise
 *   `hypervisor: oci` (Paddock's runc sandboxes, docs/ARCHITECTURE.md), and then
 *   `image: "debian-12"` (Paddock's local image store; it does not pull OCI images).
 *   `--hypervisor oci|gvisor` (Paddock's own flag) picks the runtime explicitly; gvisor also
 *   uses the local image.
 * - No `ssh_keys` scan of `~/.ssh/*.pub` (`--find-ssh-keys` is accepted and ignored): OCI
 *   sandboxes run no sshd.
 *
 * Layout: Slicer's documentation (https://docs.slicervm.com) shows two full worked outputs that
 * indent the `host_groups` list differently — the base bridge output (`slicer new vm`) writes
 * `  - name:` under `host_groups:`, the isolated per-tenant output
 * (`slicer new a3cf --net=isolated …`) writes `    - name:`. Both are the
 * same YAML; we reproduce each documented output byte for byte, so bridge groups use the
 * first layout and isolated groups the second. Key order and quoting follow the examples:
 * name, storage, storage_size, count, vcpu, ram_gb, [persistent], [userdata_file], [ca],
 * network; then github_user, image, hypervisor, graceful_shutdown, api.
 */
import { formatIpv4, parseCidr, parseIpv4 } from "../shared/cidr.js";
import { NAME_PATTERN } from "../shared/tenant-config.js";
import { parseSizeBytes } from "../shared/yaml-reader.js";
import { PaddockError } from "../shared/errors.js";
import { UsageError } from "./cli-errors.js";
import { isSocketAddress } from "./target.js";

/** Flags of `paddock new` (those of `slicer new`, plus Paddock's runtime choice); undefined ⇒ the generator's default. */
export interface NewConfigFlags {
  /**
   * `--hypervisor oci|gvisor` (Paddock's): the VMs' runtime; undefined ⇒ firecracker on a
   * Firecracker-capable host, else oci. Checked by {@link renderNewConfig}.
   */
  hypervisor?: string | undefined;
  /** `--gvisor-platform auto|kvm|ptrace` (with `--hypervisor gvisor`) ⇒ `paddock.gvisor.platform`. */
  gvisorPlatform?: string | undefined;
  /** `--net`: network mode (default bridge). */
  net?: "bridge" | "isolated" | undefined;
  /** `--isolated-range CIDR`: isolated `range:`. */
  isolatedRange?: string | undefined;
  /** `--socket PATH`: API on a Unix socket, no port, auth off. */
  socket?: string | undefined;
  /** `--count N` (default 1). */
  count?: number | undefined;
  /** `--drop CIDR|IP|ip:port` (repeatable, isolated). */
  drop?: readonly string[] | undefined;
  /** `--allow CIDR|IP|ip:port` (repeatable, isolated). */
  allow?: readonly string[] | undefined;
  /** `--cidr A.B.C.D/N`: bridge gateway = first host of the network (default 192.168.137.1/24). */
  cidr?: string | undefined;
  /** `--range A-B`: bridge allocation range. */
  range?: string | undefined;
  /** `--tap-prefix P` (default `<NAME>tap`). */
  tapPrefix?: string | undefined;
  /** `--graceful-shutdown=false` ⇒ `graceful_shutdown: false`. */
  gracefulShutdown?: boolean | undefined;
  /** `--api-bind ADDR` (a socket path works like `--socket`). */
  apiBind?: string | undefined;
  /** `--api-port N` (default 8080). */
  apiPort?: number | undefined;
  /** `--api-auth=false` ⇒ `auth: {enabled: false}`. */
  apiAuth?: boolean | undefined;
  /** `--storage-size 25G` (default 25G). */
  storageSize?: string | undefined;
  /** `--vcpu N` / `--cpu N` (default 2). */
  vcpu?: number | undefined;
  /** `--ram-gb N` / `--ram N` (GiB, default 4). */
  ramGb?: number | undefined;
  /** `--persistent true|false`: host group `persistent:`. */
  persistent?: boolean | undefined;
  /** `--image REF`: overrides the hypervisor's default image. */
  image?: string | undefined;
  /** `--userdata-file F`. */
  userdataFile?: string | undefined;
  /** `--ca` ⇒ `ca: {generate: true}`. */
  ca?: boolean | undefined;
  /** `--github USER` ⇒ `github_user:`. */
  githubUser?: string | undefined;
}

/** Host facts the output depends on. */
export interface NewConfigHost {
  /** Firecracker can run here (/dev/kvm and a Firecracker driver) ⇒ firecracker, else oci. */
  kvm: boolean;
  /** Node's `process.arch` (picks Slicer's arm64 image); default x64. */
  arch?: string;
}

/** Slicer's default images (https://docs.slicervm.com). */
export const SLICER_IMAGE_X86_64 = "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest";
export const SLICER_IMAGE_ARM64 = "ghcr.io/openfaasltd/slicer-systemd-arm64:6.1.90-aarch64-latest";
/** Paddock's default local image (tenant-daemon/images). */
export const PADDOCK_DEFAULT_IMAGE = "debian-12";

const PLAIN_SCALAR = /^[A-Za-z0-9_./-][A-Za-z0-9_.:/@+-]*$/;
const YAML_SPECIAL = /^(true|false|yes|no|on|off|null|~|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?|0x[0-9a-fA-F]+|0o[0-7]+)$/i;

/** A scalar unquoted when YAML reads it back as the same string, else double-quoted. */
function plain(s: string): string {
  return PLAIN_SCALAR.test(s) && !YAML_SPECIAL.test(s) ? s : JSON.stringify(s);
}

/** Always double-quoted (JSON escapes are valid YAML double-quoted escapes). */
function quoted(s: string): string {
  return JSON.stringify(s);
}

function flowList(items: readonly string[]): string {
  return `[${items.map(quoted).join(", ")}]`;
}

function checkFirewallEntry(entry: string, flag: string): void {
  const [addr, port, extra] = entry.split(":");
  try {
    parseCidr(addr ?? "");
  } catch {
    throw new UsageError(`${flag} takes a CIDR, an IP or ip:port, got ${JSON.stringify(entry)}`);
  }
  if (extra !== undefined || (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))) {
    throw new UsageError(`${flag} takes a CIDR, an IP or ip:port, got ${JSON.stringify(entry)}`);
  }
}

/** `--cidr 192.168.137.0/24` ⇒ `192.168.137.1/24` (first host of the network). */
function gatewayOf(cidr: string): string {
  let c;
  try {
    c = parseCidr(cidr);
  } catch {
    throw new UsageError(`--cidr takes a network such as 192.168.137.0/24, got ${JSON.stringify(cidr)}`);
  }
  if (!cidr.includes("/") || c.prefix > 30) throw new UsageError(`--cidr needs a prefix of /30 or shorter, got ${JSON.stringify(cidr)}`);
  return `${formatIpv4(c.base + 1)}/${c.prefix}`;
}

function checkFlags(name: string, f: NewConfigFlags): void {
  if (!NAME_PATTERN.test(name) || name.length > 40) {
    throw new UsageError(`NAME must be 1-40 characters of [a-z0-9-] starting and ending with a letter or digit, got ${JSON.stringify(name)}`);
  }
  const isolated = f.net === "isolated";
  if (isolated) {
    for (const [v, flag] of [[f.cidr, "--cidr"], [f.range, "--range"], [f.tapPrefix, "--tap-prefix"]] as const) {
      if (v !== undefined) throw new UsageError(`${flag} applies to bridge networks, not --net=isolated`);
    }
  } else {
    for (const [v, flag] of [[f.isolatedRange, "--isolated-range"], [f.drop?.length ? f.drop : undefined, "--drop"], [f.allow?.length ? f.allow : undefined, "--allow"]] as const) {
      if (v !== undefined) throw new UsageError(`${flag} needs --net=isolated`);
    }
  }
  if (f.isolatedRange !== undefined) {
    try {
      const c = parseCidr(f.isolatedRange, { strict: true });
      if (!f.isolatedRange.includes("/") || c.prefix > 30) throw new Error("needs a prefix of /30 or shorter");
    } catch (err) {
      throw new UsageError(`--isolated-range: ${(err as Error).message} (e.g. 169.254.100.0/22)`);
    }
  }
  for (const d of f.drop ?? []) checkFirewallEntry(d, "--drop");
  for (const a of f.allow ?? []) checkFirewallEntry(a, "--allow");
  if (f.range !== undefined) {
    const [a, b, extra] = f.range.split("-");
    const ia = parseIpv4(a ?? "");
    const ib = parseIpv4(b ?? "");
    if (ia === undefined || ib === undefined || extra !== undefined || ia > ib) throw new UsageError(`--range takes A-B with A ≤ B, got ${JSON.stringify(f.range)}`);
  }
  if (f.tapPrefix !== undefined && (f.tapPrefix.length === 0 || f.tapPrefix.length > 14 || !/^[A-Za-z0-9_-]+$/.test(f.tapPrefix))) {
    throw new UsageError(`--tap-prefix must be 1-14 characters of [A-Za-z0-9_-], got ${JSON.stringify(f.tapPrefix)}`);
  }
  if (f.socket !== undefined && f.apiBind !== undefined) throw new UsageError("use either --socket or --api-bind, not both");
  const socket = f.socket ?? (f.apiBind !== undefined && isSocketAddress(f.apiBind) ? f.apiBind : undefined);
  if (f.socket !== undefined && f.socket.trim() === "") throw new UsageError("--socket needs a path");
  if (socket !== undefined && f.apiPort !== undefined) throw new UsageError("--api-port does not apply to a Unix socket API (--socket)");
  if (f.count !== undefined && (!Number.isSafeInteger(f.count) || f.count < 0)) throw new UsageError("--count must be an integer ≥ 0");
  if (f.vcpu !== undefined && (!Number.isSafeInteger(f.vcpu) || f.vcpu < 1)) throw new UsageError("--vcpu must be an integer ≥ 1");
  if (f.ramGb !== undefined && (!Number.isSafeInteger(f.ramGb) || f.ramGb < 1)) throw new UsageError("--ram-gb must be an integer ≥ 1");
  if (f.apiPort !== undefined && (!Number.isSafeInteger(f.apiPort) || f.apiPort < 0 || f.apiPort > 65535)) throw new UsageError("--api-port must be 0-65535");
  if (f.storageSize !== undefined && parseSizeBytes(f.storageSize) === undefined) {
    throw new UsageError(`--storage-size takes a size such as 25G or 512M, got ${JSON.stringify(f.storageSize)}`);
  }
}

/** The runtimes `--hypervisor` takes: Paddock's drivers in this release. */
export const NEW_HYPERVISORS = ["oci", "gvisor"] as const;
/** The platforms `--gvisor-platform` takes (shared/tenant-config-paddock.ts `paddock.gvisor.platform`). */
export const NEW_GVISOR_PLATFORMS = ["auto", "kvm", "ptrace"] as const;

/**
 * The `hypervisor:` to write: `--hypervisor` when given, else firecracker on a
 * Firecracker-capable host, else oci.
 * @throws PaddockError `ERR_CONFIG_UNSUPPORTED` (exit 2) for a `--hypervisor` other than oci or
 *   gvisor (firecracker included: this release has no Firecracker driver), and for
 *   `--gvisor-platform` without gvisor or outside auto|kvm|ptrace.
 */
function chooseHypervisor(flags: NewConfigFlags, host: NewConfigHost): string {
  const h = flags.hypervisor;
  if (h !== undefined && !NEW_HYPERVISORS.some((k) => k === h)) {
    throw new PaddockError("ERR_CONFIG_UNSUPPORTED", `--hypervisor takes ${NEW_HYPERVISORS.join(" or ")}, got ${JSON.stringify(h)}${h === "firecracker" ? " (this Paddock release has no Firecracker driver)" : ""}`);
  }
  const p = flags.gvisorPlatform;
  if (p !== undefined) {
    if (h !== "gvisor") throw new PaddockError("ERR_CONFIG_UNSUPPORTED", "--gvisor-platform needs --hypervisor gvisor");
    if (!NEW_GVISOR_PLATFORMS.some((k) => k === p)) throw new PaddockError("ERR_CONFIG_UNSUPPORTED", `--gvisor-platform takes ${NEW_GVISOR_PLATFORMS.join(", ")}, got ${JSON.stringify(p)}`);
  }
  return h ?? (host.kvm ? "firecracker" : "oci");
}

/**
 * Render the config `slicer new NAME` writes for these flags, adapted to the host
 * (see the file comment). Pure: same input, same text; ends with a newline.
 * `--hypervisor gvisor` writes `hypervisor: gvisor` with Paddock's local image, and with
 * `--gvisor-platform` a top-level `paddock: {gvisor: {platform: …}}` key.
 * @throws UsageError for an invalid name, value or flag combination; PaddockError
 *   `ERR_CONFIG_UNSUPPORTED` for an unknown `--hypervisor` or `--gvisor-platform`.
 */
export function renderNewConfig(name: string, flags: NewConfigFlags, host: NewConfigHost): string {
  checkFlags(name, flags);
  const isolated = flags.net === "isolated";
  const hypervisor = chooseHypervisor(flags, host);
  const image = flags.image ?? (hypervisor !== "firecracker" ? PADDOCK_DEFAULT_IMAGE : host.arch === "arm64" ? SLICER_IMAGE_ARM64 : SLICER_IMAGE_X86_64);

  const out: string[] = ["config:", "  host_groups:"];
  const item = isolated ? "    " : "  "; // list indentation of the documented output (file comment)
  const field = `${item}  `;
  out.push(`${item}- name: ${name}`);
  out.push(`${field}storage: image`);
  out.push(`${field}storage_size: ${plain(flags.storageSize ?? "25G")}`);
  out.push(`${field}count: ${flags.count ?? 1}`);
  out.push(`${field}vcpu: ${flags.vcpu ?? 2}`);
  out.push(`${field}ram_gb: ${flags.ramGb ?? 4}`);
  if (flags.persistent !== undefined) out.push(`${field}persistent: ${flags.persistent}`);
  if (flags.userdataFile !== undefined) out.push(`${field}userdata_file: ${plain(flags.userdataFile)}`);
  if (flags.ca) out.push(`${field}ca:`, `${field}  generate: true`);
  out.push(`${field}network:`);
  const net = `${field}  `;
  if (isolated) {
    out.push(`${net}mode: "isolated"`);
    if (flags.isolatedRange !== undefined) out.push(`${net}range: ${quoted(flags.isolatedRange)}`);
    const drop = flags.drop ?? [];
    const allow = flags.allow ?? [];
    if (drop.length > 0) out.push(`${net}drop: ${flowList(drop)}`);
    // With only a drop list Slicer's per-tenant example adds allow 0.0.0.0/0 (equivalent either
    // way under most-specific-match-wins, docs/slicer-api.md#firewall-rules).
    if (allow.length > 0) out.push(`${net}allow: ${flowList(allow)}`);
    else if (drop.length > 0) out.push(`${net}allow: ${flowList(["0.0.0.0/0"])}`);
  } else {
    out.push(`${net}bridge: ${plain(`br${name}0`)}`);
    out.push(`${net}tap_prefix: ${plain(flags.tapPrefix ?? `${name}tap`)}`);
    out.push(`${net}gateway: ${flags.cidr === undefined ? "192.168.137.1/24" : gatewayOf(flags.cidr)}`);
    if (flags.range !== undefined) out.push(`${net}range: ${flags.range}`);
  }
  if (flags.githubUser !== undefined) out.push(`  github_user: ${plain(flags.githubUser)}`);
  out.push(`  image: ${quoted(image)}`);
  out.push(`  hypervisor: ${hypervisor}`);
  if (flags.gracefulShutdown === false) out.push("  graceful_shutdown: false");

  out.push("  api:");
  const socket = flags.socket ?? (flags.apiBind !== undefined && isSocketAddress(flags.apiBind) ? flags.apiBind : undefined);
  if (socket !== undefined) {
    // Unix socket API: no port, and the generator turns auth off by omitting the block.
    out.push(`    bind_address: ${quoted(socket)}`);
    if (flags.apiAuth !== undefined) out.push("    auth:", `      enabled: ${flags.apiAuth}`);
  } else {
    out.push(`    port: ${flags.apiPort ?? 8080}`);
    out.push(`    bind_address: ${quoted(flags.apiBind ?? "127.0.0.1")}`);
    out.push("    auth:", `      enabled: ${flags.apiAuth ?? true}`);
  }
  if (flags.gvisorPlatform !== undefined) out.push("paddock:", "  gvisor:", `    platform: ${flags.gvisorPlatform}`);
  return out.join("\n") + "\n";
}
