/**
 * What one nft process costs with N tenant tables on the host (docs/performance.md, "nftables at
 * density"). A scratch netns `pdknft-<pid>` gets N tables rendered by nft-ruleset.ts as a tenant
 * daemon renders them (own /22, every other table's range in `foreign_ranges`, `--vms` isolated
 * VMs each), loaded with one `nft -f`; then each command form below runs `--rounds` times in that
 * netns under a python3 fork/exec/wait4 (rusage in µs), forms interleaved per round, and this prints the medians of nft's
 * user and system CPU (ms), its peak RSS (MiB) and minor page faults. Every form's cache needs per nftables 1.0.6
 * src/cache.c `nft_cache_evaluate` are in the doc section. The netns (and so every table in it) is
 * removed at the end, also on failure or SIGINT/SIGTERM. Root only; take the bench lock:
 *
 *   flock /tmp/paddock-bench.lock node dist/scripts/bench/profile-nft.js [--tables 200] [--vms 2] [--rounds 5]
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { formatCidr } from "../../shared/cidr.js";
import { nftEnv } from "../../shared/nft-cli.js";
import { tableName, vmVethName } from "../../tenant-daemon/network/names.js";
import { renderRuleset, renderTableDeletion, type RulesetInput } from "../../tenant-daemon/network/nft-ruleset.js";

const { values: args } = parseArgs({
  options: {
    tables: { type: "string", default: "200" },
    vms: { type: "string", default: "2" },
    rounds: { type: "string", default: "5" },
  },
});
const tables = Number(args.tables);
const vmsPerTable = Number(args.vms);
const rounds = Number(args.rounds);
if (!Number.isInteger(tables) || tables < 1 || tables > 512 || !Number.isInteger(vmsPerTable) || vmsPerTable < 0 || !Number.isInteger(rounds) || rounds < 1) {
  throw new Error("--tables 1..512 (/22s of 198.18.0.0/15), --vms >= 0, --rounds >= 1");
}
const netns = `pdknft-${process.pid}`;
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "pdknft-"));
const jsonFile = path.join(tmpDir, "table.json");

/** Tenant i's id and its /22 in 198.18.0.0/15 (benchmark space; nothing is routed: the netns has no links). */
function tenant(i: number): { id: string; range: string } {
  const id = `n${i.toString().padStart(4, "0")}`;
  const base = (198 << 24) | (18 << 16);
  const addr = (base + i * 1024) >>> 0;
  return { id, range: formatCidr({ base: addr, prefix: 22 }) };
}

function input(i: number): RulesetInput {
  const t = tenant(i);
  const others = Array.from({ length: tables }, (_, j) => j).filter((j) => j !== i).map((j) => tenant(j).range);
  const base = Number(t.range.split(".")[2]);
  return {
    tenantId: t.id,
    ownRanges: [t.range],
    foreignRanges: others,
    deny: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"],
    dnsServers: [],
    bridges: [],
    isolatedVms: Array.from({ length: vmsPerTable }, (_, k) => ({
      hostname: `g-${k + 1}`, group: "g", veth: vmVethName(t.id, `g-${k + 1}`), ip: `${t.range.split(".").slice(0, 2).join(".")}.${base}.${4 * k + 2}`,
      firewall: { rules: [], defaultVerdict: "accept" as const }, useFloor: false,
    })),
    floors: [],
  };
}

/**
 * wait4(2)'s rusage of one child, in µs (/usr/bin/time prints 10 ms steps): python3 forks, execs
 * the argv and prints utime, stime, maxrss (KiB) and minor faults on fd 3.
 */
const RUSAGE = "import os,sys\npid=os.fork()\nif pid==0:\n  os.execvp(sys.argv[1],sys.argv[1:])\n_,st,ru=os.wait4(pid,0)\nos.write(3,('%d %d %d %d %d'%(os.waitstatus_to_exitcode(st),ru.ru_utime*1e6,ru.ru_stime*1e6,ru.ru_maxrss,ru.ru_minflt)).encode())";

/** One nft run: user and system CPU in ms, peak RSS in MiB, minor page faults. */
interface Sample {
  user: number;
  sys: number;
  rss: number;
  faults: number;
}

/** Run `nft` in the scratch netns and take its rusage. */
function timedNft(argv: string[], stdin: string, env: Record<string, string>): Sample {
  const r = spawnSync("ip", ["netns", "exec", netns, "python3", "-c", RUSAGE, "nft", ...argv], {
    input: stdin, env: { ...process.env, ...env }, encoding: "utf8", maxBuffer: 256 << 20, stdio: ["pipe", "pipe", "pipe", "pipe"],
  });
  const m = /^(\d+) (\d+) (\d+) (\d+) (\d+)$/.exec(String(r.output[3] ?? ""));
  if (r.status !== 0 || m === null || m[1] !== "0") throw new Error(`nft ${argv.join(" ")} failed (${r.status}): ${r.stderr.slice(0, 2000)}`);
  return { user: Number(m[2]) / 1000, sys: Number(m[3]) / 1000, rss: Number(m[4]) / 1024, faults: Number(m[5]) };
}

