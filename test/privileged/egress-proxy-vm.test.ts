/**
 * Proxy mode end to end with real runc VMs: a host group with `egress_proxy` leaves only
 * through the tenant's egress proxy (tenant-daemon/network/egress-proxy-wiring.ts, nft-ruleset.ts,
 * egress-dns.ts, tenant-daemon/proxy/). Test hosts live in network namespaces made here
 * (198.18.0.0/15 only): an "allowed" one serving HTTP on 80 and HTTPS on 443 with a certificate
 * of its own test CA, and a "denied" one. Commands in the VMs run through the exec API and use
 * the proxy only through the environment the VM was booted with. A VM of a non-proxy group of the
 * same tenant is the positive control for the direct-IP bypass. One tenant, one daemon.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";
import { ip4, leftovers, makeTestHost, randomBlock, tempDir, type TestHost } from "./network-fixtures.js";
import { untilTrue } from "../helpers/wait.js";

const SECRET = `s3cr3t-${process.pid}-egressnet-value`;
const API = "api.egress.test";
const TLS = "tls.egress.test";
const DENIED = "denied.egress.test";

/** The test hosts' server: HTTP 80 and HTTPS 443; one JSON line per request on stdout. */
const SERVER = `
const http=require('http'),https=require('https'),fs=require('fs');const [ip,key,cert]=process.argv.slice(1);
const h=(req,res)=>{console.log(JSON.stringify({host:req.headers.host,path:req.url,authorization:req.headers.authorization??null}));
 if(req.url==='/slow'){res.writeHead(200);const t=setInterval(()=>res.write('x'.repeat(100)+'\\n'),100);res.on('close',()=>clearInterval(t));return;}
 res.end('ok '+req.url+'\\n');};
let n=0;const up=()=>{if(++n===2)console.log('ready')};
http.createServer(h).listen(80,ip,up);https.createServer({key:fs.readFileSync(key),cert:fs.readFileSync(cert)},h).listen(443,ip,up);`;

interface TestServer {
  lines: string[];
  stop(): Promise<void>;
}

