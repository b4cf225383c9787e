/**
 * Reliability: hostile input through the gateway, and credentials.
 *
 * Two real tenants behind one real supervisor process: `a` (sandbox, one sbox VM) and `b`
 * (workspace, persistent ctrl-1, a secret). Every hostile request must get a 4xx with a
 * Paddock error code, nothing may crash (supervisor pid and daemon pids unchanged at the end),
 * and nothing about `b` may leak to `a` (same status and body whether `b`'s object exists).
 * YAML traps go through the tenant daemon's real config loader (the file it is started with).
 */
import net from "node:net";
import http from "node:http";
import { promises as fs, statSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { loadTenantConfig, type TenantConfig } from "../../shared/tenant-config.js";
import { request } from "../helpers/http.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { checkRegistry, rid, until } from "./helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

interface Outcome { status: number; code: string | undefined; text: string }

describeWhenReady(missingPrerequisites(), "reliability: hostile input and credentials through the gateway", function () {
  this.timeout(240_000);
  let sup: TestSupervisor;
  const a = rid("a");
  const b = rid("b");
  const tok: Record<string, string> = {};
  const pids: Record<string, number> = {};
  let supPid = 0;
  let trickle: Promise<{ closedAfterMs: number; reply: string }> | undefined;

  const call = async (token: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Outcome> => {
    const r = await sup.gw(token, method, p, body, headers);
    return { status: r.status, code: (r.json as { code?: string } | undefined)?.code, text: r.text };
  };
  const expect4xx = (what: string, o: Outcome): void => {
    expect(o.status, `${what}: ${o.status} ${o.text.slice(0, 300)}`).to.be.within(400, 499);
    expect(o.code, `${what}: a Paddock error code in ${o.text.slice(0, 300)}`).to.match(/^ERR_[A-Z_]+$/);
  };

  /** Send raw bytes to the gateway; resolve with the raw reply when the server closes. */
  const raw = (bytes: string | Buffer, opts: { trickleMs?: number } = {}): Promise<{ closedAfterMs: number; reply: string }> => new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect(sup.gatewayTarget());
    let reply = "";
    s.on("data", (c: Buffer) => (reply += c.toString()));
    s.on("error", () => undefined);
    s.on("close", () => resolve({ closedAfterMs: Date.now() - t0, reply }));
    if (opts.trickleMs) {
      const text = bytes.toString();
      let i = 0;
      const timer = setInterval(() => {
        if (s.destroyed || i >= text.length) return clearInterval(timer);
        s.write(text[i++] as string);
      }, opts.trickleMs);
      s.on("close", () => clearInterval(timer));
    } else s.end(bytes);
  });

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
    supPid = sup.pid ?? 0;
    // Slow trickle of header bytes (1 byte / 700 ms, never finishing): started first so the
    // gateway's header timeout (30 s) runs alongside the other tests.
    trickle = raw(`GET /nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${"x".repeat(400)}\r\n\r\n`, { trickleMs: 700 });
    tok[a] = await sup.createTenant(a, "sandbox");
    tok[b] = await sup.createTenant(b, "workspace");
    const c = await sup.gw(tok[a] as string, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", {});
    expect(c.status, c.text).to.be.oneOf([200, 201]);
    await until("b ctrl-1", async () => ((await sup.gw(tok[b] as string, "GET", "/vm/ctrl-1/health")).status === 200 ? true : undefined), 90_000);
    const s = await sup.gw(tok[b] as string, "POST", "/secrets", { name: "bsecret", data: Buffer.from("hunter2").toString("base64") });
    expect(s.status, s.text).to.be.oneOf([200, 201]);
    for (const id of [a, b]) pids[id] = ((await sup.adminReq("GET", `/tenants/${id}`)).json as { daemon: { pid: number } }).daemon.pid;
  });

  after(async () => {
    if (sup) await sup.destroy([a, b]);
  });

  it("invalid JSON, oversized JSON and a 1 MB tag get 4xx with codes", async () => {
    const t = tok[a] as string;
    expect4xx("invalid JSON", await call(t, "POST", "/hostgroup/sbox/nodes", "{\"cpus\": 1,,", { "content-type": "application/json" }));
    expect4xx("JSON of the wrong type", await call(t, "POST", "/hostgroup/sbox/nodes", "[1,2,3]", { "content-type": "application/json" }));
    expect4xx("JSON with a __proto__ key", await call(t, "POST", "/hostgroup/sbox/nodes", "{\"__proto__\":{\"persistent\":true},\"cpus\":\"1\"}", { "content-type": "application/json" }));
    const big = await call(t, "POST", "/hostgroup/sbox/nodes", JSON.stringify({ tags: ["x".repeat(3 * 1024 * 1024)] }), { "content-type": "application/json" });
    expect4xx("3 MB JSON", big);
    expect(big.status).to.equal(413);
    expect4xx("1 MB tag on create", await call(t, "POST", "/hostgroup/sbox/nodes", { tags: ["t".repeat(1024 * 1024)] }));
    expect4xx("1 MB tag on patch", await call(t, "PATCH", "/vm/sbox-1/tags", { add: ["t".repeat(1024 * 1024)] }));
    expect4xx("deep JSON nesting", await call(t, "POST", "/hostgroup/sbox/nodes", "[".repeat(100_000) + "]".repeat(100_000), { "content-type": "application/json" }));
  });

  it("huge headers get 431 and garbage 400, with codes", async () => {
    const r = await raw(`GET /nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok[a]}\r\nX-Big: ${"h".repeat(80 * 1024)}\r\n\r\n`);
    expect(r.reply, r.reply.slice(0, 300)).to.match(/^HTTP\/1\.1 431 /);
    expect(r.reply).to.match(/"code":"ERR_[A-Z_]+"/);
    const many = await raw(`GET /nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok[a]}\r\n${Array.from({ length: 3000 }, (_, i) => `X-H${i}: v`).join("\r\n")}\r\n\r\n`);
    expect(many.reply.slice(0, 300)).to.match(/^HTTP\/1\.1 431 /);
    const garbage = await raw("NOT HTTP AT ALL\r\n\r\n");
    expect(garbage.reply.slice(0, 300)).to.match(/^HTTP\/1\.1 400 /);
    expect(garbage.reply).to.match(/"code":"ERR_BAD_REQUEST"/);
  });

  it("cp and fs paths with ../, host paths, symlinks and NUL bytes stay inside the VM and get clear 4xx", async () => {
    const t = tok[a] as string;
    const bConfig = path.join(sup.stateDir, "tenants", b, "config.yaml");
    const mk = await call(t, "POST", `/vm/sbox-1/exec?${new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", `ln -sf ${bConfig} /tmp/hostlink; ln -sf /proc/1/root/../../../etc/hostname /tmp/up`]])}&buffered=true&uid=0`);
    expect(mk.status, mk.text).to.equal(200);
    const cases: Array<[string, string, string]> = [
      ["GET", `/vm/sbox-1/cp?path=${encodeURIComponent(bConfig)}&mode=binary`, "another tenant's config by host path"],
      ["GET", `/vm/sbox-1/cp?path=${encodeURIComponent(path.join(sup.runDir, "tenants", b, "api.sock"))}&mode=binary`, "another tenant's socket path"],
      ["GET", `/vm/sbox-1/cp?path=${encodeURIComponent("../../../../../../" + bConfig)}&mode=binary`, "../ to a host path"],
      ["GET", `/vm/sbox-1/cp?path=%2Ftmp%2Fhostlink&mode=binary`, "a guest symlink to a host path"],
      ["GET", `/vm/sbox-1/cp?path=%2Fetc%2Fpasswd%00.png&mode=binary`, "a NUL byte"],
      ["POST", `/vm/sbox-1/cp?path=%2Ftmp%2Fa%00b&mode=binary`, "a NUL byte (upload)"],
      ["GET", `/vm/sbox-1/fs/stat?path=${encodeURIComponent(bConfig)}`, "fs/stat of a host path"],
      ["GET", `/vm/sbox-1/fs/readdir?path=${encodeURIComponent(path.join(sup.stateDir, "tenants", b))}`, "fs/readdir of another tenant's dir"],
      ["GET", "/vm/sbox-1/fs/stat?path=%2Ftmp%2F%00", "fs/stat with NUL"],
    ];
    for (const [method, p, what] of cases) expect4xx(what, await call(t, method, p, method === "POST" ? Buffer.from("x") : undefined, method === "POST" ? { "content-type": "application/octet-stream" } : {}));
    // The guest's view through a symlink escaping /proc/1/root is still the guest's file.
    const up = await call(t, "GET", "/vm/sbox-1/cp?path=%2Ftmp%2Fup&mode=binary");
    if (up.status === 200) expect(up.text.trim()).to.equal("sbox-1");
    else expect4xx("symlink via /proc/1/root", up);
  });

  it("host and group names with /, %2F, .. or unicode get 4xx with codes", async () => {
    const t = tok[a] as string;
    const cases: Array<[string, string]> = [
      ["POST", "/hostgroup/..%2Fsbox/nodes"], ["POST", "/hostgroup/%2E%2E/nodes"], ["POST", "/hostgroup/sb%C3%B6x/nodes"],
      ["POST", "/hostgroup/sbox%2F..%2Fctrl/nodes"], ["DELETE", "/hostgroup/sbox/nodes/..%2Fsbox-1"], ["DELETE", "/hostgroup/sbox/nodes/%2E%2E"],
      ["GET", "/vm/sbox%2F1"], ["GET", "/vm/..%2F..%2Fetc"], ["POST", "/vm/%E2%80%AEsbox-1/exec?cmd=id"], ["GET", "/vm/sbox-1%00/health"],
      ["GET", "/vm/%F0%9F%92%A9/health"], ["POST", "/hostgroup/%2Fetc%2Fpasswd/nodes"],
    ];
    for (const [m, p] of cases) expect4xx(`${m} ${p}`, await call(t, m, p, m === "POST" ? {} : undefined));
    expect(((await sup.gw(t, "GET", "/nodes")).json as unknown[]).length, "nothing was created").to.equal(1);
  });

  it("naming the other tenant's VM, group, socket path or secret reveals nothing (same answer whether it exists)", async () => {
    const t = tok[a] as string;
    const pairs: Array<[string, string, string]> = [
      ["GET", "/vm/ctrl-1", "/vm/ctrl-9"],
      ["GET", "/vm/ctrl-1/health", "/vm/ctrl-9/health"],
      ["POST", "/vm/ctrl-1/exec?cmd=id&buffered=true", "/vm/ctrl-9/exec?cmd=id&buffered=true"],
      ["GET", "/vm/ctrl-1/cp?path=%2Fetc%2Fhostname", "/vm/ctrl-9/cp?path=%2Fetc%2Fhostname"],
      ["DELETE", "/hostgroup/ctrl/nodes/ctrl-1", "/hostgroup/ctrl/nodes/ctrl-9"],
      ["POST", "/hostgroup/ctrl/nodes", "/hostgroup/nogroup/nodes"],
      ["PATCH", "/secrets/bsecret", "/secrets/nosecret"],
      ["DELETE", "/secrets/bsecret", "/secrets/nosecret"],
    ];
    const norm = (o: Outcome, names: string[]): string => {
      const j = JSON.parse(o.text) as { error: string; code: string };
      const msg = [...names].sort((x, y) => y.length - x.length).reduce((t, n) => t.split(n).join("<NAME>"), j.error);
      return `${o.status} ${j.code} ${msg}`;
    };
    for (const [m, exists, absent] of pairs) {
      const body = m === "PATCH" ? { data: "eA" } : m === "POST" && exists.startsWith("/hostgroup") ? {} : undefined;
      const o1 = await call(t, m, exists, body);
      const o2 = await call(t, m, absent, body);
      expect4xx(`${m} ${exists}`, o1);
      const n1 = exists.match(/ctrl-1|ctrl(?=\/)|bsecret/)?.[0] as string;
      const n2 = absent.match(/ctrl-9|nogroup|nosecret/)?.[0] as string;
      expect(norm(o1, [n1, n2]), `${m} ${exists} vs ${absent}`).to.equal(norm(o2, [n1, n2]));
    }
    // The socket path of b through a's token: the gateway never routes by client input.
    const viaHeader = await call(t, "GET", "/nodes", undefined, { "x-paddock-tenant": b, "x-forwarded-host": "b" });
    expect((JSON.parse(viaHeader.text) as Array<{ hostname: string }>).map((n) => n.hostname)).to.deep.equal(["sbox-1"]);
    const secrets = (await sup.gw(t, "GET", "/secrets")).text;
    expect(secrets).to.not.include("bsecret");
    // b's own view is intact.
    expect(((await sup.gw(tok[b] as string, "GET", "/nodes")).json as Array<{ hostname: string }>).map((n) => n.hostname)).to.deep.equal(["ctrl-1"]);
  });

  it("YAML traps in a tenant config are refused with their YAML path or read literally, never misread", async () => {
    const dir = await fs.mkdtemp("/tmp/pdk-yaml-");
    try {
      const base = (extra: string, group = ""): string => `config:\n  host_groups:\n    - name: sbox\n      count: 0\n      vcpu: 1\n      ram_mb: 256\n      storage: image\n      storage_size: 128M\n      network:\n        mode: isolated\n        range: 169.254.4.0/22\n${group}  image: debian-12\n  hypervisor: oci\n${extra}paddock:\n  tenant_id: ${rid("y")}\n  state_dir: ${dir}/s\n  run_dir: ${dir}/r\n`;
      const load = async (text: string): Promise<TenantConfig | PaddockError> => {
        const f = path.join(dir, "c.yaml");
        await fs.writeFile(f, text);
        return loadTenantConfig(f, {}).catch((err: unknown) => {
          if (err instanceof PaddockError) return err;
          throw err;
        });
      };
      const refused = (what: string, r: TenantConfig | PaddockError, re: RegExp): void => {
        expect(r, `${what} was accepted`).to.be.instanceOf(PaddockError);
        expect((r as PaddockError).code, what).to.equal("ERR_CONFIG_INVALID");
        expect((r as PaddockError).message, what).to.match(re);
      };
      refused("graceful_shutdown: no", await load(base("  graceful_shutdown: no\n")), /graceful_shutdown/);
      refused("a duplicate key", await load(base("  image: other\n")), /[Dd]uplicate|unique|image/);
      refused("an alias bomb", await load(`a: &a ["x","x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n` + base("")), /alias|[Ee]xcessive/);
      refused("a tenant id with a slash", await load(base("").replace(/tenant_id: \S+/, "tenant_id: ../other")), /tenant_id/);
      refused("a unicode tenant id", await load(base("").replace(/tenant_id: \S+/, "tenant_id: t\u00e9st")), /tenant_id/);
      refused("a host group named with a slash", await load(base("").replace("name: sbox", "name: ../sbox")), /name/);
      // 0644: YAML 1.2 has no leading-zero octal; it is 644 or refused, never 420.
      const octal = await load(base("", "").replace("ram_mb: 256", "ram_mb: 0644"));
      if (octal instanceof PaddockError) expect(octal.message).to.match(/ram_mb/);
      else expect(octal.hostGroups[0]?.ramBytes, "0644 read as 644 MiB, not octal 420").to.equal(644 * 1024 * 1024);
      // A merge key is not merged (merge: false): it is an unknown key, warned about by path.
      const merged = await load(base("", "").replace("      vcpu: 1\n", "      vcpu: 1\n      <<: {vcpu: 64}\n"));
      if (merged instanceof PaddockError) expect(merged.message).to.match(/<<|merge/i);
      else {
        expect(merged.hostGroups[0]?.vcpu, "merge key not applied").to.equal(1);
        expect(merged.warnings.join("\n")).to.include("<<");
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("credentials: only hashes at rest, revocation and expiry at once, token kinds not interchangeable, 0600/0700", async () => {
    const reg = await fs.readFile(sup.registryFile(), "utf8");
    for (const t of Object.values(tok)) {
      expect(reg).to.not.include(t);
      expect(reg).to.not.include(t.slice(4, 30));
    }
    const tenants = checkRegistry(reg);
    for (const id of [a, b]) for (const k of tenants[id]?.tokens ?? []) expect(k.hash).to.match(/^[0-9a-f]{64}$/);
    const audit = await fs.readFile(path.join(sup.stateDir, "supervisor", "audit.log"), "utf8").catch(() => "");
    for (const t of Object.values(tok)) expect(audit).to.not.include(t);
    // Revocation takes effect on the very next request; a pre-revocation connection too.
    const extra = (await sup.adminReq("POST", `/tenants/${a}/tokens`, {})).json as { token: string; id: string };
    expect((await sup.gw(extra.token, "GET", "/nodes")).status).to.equal(200);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const kept = (): Promise<number> => new Promise((resolve, reject) => {
      const req = http.request({ ...sup.gatewayTarget(), agent, path: "/nodes", headers: { authorization: `Bearer ${extra.token}` } }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode ?? 0)); });
      req.on("error", reject);
      req.end();
    });
    expect(await kept()).to.equal(200);
    expect((await sup.adminReq("DELETE", `/tenants/${a}/tokens/${extra.id}`)).status).to.be.oneOf([200, 204]);
    expect((await sup.gw(extra.token, "GET", "/nodes")).status).to.equal(401);
    expect(await kept(), "a kept-alive connection is re-authenticated per request").to.equal(401);
    agent.destroy();
    // Expiry.
    const short = (await sup.adminReq("POST", `/tenants/${a}/tokens`, { expires_in_seconds: 1 })).json as { token: string };
    expect((await sup.gw(short.token, "GET", "/nodes")).status).to.equal(200);
    await until("expiry", async () => ((await sup.gw(short.token, "GET", "/nodes")).status === 401 ? true : undefined), 10_000, 200);
    // Kinds: admin token at the gateway, tenant token at the admin API, and variants.
    const adminAtGw = await sup.gw(sup.adminToken, "GET", "/nodes");
    expect(adminAtGw.status).to.equal(401);
    const tenantAtAdmin = await request(sup.adminTarget(), "GET", "/admin/v1/tenants", undefined, { authorization: `Bearer ${tok[a]}` });
    expect(tenantAtAdmin.status).to.equal(401);
    expect((tenantAtAdmin.json as { code?: string }).code).to.match(/^ERR_/);
    for (const bad of [tok[a] + "x", (tok[a] as string).slice(0, -1), (tok[a] as string).toUpperCase(), "", "pdk_", sup.adminToken]) {
      const r = await request(sup.gatewayTarget(), "GET", "/nodes", undefined, { authorization: `Bearer ${bad}` });
      expect(r.status, JSON.stringify(bad)).to.equal(401);
    }
    const noAuth = await request(sup.gatewayTarget(), "GET", "/nodes");
    expect(noAuth.status).to.equal(401);
    expect((noAuth.json as { code: string }).code).to.equal("ERR_AUTH_REQUIRED");
    // Modes of secret-holding files and their directories.
    const mode = (p: string): string => (statSync(p).mode & 0o777).toString(8);
    const files = [sup.registryFile(), path.join(sup.stateDir, "supervisor", "admin-token"), path.join(sup.stateDir, "tenants", b, "config.yaml"), sup.tenantStateFile(b)];
    const secretDir = path.join(sup.stateDir, "tenants", b, "secrets");
    for (const f of await fs.readdir(secretDir)) files.push(path.join(secretDir, f));
    for (const f of files) {
      if (statSync(f).isDirectory()) continue;
      expect(mode(f), f).to.equal("600");
    }
    for (const d of [path.join(sup.stateDir, "supervisor"), path.join(sup.stateDir, "tenants"), path.join(sup.stateDir, "tenants", b), secretDir]) expect(mode(d), d).to.equal("700");
  });

  it("a header trickle was cut by the header timeout (408); nothing crashed: same supervisor and daemons", async () => {
    const tr = await (trickle as Promise<{ closedAfterMs: number; reply: string }>);
    console.log(`      header trickle closed by the gateway after ${tr.closedAfterMs} ms: ${JSON.stringify(tr.reply.split("\r\n")[0])}`);
    expect(tr.closedAfterMs, "bounded by headersTimeout (30 s) plus the check interval").to.be.lessThan(45_000);
    expect(tr.reply).to.match(/^HTTP\/1\.1 408 /);
    // The same supervisor process is alive (a dead child keeps its pid, so check the exit
    // fields) and answers its admin API.
    expect({ pid: sup.pid, exitCode: sup.child?.exitCode, signalCode: sup.child?.signalCode }).to.deep.equal({ pid: supPid, exitCode: null, signalCode: null });
    expect((await sup.adminReq("GET", "/tenants")).status, "the supervisor answers").to.equal(200);
    for (const id of [a, b]) {
      const t = (await sup.adminReq("GET", `/tenants/${id}`)).json as { status: string; daemon: { pid: number; restarts: number } };
      expect(t.status).to.equal("active");
      expect(t.daemon.pid, `${id} daemon`).to.equal(pids[id]);
      expect(t.daemon.restarts).to.equal(0);
    }
    expect((await sup.gw(tok[b] as string, "GET", "/vm/ctrl-1/health")).status).to.equal(200);
  });
});
