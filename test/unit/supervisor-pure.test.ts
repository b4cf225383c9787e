import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { cidrContains, cidrOverlaps, parseCidr, parseIpv4 } from "../../shared/cidr.js";
import { isPaddockError } from "../../shared/errors.js";
import { DEFAULTS_SOURCE, loadSupervisorConfig, parseSupervisorConfig, parseListenAddress } from "../../supervisor/supervisor-config.js";
import { describeStartError } from "../../supervisor/main.js";
import { allocateBlocks, poolCapacity, poolComplement, poolUsage } from "../../supervisor/block-allocator.js";
import { TokenIndex, hashToken, hashesEqual, issueToken } from "../../supervisor/tokens.js";
import { parseBearer, tokenMatches } from "../../shared/http/bearer.js";
import { TenantRegistry } from "../../supervisor/tenant-registry.js";
import { listTemplateNames, loadTemplate, parseTemplate, readImageOverride, readOverrides, renderTenantConfig } from "../../supervisor/tenant-template.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { DEFAULT_DENY } from "../../shared/tenant-config.js";

const TEMPLATES_DIR = path.resolve(import.meta.dirname, "../../../templates");
const POOL = parseCidr("169.254.0.0/16");

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (isPaddockError(err, "ERR_CONFIG_INVALID")) return (err.details?.problems as Array<{ path: string }>).map((p) => p.path);
    throw err;
  }
  throw new Error("expected ERR_CONFIG_INVALID");
}