async function startServer(ns: string, ip: string, key: string, cert: string): Promise<TestServer> {
  const child: ChildProcess = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", SERVER, ip, key, cert], { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const lines: string[] = [];
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += String(d)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`test server not ready: ${stderr}`)), 15_000);
    child.stdout?.on("data", (d: Buffer) => {
      for (const l of String(d).split("\n").filter((x) => x !== "")) {
        if (l === "ready") {
          clearTimeout(timer);
          resolve();
        } else lines.push(l);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`test server exited ${code}: ${stderr}`));
    });
  }).catch(async (err: unknown) => {
    child.kill("SIGKILL");
    await exited;
    throw err;
  });
  return {
    lines,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** A test CA and a leaf for `names`, made with openssl(1) in `dir`. */
async function makeCerts(dir: string, names: string[]): Promise<{ caPem: string; key: string; cert: string }> {
  const f = (n: string): string => path.join(dir, n);
  await run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2", "-subj", "/CN=egressnet test CA"]);
  await run("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("leaf.key"), "-out", f("leaf.csr"), "-subj", `/CN=${names[0] ?? "x"}`]);
  await fs.writeFile(f("ext.cnf"), `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}\n`);
  await run("openssl", ["x509", "-req", "-in", f("leaf.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("leaf.pem"), "-days", "2", "-extfile", f("ext.cnf")]);
  return { caPem: await fs.readFile(f("ca.pem"), "utf8"), key: f("leaf.key"), cert: f("leaf.pem") };
}

describe("egress proxy mode with real runc VMs (privileged)", function () {
  this.timeout(300_000);
  const hosts: TestHost[] = [];
  const servers: TestServer[] = [];
  let d: TestDaemon | undefined;
  /** A second tenant in `paddock.proxy.mode: audit`. */
  let audit: TestDaemon | undefined;
  let allowed: TestHost;
  let denied: TestHost;
  let allowedSrv: TestServer;
  let deniedSrv: TestServer;
  let dir: string;
  let caPem: string;

  /** Run `script` with sh in VM `h` (buffered exec): exit code and output. */
  async function sh(h: string, script: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
    return shOn(d as TestDaemon, h, script, ...args);
  }

  async function shOn(on: TestDaemon, h: string, script: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
    const q = new URLSearchParams({ cmd: "/bin/sh", buffered: "true", uid: "0" });
    for (const a of ["-c", script, "sh", ...args]) q.append("args", a);
    const r = await on.post(`/vm/${h}/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    const j = r.json as { stdout?: string; stderr?: string; exit_code?: number };
    return { code: j.exit_code ?? -1, out: j.stdout ?? "", err: j.stderr ?? "" };
  }

  async function api(method: "post" | "del", p: string, body?: unknown): Promise<void> {
    const r = method === "post" ? await (d as TestDaemon).post(p, body) : await (d as TestDaemon).del(p);
    expect(r.status, `${method} ${p}: ${r.text}`).to.be.oneOf([200, 201, 204]);
  }

  before(async function () {
    skipUnlessRoot(this);
    dir = await tempDir();
    const certs = await makeCerts(dir, [API, TLS, DENIED]);
    caPem = certs.caPem;
    allowed = await makeTestHost();
    hosts.push(allowed);
    denied = await makeTestHost();
    hosts.push(denied);
    allowedSrv = await startServer(allowed.ns, allowed.ip, certs.key, certs.cert);
    servers.push(allowedSrv);
    deniedSrv = await startServer(denied.ns, denied.ip, certs.key, certs.cert);
    servers.push(deniedSrv);
    const vm = { count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M" };
    d = await TestDaemon.create({
      hostGroups: [
        { name: "px", ...vm, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` }, egress_proxy: { client: "build-1" } },
        { name: "pb", ...vm, network: { mode: "bridge", gateway: `${ip4(randomBlock("vm22") + 1)}/24` }, egress_proxy: { client: "build-1" } },
        { name: "open", ...vm, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } },
      ],
      paddock: { proxy: { hosts: { [API]: allowed.ip, [TLS]: allowed.ip, [DENIED]: denied.ip } } },
    });
    audit = await TestDaemon.create({
      hostGroups: [{ name: "pa", ...vm, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` }, egress_proxy: { client: "audit-1" } }],
      paddock: { proxy: { mode: "audit", hosts: { [DENIED]: denied.ip } } },
    });
    // Generous: the host may be loaded by other runs.
    await Promise.all([d.start(180_000), audit.start(180_000)]);
    expect((await audit.post("/proxy/v1/clients", { name: "audit-1" })).status).to.equal(201);
    const auditVm = audit.post("/hostgroup/pa/nodes?wait=agent&timeout=120s", {});
    await api("post", "/proxy/v1/clients", { name: "build-1" });
    await api("post", "/proxy/v1/secrets", { name: "api-token", host: API, value: SECRET });
    await api("post", "/proxy/v1/allows", { client: "build-1", host: API, secret: "api-token", ports: [80] });
    await api("post", "/proxy/v1/allows", { client: "build-1", host: TLS, ports: [443], passthrough: true });
    const created = await Promise.all(["px", "pb", "open"].map((g) => (d as TestDaemon).post(`/hostgroup/${g}/nodes?wait=agent&timeout=120s`, {})));
    for (const r of [...created, await auditVm]) expect(r.status, r.text).to.equal(201);
    // The test host's CA, for the HTTPS passthrough (the proxy never sees inside that tunnel).
    for (const h of ["px-1", "pb-1"]) expect((await sh(h, 'printf %s "$1" > /tmp/test-ca.pem', caPem)).code).to.equal(0);
  });

  after(async function () {
    for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
    if (d !== undefined) await d.destroy();
    if (audit !== undefined) await audit.destroy();
    for (const h of hosts.splice(0)) await h.remove().catch(() => undefined);
    if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true });
    for (const t of [d, audit]) {
      if (t === undefined) continue;
      expect(await leftovers(t.tenantId), "network leftovers").to.deep.equal({ links: [], netns: [], table: false });
      const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${t.tenantId}-`));
      expect(left, "runc containers left").to.deep.equal([]);
      expect(await mountsUnder(t.dir), "mounts left").to.deep.equal([]);
    }
  });

  it("HTTP through the environment's proxy reaches an allowed host, which sees the injected secret; isolated and bridge alike", async () => {
    for (const h of ["px-1", "pb-1"]) {
      const before = allowedSrv.lines.length;
      const r = await sh(h, `curl -sS -i --max-time 20 http://${API}/hello`);
      expect(r.code, r.err).to.equal(0);
      expect(r.out).to.include("ok /hello");
      const seen = allowedSrv.lines.slice(before).map((l) => JSON.parse(l) as { path: string; authorization: string | null });
      expect(seen.map((s) => [s.path, s.authorization])).to.deep.equal([["/hello", `Bearer ${SECRET}`]]);
      // The proxy's answer (headers included) never carries the secret.
      expect(r.out).to.not.include(SECRET);
    }
  });

  it("HTTPS passthrough to an allowed host: the test host's own certificate reaches the VM untouched", async () => {
    const r = await sh("px-1", `curl -sS --max-time 20 --cacert /tmp/test-ca.pem https://${TLS}/tls`);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.include("ok /tls");
  });

  it("a host without an allow rule is refused by the proxy and never contacted", async () => {
    const before = deniedSrv.lines.length;
    const r = await sh("px-1", `curl -sS -o /dev/null -w '%{http_code}' --max-time 20 http://${DENIED}/x; echo; curl -sS --max-time 20 --cacert /tmp/test-ca.pem https://${DENIED}/y`);
    expect(r.out.trim().split("\n")[0]).to.equal("403");
    expect(r.code).to.not.equal(0);
    expect(deniedSrv.lines.slice(before)).to.deep.equal([]);
  });

  it("connecting straight to the allowed host's IP fails from proxy-mode VMs; a non-proxy VM of the same tenant reaches it (positive control)", async () => {
    // Three probes at once per VM: the allowed host's IP, the host's own address on that link,
    // the proxy address on another port. `code=000` is curl's "no answer".
    const probes = `for u in http://${allowed.ip}/direct http://${allowed.hostSideIp}:80/ http://169.254.169.250:80/; do ` +
      `(echo "$u code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 3 "$u")") & done; wait`;
    const [open, ...proxied] = await Promise.all(["open-1", "px-1", "pb-1"].map((h) => sh(h, probes)));
    expect(open?.out).to.include(`http://${allowed.ip}/direct code=200`);
    for (const r of proxied) {
      expect(r.out.trim().split("\n").sort()).to.deep.equal([
        `http://${allowed.ip}/direct code=000`, `http://${allowed.hostSideIp}:80/ code=000`, "http://169.254.169.250:80/ code=000",
      ].sort());
    }
    expect(allowedSrv.lines.filter((l) => l.includes("/direct"))).to.have.length(1);
  });

  it("describe names the proxy client of a proxy-mode VM, and of no other", async () => {
    const px = (await (d as TestDaemon).get("/vm/px-1")).json as { network?: { egress_proxy?: unknown } };
    expect(px.network?.egress_proxy).to.deep.equal({ client: "build-1" });
    const open = (await (d as TestDaemon).get("/vm/open-1")).json as { network?: { egress_proxy?: unknown } };
    expect(open.network).to.not.have.property("egress_proxy");
  });

  it("DNS: the VM's resolver answers names its client may reach with the proxy address, and nothing else", async () => {
    const r = await sh("px-1", `cat /etc/resolv.conf; getent ahostsv4 ${API} | head -n1; getent ahostsv4 ${DENIED}; echo denied=$?; getent ahostsv4 example.com; echo other=$?`);
    expect(r.out).to.include("nameserver 169.254.169.250");
    expect(r.out).to.match(/^169\.254\.169\.250\s/m);
    expect(r.out).to.include("denied=2");
    expect(r.out).to.include("other=2");
  });

  it("the secret is nowhere in the VM: not in env, /proc/*/environ or files; the proxy CA is in the trust store", async () => {
    const r = await sh("px-1", `env; echo; echo "matches:$(grep -l -s -r -F "$1" /etc /root /home /tmp /run /var /usr/local /proc/[0-9]*/environ | tr '\\n' ' ')"; printf %s "$1" > /run/ctl.txt; echo "control:$(grep -l -s -r -F "$1" /run | tr '\\n' ' ')"; rm -f /run/ctl.txt; grep -c -F "$(sed -n 2p /usr/local/share/ca-certificates/paddock-egress-proxy.crt)" /etc/ssl/certs/ca-certificates.crt`, SECRET);
    expect(r.out).to.include("HTTPS_PROXY=http://169.254.169.250:3128");
    expect(r.out, r.out).to.match(/^matches:$/m);
    // Positive control: the same grep finds the value once it is in a file.
    expect(r.out).to.include("control:/run/ctl.txt");
    expect(r.out.trim().split("\n").at(-1)).to.equal("1");
    expect((d as TestDaemon).stderr).to.not.include(SECRET);
  });

  it("revoking the rule cuts a tunnel that is open", async () => {
    const before = allowedSrv.lines.length;
    const dl = sh("px-1", `curl -sS -o /dev/null --max-time 60 --cacert /tmp/test-ca.pem https://${TLS}/slow; echo curl=$?`);
    for (let i = 0; i < 200 && !allowedSrv.lines.slice(before).some((l) => l.includes("/slow")); i++) await new Promise((r) => setTimeout(r, 100));
    expect(allowedSrv.lines.slice(before).some((l) => l.includes("/slow")), "the slow download started").to.equal(true);
    await api("post", "/proxy/v1/allows/revoke", { client: "build-1", host: TLS, ports: [443], passthrough: true });
    const r = await dl;
    // 28 would be curl's own --max-time: the tunnel must end before it.
    expect(r.out).to.match(/curl=(18|35|52|56)\b/);
    await api("post", "/proxy/v1/allows", { client: "build-1", host: TLS, ports: [443], passthrough: true });
  });

  it("audit mode (another tenant): a host without a rule is reached and the proxy logs it as audit", async () => {
    const t = audit as TestDaemon;
    const before = deniedSrv.lines.length;
    const r = await shOn(t, "pa-1", `curl -sS --max-time 20 http://${DENIED}/audited`);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.include("ok /audited");
    expect(deniedSrv.lines.slice(before).some((l) => l.includes("/audited"))).to.equal(true);
    // Info lines are written in batches (shared/logger.ts, at most LOG_BATCH_MS late) and the
    // proxy logs a request once its connection is done, which may be after curl has returned.
    await untilTrue("the proxy's audit line", () => /"decision":"audit"/.test(t.stderr), 10_000);
  });
});