function sh(cmd: string, argv: string[], stdin?: string): string {
  const r = spawnSync(cmd, argv, { input: stdin, encoding: "utf8", maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(" ")} failed (${r.status}): ${r.stderr.slice(0, 2000)}`);
  return r.stdout;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** One command form: argv and stdin, and what a tenant daemon runs it for. */
interface Form {
  name: string;
  argv: string[];
  stdin: string;
  env: Record<string, string>;
}

function forms(): Form[] {
  const t0 = tenant(0).id;
  const table = tableName(t0);
  const text = renderRuleset(input(0));
  // The same table as JSON commands: `add table`, `delete table`, then the listing's objects
  // (a bare object in `nft -j -f` input is an add, libnftables-json(5)).
  const listed = JSON.parse(sh("ip", ["netns", "exec", netns, "nft", "-j", "list", "table", "inet", table])) as { nftables: Record<string, unknown>[] };
  const objects = listed.nftables.filter((o) => !("metainfo" in o) && !("table" in o));
  const json = JSON.stringify({ nftables: [{ add: { table: { family: "inet", name: table } } }, { delete: { table: { family: "inet", name: table } } }, { add: { table: { family: "inet", name: table } } }, ...objects.map((o) => ({ add: o }))] });
  // nft reads JSON input with open(2) on the path, which a socket as stdin (node's pipes) refuses.
  fs.writeFileSync(jsonFile, json, { mode: 0o600 });
  const env = nftEnv();
  return [
    { name: "nft -f: one tenant's table replaced (start, isolated VM create/delete)", argv: ["-f", "-"], stdin: text, env },
    { name: "nft -f, no GLIBC_TUNABLES (before 'fourth look')", argv: ["-f", "-"], stdin: text, env: {} },
    { name: "nft -c -f: the same, check only", argv: ["-c", "-f", "-"], stdin: text, env },
    { name: "nft -j -f: the same table as JSON commands", argv: ["-j", "-f", jsonFile], stdin: "", env },
    { name: `nft add element inet ${table} isolated_ifaces`, argv: ["add", "element", "inet", table, "isolated_ifaces", "{ \"pdknft-x\" }"], stdin: "", env },
    { name: "nft -f: delete + re-add the table (a stop, then a start)", argv: ["-f", "-"], stdin: renderTableDeletion(t0) + text, env },
    { name: "nft -j list sets inet (start's range read before 'nftables at density')", argv: ["-j", "list", "sets", "inet"], stdin: "", env },
    { name: "nft -j list chains inet", argv: ["-j", "list", "chains", "inet"], stdin: "", env },
    { name: "nft -t -j 'list sets inet; list chains inet' (start's range read now, shared/nft-cli.ts listOwnRanges)", argv: ["-t", "-j", "list sets inet; list chains inet"], stdin: "", env },
    { name: "nft list flowtables (0 flowtables)", argv: ["list", "flowtables"], stdin: "", env },
    { name: `nft list table inet ${table} (purge's check)`, argv: ["list", "table", "inet", table], stdin: "", env },
    { name: `nft -j list set inet ${table} own_ranges`, argv: ["-j", "list", "set", "inet", table, "own_ranges"], stdin: "", env },
  ];
}

function cleanup(): void {
  spawnSync("ip", ["netns", "del", netns], { stdio: "ignore" });
  fs.rmSync(tmpDir, { recursive: true, force: true });
}

function main(): void {
  process.on("SIGINT", () => (cleanup(), process.exit(130)));
  process.on("SIGTERM", () => (cleanup(), process.exit(143)));
  sh("ip", ["netns", "add", netns]);
  try {
    const load = Array.from({ length: tables }, (_, i) => renderRuleset(input(i))).join("");
    sh("ip", ["netns", "exec", netns, "nft", "-f", "-"], load);
    const count = sh("ip", ["netns", "exec", netns, "nft", "-j", "list", "sets", "inet"]).split('"own_ranges"').length - 1;
    if (count !== tables) throw new Error(`expected ${tables} tables in ${netns}, found ${count}`);
    const all = forms();
    const samples = all.map(() => [] as Sample[]);
    const loads: number[] = [];
    for (let r = 0; r < rounds; r++) {
      loads.push(os.loadavg()[0] as number);
      const order = all.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      for (const i of order) samples[i]?.push(timedNft(all[i]?.argv ?? [], all[i]?.stdin ?? "", all[i]?.env ?? {}));
    }
    console.log(`${tables} tables (${vmsPerTable} isolated VMs each) in netns ${netns}, ${rounds} rounds, nft ${sh("nft", ["--version"]).trim()}, load (1 min) ${median(loads).toFixed(1)} median (${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)})`);
    console.log("| command | user ms | sys ms | user+sys ms | peak RSS MiB | minor faults |");
    console.log("|---|---|---|---|---|---|");
    all.forEach((f, i) => {
      const s = samples[i] ?? [];
      const u = median(s.map((x) => x.user));
      const y = median(s.map((x) => x.sys));
      console.log(`| ${f.name} | ${u.toFixed(0)} | ${y.toFixed(0)} | ${median(s.map((x) => x.user + x.sys)).toFixed(0)} | ${median(s.map((x) => x.rss)).toFixed(1)} | ${median(s.map((x) => x.faults)).toFixed(0)} |`);
    });
  } finally {
    cleanup();
  }
}

main();