describe("supervisor config", () => {
  it("without a config file, a bad flag is said to be in the command line (not in '<defaults>')", () => {
    expect(() => parseSupervisorConfig(undefined, DEFAULTS_SOURCE, { env: {}, flags: { gateway: "nonsense" } })).to.throw(/^the command line \(no --config file\) is invalid:\n {2}--gateway: /);
  });

  it("defaults: gateway 127.0.0.1:8080, admin 127.0.0.1:8081, /var/lib/paddock, /run/paddock, 169.254.0.0/16 in /22", () => {
    const c = parseSupervisorConfig(undefined, "<defaults>", { env: {} });
    expect(c.gateway).to.deep.equal({ kind: "tcp", host: "127.0.0.1", port: 8080 });
    expect(c.admin).to.deep.equal({ kind: "tcp", host: "127.0.0.1", port: 8081 });
    expect(c.stateDir).to.equal("/var/lib/paddock");
    expect(c.runDir).to.equal("/run/paddock");
    expect(c.imageDir).to.equal("/var/lib/paddock/images");
    expect(c.blockPrefix).to.equal(22);
    expect(c.pool).to.deep.equal(POOL);
    expect(c.defaultTemplate).to.equal("sandbox");
    expect(c.stopDaemonsOnExit).to.equal(false);
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it("templates/supervisor.example.yaml ('the values shown are the defaults') parses to exactly the defaults", async () => {
    const file = path.join(TEMPLATES_DIR, "supervisor.example.yaml");
    const example = parseSupervisorConfig(parseYamlSafe(await fs.readFile(file, "utf8"), file), file, { env: {}, baseDir: TEMPLATES_DIR });
    const defaults = parseSupervisorConfig(undefined, DEFAULTS_SOURCE, { env: {}, baseDir: TEMPLATES_DIR });
    const { source: _a, ...shown } = example;
    const { source: _b, ...real } = defaults;
    expect(shown).to.deep.equal(real);
  });

  it("a config file that cannot be read is ERR_FILE_UNREADABLE naming it (paddock up exits 1), not an invalid config", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-supcfg-"));
    try {
      const missing = path.join(dir, "supervisor.yaml");
      for (const [file, why] of [[missing, "no such file (ENOENT)"], [dir, "it is a directory (EISDIR)"]] as const) {
        const err = await loadSupervisorConfig(file, { env: {} }).then(() => undefined, (e: unknown) => e);
        expect(isPaddockError(err, "ERR_FILE_UNREADABLE"), String(err)).to.equal(true);
        expect((err as Error).message).to.equal(`cannot read ${file} (from paddock up --config): ${why}`);
        expect(describeStartError(err)).to.deep.equal({ line: `error: cannot read ${file} (from paddock up --config): ${why} (ERR_FILE_UNREADABLE)`, exitCode: 1 });
      }
      // One that reads but is invalid stays ERR_CONFIG_INVALID, exit 2.
      await fs.writeFile(missing, "restart: {max_crashes: 0}\n");
      const bad = await loadSupervisorConfig(missing, { env: {} }).then(() => undefined, (e: unknown) => e);
      expect(describeStartError(bad)?.exitCode).to.equal(2);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("flag beats environment beats file for state and run dirs", () => {
    const tree = { state_dir: "/file/state", run_dir: "/file/run" };
    expect(parseSupervisorConfig(tree, "f", { env: {} }).stateDir).to.equal("/file/state");
    expect(parseSupervisorConfig(tree, "f", { env: { PADDOCK_STATE_DIR: "/env/state" } }).stateDir).to.equal("/env/state");
    expect(parseSupervisorConfig(tree, "f", { env: { PADDOCK_STATE_DIR: "/env/state" }, flags: { stateDir: "/flag/state" } }).stateDir).to.equal("/flag/state");
    expect(parseSupervisorConfig(tree, "f", { env: { PADDOCK_RUN_DIR: "/env/run" } }).runDir).to.equal("/env/run");
  });

  it("an empty PADDOCK_STATE_DIR, PADDOCK_RUN_DIR or PADDOCK_IMAGE_DIR counts as unset, not as the config's directory", () => {
    const empty = { PADDOCK_STATE_DIR: "", PADDOCK_RUN_DIR: "", PADDOCK_IMAGE_DIR: "" };
    const c = parseSupervisorConfig({ state_dir: "/file/state", image_dir: "/file/images" }, "f", { env: empty, baseDir: "/etc/paddock" });
    expect([c.stateDir, c.runDir, c.imageDir]).to.deep.equal(["/file/state", "/run/paddock", "/file/images"]);
    const d = parseSupervisorConfig(undefined, "<defaults>", { env: empty, baseDir: "/etc/paddock" });
    expect([d.stateDir, d.runDir, d.imageDir]).to.deep.equal(["/var/lib/paddock", "/run/paddock", "/var/lib/paddock/images"]);
  });

  it("reports every bad value with its YAML path and warns about unknown keys", () => {
    const paths = problemsOf(() => parseSupervisorConfig({
      gateway: { address: "nope" },
      network: { pool: "169.254.1.0/16", block_prefix: 8 },
      restart: { initial_backoff_ms: "1000", max_crashes: 0 },
      deny: ["10.0.0.0/8", "banana"],
      stop_daemons_on_exit: "no",
    }, "sup.yaml", { env: {} }));
    expect(paths).to.include.members(["gateway.address", "network.pool", "restart.initial_backoff_ms", "restart.max_crashes", "deny[1]", "stop_daemons_on_exit"]);
    const c = parseSupervisorConfig({ gatway: {} }, "sup.yaml", { env: {} });
    expect(c.warnings).to.deep.equal(["(root).gatway: unknown key (ignored)"]);
  });

  it("a state_dir or run_dir of the file that the environment or a flag overrides is a warning naming the winner", () => {
    const tree = { state_dir: "/srv/paddock", run_dir: "/run/paddock" };
    const env = parseSupervisorConfig(tree, "sup.yaml", { env: { PADDOCK_STATE_DIR: "/var/lib/paddock", PADDOCK_RUN_DIR: "/run/paddock" } });
    expect(env.stateDir).to.equal("/var/lib/paddock");
    expect(env.warnings).to.deep.equal(["state_dir: /srv/paddock is overridden by PADDOCK_STATE_DIR (/var/lib/paddock)"]);
    const flag = parseSupervisorConfig(tree, "sup.yaml", { env: {}, flags: { runDir: "/tmp/r" } });
    expect(flag.warnings).to.deep.equal(["run_dir: /run/paddock is overridden by --run-dir (/tmp/r)"]);
    expect(parseSupervisorConfig(tree, "sup.yaml", { env: {} }).warnings).to.deep.equal([]);
  });

  it("YAML traps: `no` stays a string and is refused as a boolean", () => {
    const tree = parseYamlSafe("stop_daemons_on_exit: no\n", "t.yaml");
    expect(problemsOf(() => parseSupervisorConfig(tree, "t.yaml", { env: {} }))).to.deep.equal(["stop_daemons_on_exit"]);
  });

  it("refuses a run dir too long for tenant socket paths", () => {
    expect(problemsOf(() => parseSupervisorConfig({ run_dir: "/" + "r".repeat(100) }, "f", { env: {} }))).to.deep.equal(["run_dir"]);
  });

  it("parses listen addresses (TCP, IPv6, Unix socket)", () => {
    expect(parseListenAddress("0.0.0.0:80")).to.deep.equal({ kind: "tcp", host: "0.0.0.0", port: 80 });
    expect(parseListenAddress("[::1]:8081")).to.deep.equal({ kind: "tcp", host: "::1", port: 8081 });
    expect(parseListenAddress("/run/paddock/admin.sock")).to.deep.equal({ kind: "unix", socketPath: "/run/paddock/admin.sock" });
    expect(parseListenAddress("localhost")).to.equal(undefined);
    expect(parseListenAddress("h:70000")).to.equal(undefined);
  });
});

describe("supervisor block allocator", () => {
  it("hands out non-overlapping /22 blocks lowest first", () => {
    const used: string[] = [];
    for (let i = 0; i < 20; i++) used.push(...allocateBlocks({ pool: POOL, blockPrefix: 22, used, count: 1 }));
    expect(used[0]).to.equal("169.254.0.0/22");
    expect(used[1]).to.equal("169.254.4.0/22");
    for (let a = 0; a < used.length; a++) for (let b = a + 1; b < used.length; b++) {
      expect(cidrOverlaps(parseCidr(used[a] as string), parseCidr(used[b] as string)), `${used[a]} vs ${used[b]}`).to.equal(false);
    }
  });

  it("never hands out the block holding 169.254.169.254, and exhausts the pool with a clear error", () => {
    const all = allocateBlocks({ pool: POOL, blockPrefix: 22, used: [], count: 63 });
    expect(all).to.have.length(63);
    const metadata = parseIpv4("169.254.169.254") as number;
    expect(all.some((b) => cidrContains(parseCidr(b), metadata))).to.equal(false);
    expect(all).to.not.include("169.254.168.0/22");
    try {
      allocateBlocks({ pool: POOL, blockPrefix: 22, used: all, count: 1 });
      expect.fail("expected exhaustion");
    } catch (err) {
      expect(isPaddockError(err, "ERR_NETWORK_EXHAUSTED")).to.equal(true);
      // Tenant 64 of the default pool: the answer says how big the pool is and what to change.
      expect((err as Error).message).to.contain("holds 63 tenant blocks").and.to.contain("network.block_prefix").and.to.contain("/24 holds 64 isolated VMs per host group; the pool would hold 255");
      expect((err as { details?: unknown }).details).to.deep.equal({ capacity: 63, free: 0, wanted: 1 });
    }
    expect(poolCapacity(POOL, 22)).to.equal(63);
  });

  it("poolUsage (the start's in_use): only blocks inside the pool count; tenants whose blocks lie outside it are named", () => {
    // 16 tenants made with pool 198.19.192.0/22 in /26 blocks, then the pool moved to 198.19.200.0/22.
    const oldPool = parseCidr("198.19.192.0/22");
    const blocks: string[] = [];
    for (let i = 0; i < 16; i++) blocks.push(...allocateBlocks({ pool: oldPool, blockPrefix: 26, used: blocks, count: 1 }));
    const tenants = blocks.map((b, i) => ({ id: `t${i}`, blocks: [b] }));
    expect(poolUsage(oldPool, 26, tenants)).to.deep.equal({ inUse: 16, outside: [] });
    const newPool = parseCidr("198.19.200.0/22");
    expect(poolUsage(newPool, 26, tenants)).to.deep.equal({ inUse: 0, outside: tenants.map((t) => t.id) });
    expect(allocateBlocks({ pool: newPool, blockPrefix: 26, used: blocks, count: 1 })).to.deep.equal(["198.19.200.0/26"]);
    // One tenant in the new pool and one straddling it (a /21 from before a block_prefix change): the
    // pool's blocks they overlap count once each, the straddler is named; capacity minus in_use is what a create finds free.
    const mixed = [{ id: "a", blocks: ["198.19.200.64/26"] }, { id: "b", blocks: ["198.19.200.0/21"] }, { id: "c", blocks: [] }, { id: "d", blocks: ["nonsense"] }];
    expect(poolUsage(newPool, 26, mixed)).to.deep.equal({ inUse: 16, outside: ["b", "d"] });
    expect(poolUsage(newPool, 26, mixed.slice(0, 1))).to.deep.equal({ inUse: 1, outside: [] });
    // The block holding 169.254.169.254 is no tenant block: a tenant's /16 there takes capacity, not more.
    expect(poolUsage(POOL, 22, [{ id: "x", blocks: ["169.254.0.0/16"] }])).to.deep.equal({ inUse: poolCapacity(POOL, 22), outside: [] });
  });

  it("200 tenants at density: /24 blocks of 169.254.0.0/16 and /26 blocks of a /18 are distinct, non-overlapping, and skip the metadata block", () => {
    const metadata = parseIpv4("169.254.169.254") as number;
    for (const [pool, prefix, capacity] of [[POOL, 24, 255], [parseCidr("198.18.64.0/18"), 26, 256]] as const) {
      expect(poolCapacity(pool, prefix)).to.equal(capacity);
      const used: string[] = [];
      for (let i = 0; i < 200; i++) used.push(...allocateBlocks({ pool, blockPrefix: prefix, used, count: 1 }));
      expect(new Set(used).size).to.equal(200);
      const sorted = used.map((u) => parseCidr(u)).sort((a, b) => a.base - b.base);
      for (let i = 1; i < sorted.length; i++) expect(cidrOverlaps(sorted[i - 1] as ReturnType<typeof parseCidr>, sorted[i] as ReturnType<typeof parseCidr>)).to.equal(false);
      expect(used.some((b) => cidrContains(parseCidr(b), metadata))).to.equal(false);
    }
  });

  it("reuses a freed block, and allocates several at once without overlap", () => {
    const used = allocateBlocks({ pool: POOL, blockPrefix: 22, used: [], count: 3 });
    const freed = used.filter((b) => b !== "169.254.4.0/22");
    expect(allocateBlocks({ pool: POOL, blockPrefix: 22, used: freed, count: 1 })).to.deep.equal(["169.254.4.0/22"]);
    expect(allocateBlocks({ pool: POOL, blockPrefix: 22, used: freed, count: 2 })).to.deep.equal(["169.254.4.0/22", "169.254.12.0/22"]);
  });

  it("skips blocks overlapping a used range of another size", () => {
    expect(allocateBlocks({ pool: POOL, blockPrefix: 22, used: ["169.254.0.0/21"], count: 1 })).to.deep.equal(["169.254.8.0/22"]);
  });

  it("pool complement covers exactly everything but the tenant's own blocks", () => {
    const own = ["169.254.4.0/22", "169.254.200.0/22"];
    const rest = poolComplement(POOL, own).map((c) => parseCidr(c));
    let total = 0;
    for (const c of rest) {
      total += 2 ** (32 - c.prefix);
      for (const o of own) expect(cidrOverlaps(c, parseCidr(o))).to.equal(false);
    }
    expect(total).to.equal(2 ** 16 - 2 * 1024);
    expect(rest.some((c) => cidrContains(c, parseIpv4("169.254.0.1") as number))).to.equal(true);
    expect(poolComplement(POOL, [])).to.deep.equal(["169.254.0.0/16"]);
  });
});

describe("supervisor tokens", () => {
  it("issues pdk_ + 32 random bytes (base64url) and stores only SHA-256", () => {
    const t = issueToken();
    expect(t.token).to.match(/^pdk_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(t.token.slice(4), "base64url")).to.have.length(32);
    expect(t.hash).to.equal(hashToken(t.token)).and.match(/^[0-9a-f]{64}$/);
    expect(issueToken().token).to.not.equal(t.token);
  });

  it("verifies known tokens and refuses unknown, revoked, expired and missing ones", () => {
    const a = issueToken(), b = issueToken(), c = issueToken();
    const now = Date.now();
    const idx = new TokenIndex([
      { hash: a.hash, expiresAtMs: undefined, revoked: false, value: "ta" },
      { hash: b.hash, expiresAtMs: now + 1000, revoked: true, value: "tb" },
      { hash: c.hash, expiresAtMs: now - 1, revoked: false, value: "tc" },
    ]);
    expect(idx.verify(a.token, now)).to.equal("ta");
    expect(idx.verify(b.token, now)).to.equal(undefined);
    expect(idx.verify(c.token, now)).to.equal(undefined);
    expect(idx.verify(issueToken().token, now)).to.equal(undefined);
    expect(idx.verify(undefined, now)).to.equal(undefined);
    expect(idx.verify(a.token.slice(0, -1), now)).to.equal(undefined);
  });

  it("compares hashes in constant time and parses bearer headers", () => {
    const h = hashToken("x");
    expect(hashesEqual(h, h)).to.equal(true);
    expect(hashesEqual(h, hashToken("y"))).to.equal(false);
    expect(hashesEqual(h, "zz")).to.equal(false);
    expect(parseBearer("Bearer abc")).to.equal("abc");
    expect(parseBearer("bearer  abc ")).to.equal("abc");
    expect(parseBearer("Basic abc")).to.equal(undefined);
    expect(parseBearer("Bearer ")).to.equal(undefined);
    expect(parseBearer(undefined)).to.equal(undefined);
    expect(parseBearer("Bearer a b")).to.equal(undefined);
    expect(tokenMatches("abc", "abc")).to.equal(true);
    expect(tokenMatches("abd", "abc")).to.equal(false);
    expect(tokenMatches("", "")).to.equal(true);
    expect(tokenMatches(undefined, "")).to.equal(false);
  });
});

describe("supervisor registry", () => {
  let dir: string;
  beforeEach(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-reg-")); });
  afterEach(async () => { await fs.rm(dir, { recursive: true, force: true }); });

  const record = (id: string): Record<string, unknown> => ({
    id, status: "active", template: "sandbox", labels: {}, limits: {}, overrides: {}, blocks: [{ hostGroup: "sbox", cidr: "169.254.0.0/22" }],
    tokens: [{ id: "tok_1", hash: hashToken("x"), createdAt: "2026-01-01T00:00:00Z" }], daemon: { state: "stopped", restarts: 0 },
    createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z",
  });

  it("writes 0600 with a schema version, atomically, and reads back what it committed", async () => {
    const file = path.join(dir, "supervisor", "registry.json");
    const reg = new TenantRegistry(file);
    await reg.init();
    await reg.update((s) => { s.tenants.ta = record("ta") as never; });
    const st = await fs.stat(file);
    expect(st.mode & 0o777).to.equal(0o600);
    const onDisk = JSON.parse(await fs.readFile(file, "utf8")) as { schemaVersion: number; tenants: Record<string, unknown> };
    expect(onDisk.schemaVersion).to.equal(1);
    expect(Object.keys(onDisk.tenants)).to.deep.equal(["ta"]);
    expect((await fs.readdir(path.dirname(file))).filter((f) => f.endsWith(".tmp"))).to.deep.equal([]);
    const again = new TenantRegistry(file);
    await again.init();
    expect(again.get("ta").blocks[0]?.cidr).to.equal("169.254.0.0/22");
    // Object.prototype's keys are no tenants (a lookup by an id from a URL must not find them).
    for (const id of ["__proto__", "constructor", "toString"]) expect(again.find(id), id).to.equal(undefined);
  });

  it("a failing mutation writes nothing", async () => {
    const file = path.join(dir, "registry.json");
    const reg = new TenantRegistry(file);
    await reg.init();
    const before = await fs.readFile(file, "utf8");
    try {
      await reg.update((s) => { s.tenants.tb = record("tb") as never; throw new Error("boom"); });
    } catch {}
    expect(await fs.readFile(file, "utf8")).to.equal(before);
    expect(reg.find("tb")).to.equal(undefined);
  });

  for (const [name, text] of [
    ["invalid JSON", "{\"schemaVersion\": 1, \"tenants\": {"],
    ["another schema version", "{\"schemaVersion\": 2, \"tenants\": {}}"],
    ["a malformed tenant", JSON.stringify({ schemaVersion: 1, tenants: { ta: { id: "tb", status: "active", tokens: [], blocks: [], daemon: {} } } })],
    ["a token without a SHA-256 hash", JSON.stringify({ schemaVersion: 1, tenants: { ta: { ...record("ta"), tokens: [{ id: "t", hash: "pdk_plaintext" }] } } })],
  ] as const) {
    it(`refuses a corrupt file (${name}) and never overwrites it`, async () => {
      const file = path.join(dir, "registry.json");
      await fs.writeFile(file, text, { mode: 0o600 });
      const reg = new TenantRegistry(file);
      try {
        await reg.init();
        expect.fail("expected ERR_STATE_CORRUPT");
      } catch (err) {
        expect(isPaddockError(err, "ERR_STATE_CORRUPT"), String(err)).to.equal(true);
      }
      expect(await fs.readFile(file, "utf8")).to.equal(text);
    });
  }
});

describe("supervisor templates", () => {
  const input = (blocks: Record<string, string>) => ({
    tenantId: "ta1", socketPath: "/run/paddock/tenants/ta1/api.sock", stateDir: "/var/lib/paddock/tenants/ta1", runDir: "/run/paddock/tenants/ta1",
    imageDir: "/var/lib/paddock/images", blocks, limits: { maxVms: 3, maxRamBytes: 2 ** 31 }, overrides: {},
    deny: ["169.254.169.254/32"], foreignRanges: poolComplement(POOL, Object.values(blocks)),
  });

  it("a template's own paddock: settings (proxy mode) reach the tenant's config; keys the supervisor renders are refused", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    const withOwn = parseTemplate({ ...t.tree, paddock_template: { description: "x" }, paddock: { proxy: { mode: "audit" } } }, "own", "own.yaml");
    const { config } = renderTenantConfig(withOwn, input({ sbox: "169.254.8.0/22" }));
    expect(config.paddock.proxy.mode).to.equal("audit");
    expect(config.paddock.tenantId).to.equal("ta1");
    for (const key of ["state_dir", "tenant_id", "limits", "deny"]) {
      expect(() => parseTemplate({ ...t.tree, paddock_template: {}, paddock: { [key]: "x" } }, "bad", "bad.yaml"), key).to.throw(/set by the supervisor/);
    }
  });

  it("sandbox renders into a valid tenant config: isolated sbox, count 0, the tenant's range, socket, limits, deny", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    expect(t.hostGroups).to.deep.equal(["sbox"]);
    const { text, config } = renderTenantConfig(t, input({ sbox: "169.254.8.0/22" }));
    expect(text).to.not.include("paddock_template");
    const g = config.hostGroups[0];
    expect(g?.count).to.equal(0);
    expect(g?.network).to.deep.include({ mode: "isolated", range: "169.254.8.0/22" });
    expect(g?.network.mode === "isolated" && g.network.drop).to.include("192.168.0.0/16");
    expect(config.hypervisor).to.equal("oci");
    expect(config.api).to.deep.include({ kind: "unix", socketPath: "/run/paddock/tenants/ta1/api.sock" });
    expect(config.paddock.tenantId).to.equal("ta1");
    expect(config.paddock.limits).to.deep.equal({ maxVms: 3, maxVcpu: undefined, maxRamBytes: 2 ** 31, maxDiskBytes: undefined, maxPids: undefined });
    expect(t.limits, "the template's own limits (paddock_template.limits)").to.deep.equal({ maxVms: 16, maxVcpu: 16, maxRamBytes: 16 * 2 ** 30, maxDiskBytes: 32 * 2 ** 30, maxPids: 2048 });
    expect(config.paddock.deny).to.deep.equal(["169.254.169.254/32"]);
    expect(config.paddock.warmPool).to.deep.equal({ sbox: 1 });
    expect(config.paddock.foreignRanges.some((r) => cidrOverlaps(parseCidr(r), parseCidr("169.254.8.0/22")))).to.equal(false);
    expect(config.warnings).to.deep.equal([]);
  });

  it("workspace renders a persistent ctrl (count 1) and an sbox, each in its own block", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "workspace");
    const { config } = renderTenantConfig(t, input({ ctrl: "169.254.0.0/22", sbox: "169.254.4.0/22" }));
    expect(config.hostGroups.map((g) => [g.name, g.count, g.persistent])).to.deep.equal([["ctrl", 1, true], ["sbox", 0, false]]);
    expect(config.paddock.warmPool).to.deep.equal({ sbox: 1 });
    expect(config.warnings).to.deep.equal([]);
  });

  it("overrides are applied within the template's bounds and refused beyond them", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    const o = readOverrides(t, { sbox: { vcpu: 2, ram_mb: 1024, storage_size: "4G" } });
    expect(o).to.deep.equal({ sbox: { vcpu: 2, ramBytes: 2 ** 30, storageSizeBytes: 4 * 2 ** 30 } });
    const { config } = renderTenantConfig(t, { ...input({ sbox: "169.254.8.0/22" }), overrides: o });
    expect(config.hostGroups[0]).to.deep.include({ vcpu: 2, ramBytes: 2 ** 30, storageSizeBytes: 4 * 2 ** 30 });
    for (const bad of [{ sbox: { vcpu: 64 } }, { sbox: { count: 5 } }, { ctrl: { vcpu: 1 } }, { sbox: { storage_size: "1T" } }]) {
      expect(() => readOverrides(t, bad), JSON.stringify(bad)).to.throw().with.property("code", "ERR_TENANT_INVALID");
    }
  });

  it("warm_pool per tenant replaces the template's, within 0–16, also for a group without bounds", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    const o = readOverrides(t, { sbox: { warm_pool: 3 } });
    expect(o).to.deep.equal({ sbox: { warmPool: 3 } });
    expect(renderTenantConfig(t, { ...input({ sbox: "169.254.8.0/22" }), overrides: o }).config.paddock.warmPool).to.deep.equal({ sbox: 3 });
    expect(renderTenantConfig(t, { ...input({ sbox: "169.254.8.0/22" }), overrides: readOverrides(t, { sbox: { warm_pool: 0 } }) }).config.paddock.warmPool).to.deep.equal({});
    for (const bad of [{ sbox: { warm_pool: 17 } }, { sbox: { warm_pool: -1 } }, { nope: { warm_pool: 1 } }]) {
      expect(() => readOverrides(t, bad), JSON.stringify(bad)).to.throw().with.property("code", "ERR_TENANT_INVALID");
    }
    const bare = parseTemplate(parseYamlSafe("config:\n  host_groups:\n    - name: sbox\n      count: 0\n      storage_size: 1G\n      network: {mode: isolated}\n  hypervisor: oci\n", "t"), "t", "t");
    expect(readOverrides(bare, { sbox: { warm_pool: 2 } })).to.deep.equal({ sbox: { warmPool: 2 } });
    expect(() => readOverrides(bare, { sbox: { vcpu: 2 } })).to.throw(/not overridable in this template/);
  });

  it("an image chosen at create replaces the template's config.image; bad names are ERR_TENANT_INVALID", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    expect(renderTenantConfig(t, input({ sbox: "169.254.8.0/22" })).config.image).to.equal("debian-12");
    expect(readImageOverride(undefined)).to.equal(undefined);
    const image = readImageOverride("debian-12-dev");
    const { text, config } = renderTenantConfig(t, { ...input({ sbox: "169.254.8.0/22" }), image });
    expect(config.image).to.equal("debian-12-dev");
    expect(text).to.include("image: debian-12-dev");
    for (const bad of [42, "", "../debian-12", "ghcr.io/openfaasltd/slicer-systemd:latest", "Debian"]) {
      expect(() => readImageOverride(bad), JSON.stringify(bad)).to.throw().with.property("code", "ERR_TENANT_INVALID");
    }
  });

  it("values are placed structurally: hostile label-like text cannot inject YAML", () => {
    const t = parseTemplate(parseYamlSafe("config:\n  host_groups:\n    - name: sbox\n      count: 0\n      storage_size: 1G\n      network: {mode: isolated}\n  hypervisor: oci\n", "t"), "t", "t");
    const { config } = renderTenantConfig(t, { ...input({ sbox: "169.254.8.0/22" }), deny: ["10.0.0.0/8"], socketPath: "/tmp/x\n  evil: true/api.sock" });
    expect(config.api.kind === "unix" && config.api.socketPath).to.equal("/tmp/x\n  evil: true/api.sock");
  });

  it("paddock_template.warm_pool names host groups of the template, within 0–16", () => {
    const tpl = (pool: string) => parseYamlSafe(`paddock_template:\n  warm_pool: ${pool}\nconfig:\n  host_groups:\n    - name: sbox\n      count: 0\n      storage_size: 1G\n      network: {mode: isolated}\n  hypervisor: oci\n`, "t");
    expect(parseTemplate(tpl("{ sbox: 3 }"), "t", "t").warmPool).to.deep.equal({ sbox: 3 });
    expect(() => parseTemplate(tpl("{ ctrl: 1 }"), "t", "t")).to.throw(/paddock_template\.warm_pool\.ctrl: no host group "ctrl"/);
    expect(() => parseTemplate(tpl("{ sbox: 99 }"), "t", "t")).to.throw(/paddock_template\.warm_pool\.sbox: expected a non-negative integer ≤ 16/);
  });

  it("an unknown template name is ERR_TEMPLATE_NOT_FOUND (no path traversal)", async () => {
    for (const name of ["nope", "../templates/sandbox"]) {
      try {
        await loadTemplate(TEMPLATES_DIR, name);
        expect.fail("expected an error");
      } catch (err) {
        expect(isPaddockError(err, "ERR_TEMPLATE_NOT_FOUND")).to.equal(true);
        // The message names what a create may ask for instead (and not supervisor.example.yaml).
        expect((err as Error).message).to.match(/; templates there: (?:[a-z0-9-]+, )*sandbox, (?:[a-z0-9-]+, )*workspace(?:, [a-z0-9-]+)*$/);
      }
    }
    const names = await listTemplateNames(TEMPLATES_DIR);
    expect(names).to.include.members(["sandbox", "sandbox-gvisor", "workspace"]);
    expect(names, "not a tenant template").not.to.include("supervisor.example");
  });
});

