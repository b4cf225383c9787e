/**
 * `paddock new NAME [flags]`: parse the `slicer new` flags (docs/slicer-api.md#paddock-new)
 * and print the config.
 */
import { parseFlags, parseIntFlag, expectPositionals } from "./args.js";
import { EXIT, UsageError } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { renderNewConfig, type NewConfigFlags } from "./new-config.js";
import { FIRECRACKER_DRIVER } from "../shared/tenant-config.js";

/** Help text of `paddock new`. */
export const NEW_HELP = `usage: paddock new NAME [flags] > NAME.yaml

Print the daemon config \`slicer new NAME\` writes, for this Paddock: hypervisor oci (runc
sandboxes; this release has no Firecracker driver) with Paddock's local image debian-12.
Run it with \`paddock daemon up NAME.yaml\`.

  --hypervisor oci|gvisor      the VMs' runtime (default oci): runc, or gVisor's runsc
                               (apt-get install runsc; docs/security.md)
  --gvisor-platform P          gvisor: runsc platform auto|kvm|ptrace (default auto: kvm
                               when /dev/kvm opens on a CPU with vmx/svm, else ptrace)

  --net isolated|bridge        network mode (default bridge)
  --isolated-range CIDR        isolated: the group's range, e.g. 169.254.100.0/22
  --drop CIDR|IP|ip:port       isolated: block (repeatable)
  --allow CIDR|IP|ip:port      isolated: allow (repeatable)
  --cidr A.B.C.0/N             bridge: network; gateway is its first address (default 192.168.137.1/24)
  --range A-B                  bridge: allocation range
  --tap-prefix P               bridge: TAP name prefix (default NAMEtap)
  --count N                    VMs created at start (default 1; 0 = API-only)
  --vcpu N (--cpu)             default and maximum vCPUs (default 2)
  --ram-gb N (--ram)           default and maximum RAM in GiB (default 4)
  --storage-size SIZE          per-VM disk (default 25G)
  --persistent=true|false      host group persistent:
  --userdata-file F            first-boot script
  --socket PATH                API on a Unix socket (no port, auth off)
  --api-bind ADDR              API bind address (a socket path works too)
  --api-port N                 API TCP port (default 8080)
  --api-auth=false             disable bearer auth on TCP
  --graceful-shutdown=false    kill VMs immediately when the daemon stops
  --image REF                  override the image
  --ca                         host group ca: {generate: true}
  --github USER                github_user:
  --find-ssh-keys=false        accepted for slicer compatibility (Paddock never scans ~/.ssh)
`;

const NEW_FLAGS = {
  hypervisor: { type: "string" },
  "gvisor-platform": { type: "string" },
  net: { type: "string" },
  "isolated-range": { type: "string" },
  socket: { type: "string" },
  count: { type: "string" },
  drop: { type: "string", multiple: true },
  allow: { type: "string", multiple: true },
  cidr: { type: "string" },
  range: { type: "string" },
  "tap-prefix": { type: "string" },
  "graceful-shutdown": { type: "boolean" },
  "api-bind": { type: "string" },
  "api-port": { type: "string" },
  "api-auth": { type: "boolean" },
  "storage-size": { type: "string" },
  vcpu: { type: "string" },
  cpu: { type: "string" },
  "ram-gb": { type: "string" },
  ram: { type: "string" },
  persistent: { type: "boolean" },
  image: { type: "string" },
  "userdata-file": { type: "string" },
  ca: { type: "boolean" },
  github: { type: "string" },
  "find-ssh-keys": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * Parse `paddock new` arguments into the renderer's input (pure).
 * @throws UsageError for unknown flags, bad values or a missing NAME.
 */
export function parseNewArgs(argv: readonly string[]): { name: string; flags: NewConfigFlags; help: boolean } {
  const { values, positionals } = parseFlags(argv, NEW_FLAGS);
  if (values.help) return { name: "", flags: {}, help: true };
  expectPositionals(positionals, 1, 1, "paddock new NAME [flags]");
  const net = values.net;
  if (net !== undefined && net !== "isolated" && net !== "bridge") {
    throw new UsageError(`--net takes isolated or bridge, got ${JSON.stringify(net)}${net === "macvtap" ? " (macvtap is not supported by Paddock)" : ""}`);
  }
  if (values.vcpu !== undefined && values.cpu !== undefined) throw new UsageError("use either --vcpu or --cpu");
  if (values["ram-gb"] !== undefined && values.ram !== undefined) throw new UsageError("use either --ram-gb or --ram");
  const flags: NewConfigFlags = {
    hypervisor: values.hypervisor,
    gvisorPlatform: values["gvisor-platform"],
    net,
    isolatedRange: values["isolated-range"],
    socket: values.socket,
    count: parseIntFlag(values.count, "--count", { min: 0 }),
    drop: values.drop,
    allow: values.allow,
    cidr: values.cidr,
    range: values.range,
    tapPrefix: values["tap-prefix"],
    gracefulShutdown: values["graceful-shutdown"],
    apiBind: values["api-bind"],
    apiPort: parseIntFlag(values["api-port"], "--api-port", { min: 0, max: 65535 }),
    apiAuth: values["api-auth"],
    storageSize: values["storage-size"],
    vcpu: parseIntFlag(values.vcpu ?? values.cpu, values.cpu !== undefined ? "--cpu" : "--vcpu", { min: 1 }),
    ramGb: parseIntFlag(values["ram-gb"] ?? values.ram, values.ram !== undefined ? "--ram" : "--ram-gb", { min: 1 }),
    persistent: values.persistent,
    image: values.image,
    userdataFile: values["userdata-file"],
    ca: values.ca,
    githubUser: values.github,
  };
  return { name: positionals[0] as string, flags, help: false };
}

/** `paddock new NAME [flags]`: print the YAML on stdout. */
export async function newCommand(ctx: CliContext, argv: string[]): Promise<number> {
  const { name, flags, help } = parseNewArgs(argv);
  if (help) {
    await writeOut(ctx.stdout, NEW_HELP);
    return EXIT.OK;
  }
  await writeOut(ctx.stdout, renderNewConfig(name, flags, { kvm: FIRECRACKER_DRIVER && ctx.kvmPresent(), arch: process.arch }));
  return EXIT.OK;
}