describe("supervisor deny list: the operator's floor", () => {
  it("defaults to cloud metadata and RFC 1918; a configured list replaces it, [] opts out, bad entries name their path", () => {
    const c = parseSupervisorConfig(undefined, "<defaults>", { env: {} });
    expect(c.deny).to.deep.equal([...DEFAULT_DENY]);
    expect(c.deny).to.include.members(["169.254.169.254/32", "fd00:ec2::254/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
    expect(parseSupervisorConfig({ deny: ["198.18.5.0/24", "fd00:ec2::254", "198.18.6.1:22"] }, "f", { env: {} }).deny).to.deep.equal(["198.18.5.0/24", "fd00:ec2::254", "198.18.6.1:22"]);
    expect(parseSupervisorConfig({ deny: [] }, "f", { env: {} }).deny).to.deep.equal([]);
    expect(problemsOf(() => parseSupervisorConfig({ deny: ["10.0.0.0/8", "fd00::/200", "1.2.3.4:0"] }, "f", { env: {} }))).to.deep.equal(["deny[1]", "deny[2]"]);
  });

  it("the rendered tenant config carries the supervisor's default deny list", async () => {
    const c = parseSupervisorConfig(undefined, "<defaults>", { env: {} });
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    const { text, config } = renderTenantConfig(t, {
      tenantId: "ta2", socketPath: "/run/paddock/tenants/ta2/api.sock", stateDir: "/var/lib/paddock/tenants/ta2", runDir: "/run/paddock/tenants/ta2",
      imageDir: "/var/lib/paddock/images", blocks: { sbox: "169.254.12.0/22" }, limits: {}, overrides: {}, deny: c.deny, foreignRanges: [],
    });
    expect(config.paddock.deny).to.deep.equal([...DEFAULT_DENY]);
    for (const d of DEFAULT_DENY) expect(text).to.include(d);
  });
});
